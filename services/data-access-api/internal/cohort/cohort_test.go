package cohort_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
	"github.com/flip-trust/node/shared/httpx"
)

var (
	engine   *cohort.Engine
	pgtestDB *pgtest.DB
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	db, err := pgtest.Start(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		os.Exit(1)
	}
	pgtestDB = db
	code := 1
	defer func() { db.Close(); cancel(); os.Exit(code) }()
	if err := pgtest.ExecFile(ctx, db.AdminDSN, "../../testdata/fixture.sql"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	engine, err = cohort.New(cohort.Options{DSN: db.ReaderDSN, MaxConns: 4, QueryTimeout: 10 * time.Second})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer engine.Close()
	code = m.Run()
}

func stats(t *testing.T, q string) (*cohort.Stats, cohort.Shape) {
	t.Helper()
	ctx := context.Background()
	st, shape, err := engine.Statistics(ctx, q, "test")
	if err != nil {
		t.Fatalf("statistics: %v", err)
	}
	if st == nil {
		t.Fatalf("%s: uncountable shape %+v", q, shape)
	}
	return st, shape
}

type R = cohort.Result

func chart(t *testing.T, charts []cohort.Chart, name string) []R {
	t.Helper()
	for _, c := range charts {
		if c.Name == name {
			return c.Results
		}
	}
	t.Fatalf("no %s chart in %+v", name, charts)
	return nil
}

// The imaging cohort of the fixture: 24 studies of 12 persons.
func TestStatisticsImagingCohort(t *testing.T) {
	st, _ := stats(t, `SELECT p.person_id, io.accession_id, io.modality_concept_id
FROM omop.person p JOIN omop.image_occurrence io ON io.person_id = p.person_id`)
	if st.Rows != 24 || st.Subjects != 12 {
		t.Fatalf("rows %d subjects %d, want 24 and 12", st.Rows, st.Subjects)
	}
	wantCounts := []R{{"person\nid", 24}, {"accession\nid", 24}, {"modality\nconcept\nid", 24}}
	if got := chart(t, st.Charts, cohort.ChartCounts); !reflect.DeepEqual(got, wantCounts) {
		t.Errorf("Counts %v, want %v", got, wantCounts)
	}
	if got := chart(t, st.Charts, cohort.ChartNulls); !reflect.DeepEqual(got, []R{{"person\nid", 0}, {"accession\nid", 0}, {"modality\nconcept\nid", 0}}) {
		t.Errorf("Nulls %v", got)
	}
	// Raw buckets, before disclosure control.
	if got := chart(t, st.Charts, cohort.ChartAge); !reflect.DeepEqual(got, []R{{"20-29", 3}, {"30-39", 3}, {"40-49", 3}, {"50-59", 3}}) {
		t.Errorf("Age %v", got)
	}
	if got := chart(t, st.Charts, cohort.ChartSex); !reflect.DeepEqual(got, []R{{"F", 6}, {"M", 6}}) {
		t.Errorf("Sex %v", got)
	}
	if got := chart(t, st.Charts, cohort.ChartModality); !reflect.DeepEqual(got, []R{{"CT", 12}, {"MR", 8}, {"XR", 4}}) {
		t.Errorf("Modality %v", got)
	}
	// At a floor of 5: every decade (3) is small, but together they make 12.
	d := st.Disclose(5)
	if got := chart(t, d, cohort.ChartAge); !reflect.DeepEqual(got, []R{{"Other", 12}}) {
		t.Errorf("disclosed Age %v, want Other 12", got)
	}
	// XR (4) is small and alone: dropped, never relabelled as Other.
	if got := chart(t, d, cohort.ChartModality); !reflect.DeepEqual(got, []R{{"CT", 12}, {"MR", 8}}) {
		t.Errorf("disclosed Modality %v", got)
	}
	if got := chart(t, d, cohort.ChartSex); !reflect.DeepEqual(got, []R{{"F", 6}, {"M", 6}}) {
		t.Errorf("disclosed Sex %v", got)
	}
}

func TestStatisticsPersonCohort(t *testing.T) {
	st, _ := stats(t, `SELECT person_id, gender_source_value, NULL::text AS note, person_id AS person_id FROM omop.person`)
	if st.Rows != 16 || st.Subjects != 16 {
		t.Fatalf("rows %d subjects %d", st.Rows, st.Subjects)
	}
	// The all-null column is dropped and the duplicated person_id counted once.
	if got := chart(t, st.Charts, cohort.ChartCounts); !reflect.DeepEqual(got, []R{{"person\nid", 16}, {"gender\nsource\nvalue", 16}}) {
		t.Errorf("Counts %v", got)
	}
	d := st.Disclose(4)
	if got := chart(t, d, cohort.ChartAge); !reflect.DeepEqual(got, []R{{"60-69", 4}, {"Other", 12}}) {
		t.Errorf("Age %v", got)
	}
	if got := chart(t, d, cohort.ChartSex); !reflect.DeepEqual(got, []R{{"F", 8}, {"M", 8}}) {
		t.Errorf("Sex %v", got)
	}
	for _, c := range d {
		if c.Name == cohort.ChartModality {
			t.Errorf("modality chart without an accession column")
		}
	}
}

// Subjects are distinct persons (a join to conditions repeats them) and an
// accession-only cohort counts persons through image_occurrence.
func TestStatisticsSubjects(t *testing.T) {
	cases := []struct {
		q              string
		rows, subjects int64
	}{
		{`SELECT p.person_id, c.condition_concept_id FROM omop.person p JOIN omop.condition_occurrence c ON c.person_id = p.person_id`, 22, 16},
		{`SELECT person_id FROM omop.condition_occurrence WHERE condition_concept_id = 201826`, 10, 10},
		{`SELECT accession_id FROM omop.image_occurrence WHERE modality_concept_id = 2000001`, 12, 6},
		{`SELECT accession_id FROM omop.image_occurrence WHERE modality_concept_id = 2000003`, 4, 2},
		{`SELECT 'ACC-9999' AS accession_id`, 1, 0},
		{`SELECT person_id FROM omop.person WHERE person_id > 100`, 0, 0},
		{`SELECT NULL::int AS person_id FROM generate_series(1, 3)`, 3, 0},
	}
	for _, c := range cases {
		st, _ := stats(t, c.q)
		if st.Rows != c.rows || st.Subjects != c.subjects {
			t.Errorf("%s: rows %d subjects %d, want %d and %d", c.q, st.Rows, st.Subjects, c.rows, c.subjects)
		}
	}
}

func TestFoldSmall(t *testing.T) {
	cases := []struct {
		in   []R
		min  int64
		want []R
	}{
		{[]R{{"A", 10}, {"B", 8}, {"C", 3}, {"D", 2}, {"E", 1}}, 5, []R{{"A", 10}, {"B", 8}, {"Other", 6}}},
		{[]R{{"CT", 300}, {"PlainRad", 4}}, 10, []R{{"CT", 300}}},
		{[]R{{"A", 30}, {"B", 6}, {"C", 4}}, 10, []R{{"A", 30}, {"Other", 10}}},
		{nil, 10, []R{}},
	}
	for _, c := range cases {
		if got := cohort.FoldSmall(c.in, c.min); !reflect.DeepEqual(got, c.want) {
			t.Errorf("FoldSmall(%v, %d) = %v, want %v", c.in, c.min, got, c.want)
		}
	}
}

// The decade expression agrees with FLIP's age() formula on every day of
// birth over 140 years, including leap days and birthdays falling today.
func TestDecadeExprMatchesAge(t *testing.T) {
	c, err := pgx.Connect(context.Background(), pgtestDB.ReaderDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close(context.Background())
	var n, mismatched int
	q := fmt.Sprintf(`SELECT count(*), count(*) FILTER (WHERE (floor(date_part('year', age(current_date, b)) / 10) * 10)::int <> %s)
FROM generate_series(current_date::timestamp - interval '140 years', current_date::timestamp, interval '1 day') AS g,
     LATERAL (VALUES (g), (g + interval '13 hours'), (g - interval '1 microsecond')) AS v(b)`, "(10 * "+cohort.DecadeIndexExpr("b")+")")
	if err := c.QueryRow(context.Background(), q).Scan(&n, &mismatched); err != nil {
		t.Fatal(err)
	}
	if n < 150000 || mismatched != 0 {
		t.Errorf("%d of %d birth times disagree with age()", mismatched, n)
	}
}

// slowQuery runs for minutes unless stopped.
const slowQuery = `SELECT 1 AS person_id FROM pg_sleep(30)`

// A statement over the timeout is stopped by the server and answers 504.
func TestStatementTimeout(t *testing.T) {
	e, err := cohort.New(cohort.Options{DSN: pgtestDB.ReaderDSN, MaxConns: 1, QueryTimeout: 300 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	ctx := context.Background()
	start := time.Now()
	_, _, err = e.Statistics(ctx, slowQuery, "slow")
	var he *httpx.Error
	if !errors.As(err, &he) || he.Status != 504 {
		t.Fatalf("want a 504, got %v", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("timeout took %s", d)
	}
}

// A caller that goes away cancels its statement in the server.
func TestCancellationStopsTheQuery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, _, err := engine.Statistics(ctx, slowQuery, "slow")
		done <- err
	}()
	admin, err := pgx.Connect(context.Background(), pgtestDB.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close(context.Background())
	running := func() int {
		var n int
		_ = admin.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity
WHERE state = 'active' AND query LIKE '%pg_sleep(30)%' AND pid <> pg_backend_pid()`).Scan(&n)
		return n
	}
	deadline := time.Now().Add(5 * time.Second)
	for running() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the statement never started")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	cancelled := time.Now()
	if err := <-done; err == nil {
		t.Fatal("a cancelled statement returned no error")
	}
	t.Logf("returned %s after the cancellation", time.Since(cancelled))
	deadline = time.Now().Add(3 * time.Second)
	for running() > 0 {
		if time.Now().After(deadline) {
			t.Fatal("the statement still runs in the server after its caller went away")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
