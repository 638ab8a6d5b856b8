package synth

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/guard"
)

// cohortFeaturesSQL is the cohort query of the logistic-regression example.
var cohortFeaturesSQL = filepath.Join("..", "..", "..", "..", "examples", "logreg", "cohort.sql")

// featureRow is one row of the cohort feature query.
type featureRow struct {
	id       int64
	f        Features
	outcome  bool
	complete bool // bmi and sbp present
}

// The example cohort query passes the SQL guard and, run as the reader on a
// synthetic population, gives one row per person whose features and outcome
// are the generator's; a logistic regression fitted to the rows finds
// Signal's coefficients.
func TestCohortFeatureQuery(t *testing.T) {
	text, err := os.ReadFile(cohortFeaturesSQL)
	if err != nil {
		t.Fatal(err)
	}
	checked, err := guard.Check(string(text))
	if err != nil {
		t.Fatalf("the guard refuses the cohort query: %v", err)
	}

	_, reader, res := population(t)
	conn := connect(t, reader)
	tx, err := conn.BeginTx(t.Context(), pgx.TxOptions{AccessMode: pgx.ReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = tx.Rollback(t.Context()) }()
	rows, err := tx.Query(t.Context(), checked)
	if err != nil {
		t.Fatalf("run the checked cohort query: %v", err)
	}
	var names []string
	for _, fd := range rows.FieldDescriptions() {
		names = append(names, fd.Name)
	}
	want := []string{"person_id", "age", "male", "t2d", "bmi", "sbp", "outcome"}
	if !slices.Equal(names, want) {
		t.Fatalf("columns %v, want %v", names, want)
	}
	var got []featureRow
	for rows.Next() {
		var r featureRow
		var age, male, t2d, outcome int32
		var bmi, sbp *float64
		if err := rows.Scan(&r.id, &age, &male, &t2d, &bmi, &sbp, &outcome); err != nil {
			t.Fatal(err)
		}
		r.f = Features{AgeYears: int(age), Male: male == 1, Type2Diabetes: t2d == 1}
		if bmi != nil && sbp != nil {
			r.f.BMI, r.f.SystolicBP, r.complete = *bmi, *sbp, true
		}
		r.outcome = outcome == 1
		got = append(got, r)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}

	// One row per person, with the generator's values.
	if int64(len(got)) != res.Persons {
		t.Fatalf("%d rows for %d persons", len(got), res.Persons)
	}
	var p person
	for i, r := range got {
		if r.id != int64(i+1) {
			t.Fatalf("row %d is person %d, want person %d (one row per person, in order)", i, r.id, i+1)
		}
		p.generate(1, r.id)
		if !r.complete || r.f != p.features() || r.outcome != p.hf {
			t.Fatalf("person %d: query gives %+v outcome %v, the generator %+v outcome %v", r.id, r.f, r.outcome, p.features(), p.hf)
		}
	}

	// The outcome rate agrees with Signal overall.
	var observed, expected, variance float64
	for _, r := range got {
		pr := Signal.Probability(r.f)
		expected += pr
		variance += pr * (1 - pr)
		if r.outcome {
			observed++
		}
	}
	if math.Abs(observed-expected) > 4*math.Sqrt(variance) {
		t.Errorf("%v persons have the outcome, Signal expects %.1f", observed, expected)
	}

	// A logistic regression fitted to the rows (by Newton's method, as in
	// the generator's own test) recovers each of Signal's coefficients
	// within four standard errors.
	x := make([][6]float64, len(got))
	y := make([]float64, len(got))
	for i, r := range got {
		x[i] = [6]float64{1, float64(r.f.AgeYears), b2f(r.f.Male), b2f(r.f.Type2Diabetes), r.f.BMI, r.f.SystolicBP}
		y[i] = b2f(r.outcome)
	}
	beta, se := fitLogistic(t, x, y)
	truth := [6]float64{Signal.Intercept, Signal.AgeYears, Signal.Male, Signal.Type2Diabetes, Signal.BMI, Signal.SystolicBP}
	for j, name := range []string{"intercept", "age", "male", "t2d", "bmi", "sbp"} {
		t.Logf("%s: fitted %.4f ± %.4f, Signal %.4f", name, beta[j], se[j], truth[j])
		if math.Abs(beta[j]-truth[j]) > 4*se[j] {
			t.Errorf("%s: fitted coefficient %.4f ± %.4f, Signal %.4f", name, beta[j], se[j], truth[j])
		}
	}
}
