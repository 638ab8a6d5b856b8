package synth

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// primaryKeys orders each table's rows for checksums.
var primaryKeys = map[string]string{
	"person": "person_id", "observation_period": "observation_period_id", "visit_occurrence": "visit_occurrence_id",
	"condition_occurrence": "condition_occurrence_id", "drug_exposure": "drug_exposure_id",
	"measurement": "measurement_id", "procedure_occurrence": "procedure_occurrence_id",
	"image_occurrence": "image_occurrence_id", "death": "person_id", "concept": "concept_id",
}

func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = conn.Close(context.Background()) })
	return conn
}

// clone returns the admin and reader DSNs of a fresh, empty OMOP database.
func clone(t *testing.T) (admin, reader string) {
	t.Helper()
	admin, reader, err := testDB.Clone(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return admin, reader
}

func load(t *testing.T, dsn string, opts Options) Result {
	t.Helper()
	res, err := Load(t.Context(), dsn, opts)
	if err != nil {
		t.Fatalf("Load(%+v): %v", opts, err)
	}
	return res
}

// checksums returns an md5 over every row of every generated table and of
// concept, in primary-key order.
func checksums(t *testing.T, dsn string) map[string]string {
	t.Helper()
	conn := connect(t, dsn)
	out := map[string]string{}
	for table, key := range primaryKeys {
		var sum string
		q := fmt.Sprintf("SELECT md5(coalesce(string_agg(t::text, '|' ORDER BY %s), '')) FROM omop.%s t", key, table)
		if err := conn.QueryRow(t.Context(), q).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		out[table] = sum
	}
	return out
}

func queryFloat(t *testing.T, conn *pgx.Conn, q string, args ...any) float64 {
	t.Helper()
	var v *float64
	if err := conn.QueryRow(t.Context(), q, args...).Scan(&v); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	if v == nil {
		t.Fatalf("%s: NULL", q)
	}
	return *v
}

const popPersons = 5000

var (
	popOnce  sync.Once
	popAdmin string
	popRead  string
	popRes   Result
	popErr   error
)

// population is a database holding the whole population of seed 1 with
// popPersons persons, shared by the read-only tests.
func population(t *testing.T) (admin, reader string, res Result) {
	t.Helper()
	popOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if popAdmin, popRead, popErr = testDB.Clone(ctx); popErr == nil {
			popRes, popErr = Load(ctx, popAdmin, Options{Persons: popPersons, Seed: 1})
		}
	})
	if popErr != nil {
		t.Fatal(popErr)
	}
	return popAdmin, popRead, popRes
}

func TestSameSeedAndSliceGiveIdenticalData(t *testing.T) {
	a, _ := clone(t)
	b, _ := clone(t)
	c, _ := clone(t)
	opts := Options{Persons: 3000, Seed: 42, TrustIndex: 1, TrustCount: 2}
	var mu sync.Mutex
	last := map[string]int64{}
	opts.Progress = func(table string, rows int64) {
		mu.Lock()
		last[table] = rows
		mu.Unlock()
	}
	resA := load(t, a, opts)
	opts.Progress = nil
	load(t, b, opts)
	opts.Seed = 43
	load(t, c, opts)

	sumA, sumB, sumC := checksums(t, a), checksums(t, b), checksums(t, c)
	for table := range primaryKeys {
		if sumA[table] != sumB[table] {
			t.Errorf("%s: two loads of seed 42 differ", table)
		}
		if table != "concept" && sumA[table] == sumC[table] {
			t.Errorf("%s: seeds 42 and 43 give identical rows", table)
		}
	}
	if resA.Persons != 1500 {
		t.Errorf("slice 1 of 2 of 3000 persons loaded %d persons, want 1500", resA.Persons)
	}
	for _, table := range TableNames() {
		if resA.Rows[table] <= 0 || last[table] != resA.Rows[table] {
			t.Errorf("%s: result %d rows, last progress %d", table, resA.Rows[table], last[table])
		}
	}
}

func TestSlicesPartitionThePopulation(t *testing.T) {
	whole, _ := clone(t)
	union, _ := clone(t)
	load(t, whole, Options{Persons: 2000, Seed: 5})
	var persons int64
	for i := range 3 {
		// Loading the slices into one database fails on a primary key if
		// two slices share a row.
		res := load(t, union, Options{Persons: 2000, Seed: 5, TrustIndex: i, TrustCount: 3})
		persons += res.Persons
	}
	if persons != 2000 {
		t.Errorf("slices hold %d persons together, want 2000", persons)
	}
	sumWhole, sumUnion := checksums(t, whole), checksums(t, union)
	for table := range primaryKeys {
		if sumWhole[table] != sumUnion[table] {
			t.Errorf("%s: the union of the slices differs from the whole population", table)
		}
	}

	one, _ := clone(t)
	load(t, one, Options{Persons: 2000, Seed: 5, TrustIndex: 2, TrustCount: 3})
	conn := connect(t, one)
	for _, table := range TableNames() {
		var outside int
		q := fmt.Sprintf("SELECT count(*) FROM omop.%s WHERE person_id %% 3 <> 2", table)
		if err := conn.QueryRow(t.Context(), q).Scan(&outside); err != nil {
			t.Fatal(err)
		}
		if outside != 0 {
			t.Errorf("%s: slice 2 of 3 holds %d rows of other slices", table, outside)
		}
	}
}

func TestDistributions(t *testing.T) {
	admin, _, res := population(t)
	conn := connect(t, admin)
	const age = "DATE_PART('year', AGE(DATE '2025-01-01', birth_datetime))"
	cases := []struct {
		name   string
		query  string
		lo, hi float64
	}{
		{"male share", "SELECT avg((gender_concept_id = 8507 AND gender_source_value = 'M')::int) FROM omop.person", 0.46, 0.52},
		{"female share", "SELECT avg((gender_concept_id = 8532 AND gender_source_value = 'F')::int) FROM omop.person", 0.475, 0.535},
		{"unknown sex share", "SELECT avg((gender_concept_id = 0 AND gender_source_value = 'U')::int) FROM omop.person", 0.001, 0.012},
		{"birth_datetime missing", "SELECT count(*) FILTER (WHERE birth_datetime IS NULL OR make_date(year_of_birth, month_of_birth, day_of_birth) <> birth_datetime::date) FROM omop.person", 0, 0},
		{"youngest age", "SELECT min(" + age + ") FROM omop.person", 0, 1},
		{"oldest age", "SELECT max(" + age + ") FROM omop.person", 92, 95},
		{"aged 50 to 79", "SELECT avg((" + age + " BETWEEN 50 AND 79)::int) FROM omop.person", 0.42, 0.54},
		{"children", "SELECT avg((" + age + " < 18)::int) FROM omop.person", 0.08, 0.16},
		{"persons with imaging", "SELECT count(DISTINCT person_id)::float / (SELECT count(*) FROM omop.person) FROM omop.image_occurrence", 0.30, 0.40},
		{"CT share", "SELECT avg((modality_concept_id = 2000000101)::int) FROM omop.image_occurrence", 0.36, 0.44},
		{"MR share", "SELECT avg((modality_concept_id = 2000000102)::int) FROM omop.image_occurrence", 0.21, 0.29},
		{"XR share", "SELECT avg((modality_concept_id = 2000000103)::int) FROM omop.image_occurrence", 0.21, 0.29},
		{"US share", "SELECT avg((modality_concept_id = 2000000104)::int) FROM omop.image_occurrence", 0.07, 0.13},
		{"deaths", "SELECT count(*)::float / (SELECT count(*) FROM omop.person) FROM omop.death", 0.015, 0.05},
		{"visits per person", "SELECT avg(n) FROM (SELECT count(*) n FROM omop.visit_occurrence GROUP BY person_id) v", 2.4, 3.4},
		{"persons without 1-6 visits", "SELECT count(*) FROM omop.person p WHERE (SELECT count(*) FROM omop.visit_occurrence v WHERE v.person_id = p.person_id) NOT BETWEEN 1 AND 6", 0, 0},
		{"inpatient share", "SELECT avg((visit_concept_id = 9201)::int) FROM omop.visit_occurrence", 0.08, 0.2},
		{"emergency share", "SELECT avg((visit_concept_id = 9203)::int) FROM omop.visit_occurrence", 0.08, 0.16},
		{"hypertension, 65 and over", "SELECT avg((EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = p.person_id AND c.condition_concept_id = 320128))::int) FROM omop.person p WHERE " + age + " >= 65", 0.35, 0.6},
		{"hypertension, 18 to 40", "SELECT avg((EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = p.person_id AND c.condition_concept_id = 320128))::int) FROM omop.person p WHERE " + age + " BETWEEN 18 AND 40", 0.01, 0.08},
		{"type 2 diabetes, adults", "SELECT avg((EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = p.person_id AND c.condition_concept_id = 201826))::int) FROM omop.person p WHERE " + age + " >= 18", 0.05, 0.14},
		{"diabetics on metformin", "SELECT avg((EXISTS (SELECT 1 FROM omop.drug_exposure d WHERE d.person_id = c.person_id AND d.drug_concept_id = 1503297))::int) FROM omop.condition_occurrence c WHERE c.condition_concept_id = 201826", 0.78, 0.92},
		{"metformin without diabetes", "SELECT count(*) FROM omop.drug_exposure d WHERE d.drug_concept_id = 1503297 AND NOT EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = d.person_id AND c.condition_concept_id = 201826)", 0, 0},
		{"mean adult BMI", "SELECT avg(value_as_number) FROM omop.measurement m JOIN omop.person p USING (person_id) WHERE measurement_concept_id = 3038553 AND " + age + " >= 18", 26.5, 28.5},
		{"persons without exactly one BMI and systolic BP", "SELECT count(*) FROM omop.person p WHERE (SELECT count(*) FROM omop.measurement m WHERE m.person_id = p.person_id AND m.measurement_concept_id = 3038553) <> 1 OR (SELECT count(*) FROM omop.measurement m WHERE m.person_id = p.person_id AND m.measurement_concept_id = 3004249) <> 1", 0, 0},
		{"mean HbA1c of diabetics", "SELECT avg(value_as_number) FROM omop.measurement m WHERE measurement_concept_id = 3004410 AND EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = m.person_id AND c.condition_concept_id = 201826)", 7.2, 8.0},
		{"events outside the observation period", `SELECT count(*) FROM (
			SELECT person_id, visit_start_date d FROM omop.visit_occurrence UNION ALL SELECT person_id, visit_end_date FROM omop.visit_occurrence
			UNION ALL SELECT person_id, condition_start_date FROM omop.condition_occurrence UNION ALL SELECT person_id, drug_exposure_start_date FROM omop.drug_exposure
			UNION ALL SELECT person_id, drug_exposure_end_date FROM omop.drug_exposure
			UNION ALL SELECT person_id, measurement_date FROM omop.measurement UNION ALL SELECT person_id, procedure_date FROM omop.procedure_occurrence
			UNION ALL SELECT person_id, image_occurrence_date FROM omop.image_occurrence UNION ALL SELECT person_id, death_date FROM omop.death) e
			JOIN omop.observation_period o USING (person_id)
			WHERE e.d NOT BETWEEN o.observation_period_start_date AND o.observation_period_end_date`, 0, 0},
		{"observation periods starting before birth", "SELECT count(*) FROM omop.observation_period o JOIN omop.person p USING (person_id) WHERE o.observation_period_start_date < p.birth_datetime::date OR o.observation_period_end_date > DATE '2025-01-01'", 0, 0},
		{"deaths not ending the observation period", "SELECT count(*) FROM omop.death d JOIN omop.observation_period o USING (person_id) WHERE o.observation_period_end_date <> d.death_date", 0, 0},
		{"events linked to another person's visit", `SELECT count(*) FROM (
			SELECT person_id, visit_occurrence_id FROM omop.condition_occurrence UNION ALL SELECT person_id, visit_occurrence_id FROM omop.drug_exposure
			UNION ALL SELECT person_id, visit_occurrence_id FROM omop.measurement UNION ALL SELECT person_id, visit_occurrence_id FROM omop.procedure_occurrence
			UNION ALL SELECT person_id, visit_occurrence_id FROM omop.image_occurrence) e
			LEFT JOIN omop.visit_occurrence v USING (person_id, visit_occurrence_id) WHERE v.visit_occurrence_id IS NULL`, 0, 0},
	}
	for _, c := range cases {
		if got := queryFloat(t, conn, c.query); got < c.lo || got > c.hi {
			t.Errorf("%s = %.4f, want between %g and %g", c.name, got, c.lo, c.hi)
		}
	}
	if res.Persons != popPersons {
		t.Errorf("loaded %d persons, want %d", res.Persons, popPersons)
	}
}

func TestImagingStudies(t *testing.T) {
	admin, _, res := population(t)
	conn := connect(t, admin)
	if res.Rows["image_occurrence"] < 1000 {
		t.Fatalf("only %d imaging studies", res.Rows["image_occurrence"])
	}
	var n, accessions, studies, series int64
	if err := conn.QueryRow(t.Context(), `SELECT count(*), count(DISTINCT accession_id), count(DISTINCT image_study_uid),
		count(DISTINCT image_series_uid) FROM omop.image_occurrence`).Scan(&n, &accessions, &studies, &series); err != nil {
		t.Fatal(err)
	}
	if accessions != n || studies != n || series != n {
		t.Errorf("%d studies have %d accession numbers, %d study UIDs, %d series UIDs; want all distinct", n, accessions, studies, series)
	}
	rows, err := conn.Query(t.Context(), "SELECT accession_id, image_study_uid, image_series_uid FROM omop.image_occurrence")
	if err != nil {
		t.Fatal(err)
	}
	accRE := regexp.MustCompile(`^ACC[0-9]{10}$`)
	uidRE := regexp.MustCompile(`^1\.2\.826\.0\.1\.3680043\.8\.498\.[1-9][0-9]*$`)
	for rows.Next() {
		var acc, study, ser string
		if err := rows.Scan(&acc, &study, &ser); err != nil {
			t.Fatal(err)
		}
		if !accRE.MatchString(acc) || !uidRE.MatchString(study) || ser != study+".1" || len(ser) > 64 {
			t.Fatalf("study %q %q %q is malformed", acc, study, ser)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	// Every study has its procedure: same person and date, an imaging
	// procedure concept.
	bad := queryFloat(t, conn, `SELECT count(*) FROM omop.image_occurrence i
		LEFT JOIN omop.procedure_occurrence p ON p.procedure_occurrence_id = i.procedure_occurrence_id
			AND p.person_id = i.person_id AND p.procedure_date = i.image_occurrence_date
		LEFT JOIN omop.concept c ON c.concept_id = p.procedure_concept_id AND c.domain_id = 'Procedure'
		WHERE c.concept_id IS NULL`)
	if bad != 0 {
		t.Errorf("%v studies lack a linked imaging procedure", bad)
	}
	// Modality labels read as modalities in the statistics chart.
	chart, err := conn.Query(t.Context(), `SELECT COALESCE(c.concept_name, CAST(io.modality_concept_id AS VARCHAR)),
		c.concept_code, c.concept_class_id, c.vocabulary_id, COUNT(DISTINCT io.image_occurrence_id)
		FROM omop.image_occurrence io LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id
		GROUP BY 1, 2, 3, 4 ORDER BY 5 DESC`)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for chart.Next() {
		var name, code, class, vocab string
		var count int
		if err := chart.Scan(&name, &code, &class, &vocab, &count); err != nil {
			t.Fatal(err)
		}
		if name != code || class != "Modality" || vocab != "DICOM" {
			t.Errorf("modality concept %q: code %q, class %q, vocabulary %q", name, code, class, vocab)
		}
		got = append(got, name)
	}
	if err := chart.Err(); err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != "CT,MR,XR,US" && strings.Join(got, ",") != "CT,XR,MR,US" {
		t.Errorf("modality chart order %v, want CT first, then MR and XR, then US", got)
	}
}

func TestEveryConceptIDExists(t *testing.T) {
	admin, _, _ := population(t)
	conn := connect(t, admin)
	rows, err := conn.Query(t.Context(), `SELECT table_name, column_name FROM information_schema.columns
		WHERE table_schema = 'omop' AND column_name LIKE '%concept_id' AND table_name NOT IN ('concept', 'concept_ancestor')`)
	if err != nil {
		t.Fatal(err)
	}
	var parts []string
	for rows.Next() {
		var table, column string
		if err := rows.Scan(&table, &column); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, fmt.Sprintf("SELECT '%s.%s' AS col, %s AS id FROM omop.%s WHERE %s IS NOT NULL", table, column, column, table, column))
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if len(parts) < 20 {
		t.Fatalf("found only %d concept columns", len(parts))
	}
	q := "SELECT u.col, u.id, count(*) FROM (" + strings.Join(parts, " UNION ALL ") +
		") u LEFT JOIN omop.concept c ON c.concept_id = u.id WHERE c.concept_id IS NULL GROUP BY 1, 2"
	missing, err := conn.Query(t.Context(), q)
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close()
	for missing.Next() {
		var col string
		var id, n int64
		if err := missing.Scan(&col, &id, &n); err != nil {
			t.Fatal(err)
		}
		t.Errorf("%s uses concept %d (%d rows), which is not in omop.concept", col, id, n)
	}
	if err := missing.Err(); err != nil {
		t.Fatal(err)
	}
	var concepts, ancestors int
	if err := conn.QueryRow(t.Context(), "SELECT (SELECT count(*) FROM omop.concept), (SELECT count(*) FROM omop.concept_ancestor)").Scan(&concepts, &ancestors); err != nil {
		t.Fatal(err)
	}
	if concepts != len(Concepts) || ancestors != len(Concepts) {
		t.Errorf("%d concept and %d concept_ancestor rows, want %d each", concepts, ancestors, len(Concepts))
	}
}

// The outcome rates in the database match Signal's prediction from the
// features read back from the tables.
func TestPlantedSignalInDatabase(t *testing.T) {
	admin, _, _ := population(t)
	conn := connect(t, admin)
	rows, err := conn.Query(t.Context(), `SELECT DATE_PART('year', AGE(DATE '2025-01-01', p.birth_datetime))::int,
		p.gender_concept_id = 8507,
		EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = p.person_id AND c.condition_concept_id = 201826),
		(SELECT value_as_number::float8 FROM omop.measurement m WHERE m.person_id = p.person_id AND m.measurement_concept_id = 3038553),
		(SELECT value_as_number::float8 FROM omop.measurement m WHERE m.person_id = p.person_id AND m.measurement_concept_id = 3004249),
		EXISTS (SELECT 1 FROM omop.condition_occurrence c WHERE c.person_id = p.person_id AND c.condition_concept_id = $1)
		FROM omop.person p`, Signal.OutcomeConceptID)
	if err != nil {
		t.Fatal(err)
	}
	type group struct{ n, observed, expected, variance float64 }
	var old, young, all group
	for rows.Next() {
		var f Features
		var outcome bool
		if err := rows.Scan(&f.AgeYears, &f.Male, &f.Type2Diabetes, &f.BMI, &f.SystolicBP, &outcome); err != nil {
			t.Fatal(err)
		}
		p := Signal.Probability(f)
		add := func(g *group) {
			g.n++
			g.expected += p
			g.variance += p * (1 - p)
			if outcome {
				g.observed++
			}
		}
		add(&all)
		switch {
		case f.Type2Diabetes && f.AgeYears > 65:
			add(&old)
		case !f.Type2Diabetes && f.AgeYears < 50:
			add(&young)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, g := range []struct {
		name string
		g    group
	}{{"diabetics over 65", old}, {"non-diabetics under 50", young}, {"everyone", all}} {
		if g.g.n < 100 {
			t.Fatalf("%s: only %v persons", g.name, g.g.n)
		}
		if math.Abs(g.g.observed-g.g.expected) > 4*math.Sqrt(g.g.variance)+1 {
			t.Errorf("%s: %v of %v have the outcome, the model expects %.1f", g.name, g.g.observed, g.g.n, g.g.expected)
		}
	}
	oldRate, youngRate := old.observed/old.n, young.observed/young.n
	if oldRate < 0.15 || youngRate > 0.02 || oldRate < 10*youngRate {
		t.Errorf("outcome rate %.3f among diabetics over 65 and %.3f among non-diabetics under 50; want ≥ 0.15, ≤ 0.02 and a ratio ≥ 10", oldRate, youngRate)
	}
	if rate := all.observed / all.n; rate < 0.03 || rate > 0.07 {
		t.Errorf("overall outcome rate %.3f, want about 0.05", rate)
	}
}

// The rows in the database are the generator's rows, value for value.
func TestRowsMatchTheGenerator(t *testing.T) {
	admin, _, _ := population(t)
	conn := connect(t, admin)
	var p person
	for id := int64(1); id <= 40; id++ {
		p.generate(1, id)
		var want []string
		for _, m := range p.measures {
			k := measureKinds[m.concept]
			v := fmt.Sprintf("%d", m.value)
			if k.scale > 0 {
				s := fmt.Sprintf("%0*d", k.scale+1, m.value)
				v = s[:len(s)-k.scale] + "." + s[len(s)-k.scale:]
			}
			want = append(want, fmt.Sprintf("%d %d %s %s %d", m.id, m.concept, m.start.Time().Format(time.DateOnly), v, m.visit))
		}
		for _, v := range p.visits {
			want = append(want, fmt.Sprintf("visit %d %d %s %s", v.id, v.concept, v.start.Time().Format(time.DateOnly), v.end.Time().Format(time.DateOnly)))
		}
		rows, err := conn.Query(t.Context(), `SELECT measurement_id || ' ' || measurement_concept_id || ' ' || measurement_date || ' ' || value_as_number || ' ' || visit_occurrence_id
			FROM omop.measurement WHERE person_id = $1
			UNION ALL SELECT 'visit ' || visit_occurrence_id || ' ' || visit_concept_id || ' ' || visit_start_date || ' ' || visit_end_date
			FROM omop.visit_occurrence WHERE person_id = $1`, id)
		if err != nil {
			t.Fatal(err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		if strings.Join(got, "\n") != strings.Join(want, "\n") {
			t.Fatalf("person %d in the database:\n%s\ngenerated:\n%s", id, strings.Join(got, "\n"), strings.Join(want, "\n"))
		}
	}
}

func TestReaderCanReadTheLoadedData(t *testing.T) {
	_, reader, _ := population(t)
	conn := connect(t, reader)
	var persons, ct int64
	if err := conn.QueryRow(t.Context(), "SELECT count(*) FROM omop.person").Scan(&persons); err != nil {
		t.Fatalf("the reader cannot read omop.person: %v", err)
	}
	if err := conn.QueryRow(t.Context(), `SELECT COUNT(DISTINCT io.image_occurrence_id) FROM omop.image_occurrence io
		LEFT JOIN omop.concept c ON c.concept_id = io.modality_concept_id WHERE c.concept_name = 'CT'`).Scan(&ct); err != nil {
		t.Fatalf("the reader cannot read the modality chart: %v", err)
	}
	if persons != popPersons || ct == 0 {
		t.Errorf("the reader sees %d persons and %d CT studies", persons, ct)
	}
}

// Truncate reloads cleanly; loading rows that are already there fails,
// leaves every table as it was, and leaves the indexes in place.
func TestTruncateReloadsAndAFailedLoadChangesNothing(t *testing.T) {
	admin, _ := clone(t)
	opts := Options{Persons: 600, Seed: 9}
	load(t, admin, opts)
	before := checksums(t, admin)

	opts.Truncate = true
	res := load(t, admin, opts)
	if res.Persons != 600 {
		t.Errorf("reload with truncate loaded %d persons", res.Persons)
	}
	if after := checksums(t, admin); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a truncating reload changed the data")
	}

	// Persons 1..600 are there already: the load fails on their primary
	// keys, and the new persons 601..800 are not kept either.
	_, err := Load(t.Context(), admin, Options{Persons: 800, Seed: 9})
	if err == nil || !strings.Contains(err.Error(), "duplicate key") {
		t.Fatalf("loading existing rows: error %v, want a duplicate key", err)
	}
	if after := checksums(t, admin); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a failed load changed the data")
	}
	conn := connect(t, admin)
	for _, ix := range secondaryIndexes() {
		var ok bool
		if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", ix.schema+"."+ix.name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("index %s is missing after a failed load", ix.name)
		}
	}
	if len(secondaryIndexes()) < 5 {
		t.Errorf("parsed only %d indexes from sql/20_indexes.sql", len(secondaryIndexes()))
	}
}

func TestLoadNeedsTheSchema(t *testing.T) {
	conn := connect(t, testDB.Cluster.SuperuserDSN("postgres"))
	if _, err := conn.Exec(t.Context(), "CREATE DATABASE synth_empty"); err != nil {
		t.Fatal(err)
	}
	_, err := Load(t.Context(), testDB.Cluster.SuperuserDSN("synth_empty"), Options{Persons: 10})
	if err == nil || !strings.Contains(err.Error(), "provision the OMOP schema") {
		t.Fatalf("Load into an empty database: %v", err)
	}
}

// TestMillionPersons measures the full-size load; it runs only with
// SYNTH_BIG=1.
func TestMillionPersons(t *testing.T) {
	if testing.Short() || !bigEnabled() {
		t.Skip("set SYNTH_BIG=1 to load 1,000,000 persons")
	}
	admin, _ := clone(t)
	res := load(t, admin, Options{Persons: 1_000_000, Seed: 1, Truncate: true})
	t.Logf("%d persons in %s (copy %s, indexes %s, analyze %s); rows %v", res.Persons, res.Elapsed, res.Copy, res.Index, res.Analyze, res.Rows)
	if res.Elapsed > 3*time.Minute {
		t.Errorf("1,000,000 persons took %s, want under 3 minutes", res.Elapsed)
	}
}

// A load cancelled midway rolls back every table and restores the indexes.
func TestCancelledLoadRollsBack(t *testing.T) {
	admin, _ := clone(t)
	load(t, admin, Options{Persons: 300, Seed: 2})
	before := checksums(t, admin)
	ctx, cancel := context.WithCancel(t.Context())
	// 400,000 persons take several seconds; the load is well under way when
	// the context ends.
	timer := time.AfterFunc(300*time.Millisecond, cancel)
	defer timer.Stop()
	_, err := Load(ctx, admin, Options{Persons: 400_000, Seed: 2, Truncate: true})
	cancel()
	if err == nil {
		t.Fatal("a cancelled load succeeded")
	}
	if after := checksums(t, admin); fmt.Sprint(after) != fmt.Sprint(before) {
		t.Errorf("a cancelled load changed the data")
	}
	conn := connect(t, admin)
	for _, ix := range secondaryIndexes() {
		var ok bool
		if err := conn.QueryRow(t.Context(), "SELECT to_regclass($1) IS NOT NULL", ix.schema+"."+ix.name).Scan(&ok); err != nil {
			t.Fatal(err)
		}
		if !ok {
			t.Errorf("index %s is missing after a cancelled load", ix.name)
		}
	}
}
