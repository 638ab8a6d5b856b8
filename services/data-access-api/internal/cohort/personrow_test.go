package cohort_test

import (
	"context"
	"reflect"
	"testing"
	"time"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/guard"
)

// Which cohort queries carry their persons' sex and birth date along, and
// which are one row per person; every other query joins back to
// omop.person.
func TestPersonRowDecision(t *testing.T) {
	t.Parallel()
	cases := []struct {
		q                   string
		extended, perPerson bool
	}{
		{`SELECT person_id, year_of_birth FROM person WHERE year_of_birth > 1950`, true, true},
		{`SELECT * FROM person`, true, true},
		{`SELECT p.* FROM person p WHERE p.year_of_birth > 1950 ORDER BY 1 LIMIT 5`, true, true},
		{`SELECT person_id AS person_id, person_id AS x FROM person`, true, true},
		{`SELECT 1 AS n, p.person_id FROM person p`, true, true},
		{`SELECT person_id, generate_series(1, 2) AS k FROM person`, true, false},
		{`SELECT p.person_id, c.condition_concept_id FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id`, true, false},
		{`SELECT p.* FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id`, true, false},
		{`SELECT p.person_id FROM condition_occurrence c LEFT JOIN person p ON p.person_id = c.person_id`, true, false},
		{`WITH x AS (SELECT 1) SELECT person_id FROM person`, true, true},
		// Not read from an omop.person row, or not certainly.
		{`SELECT person_id FROM condition_occurrence`, false, false},
		{`SELECT c.person_id, p.person_id FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id`, false, false},
		{`SELECT person_id FROM person p JOIN condition_occurrence c USING (person_id)`, false, false},
		{`SELECT * FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id`, false, false},
		{`SELECT c.* FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id`, false, false},
		{`SELECT p.person_id::bigint FROM person p`, false, false},
		{`SELECT (SELECT max(person_id) FROM person) AS person_id FROM person`, false, false},
		{`SELECT year_of_birth AS person_id FROM person`, false, false},
		{`WITH person AS (SELECT 1 AS person_id) SELECT person_id FROM person`, false, false},
		{`SELECT q.person_id FROM (SELECT person_id FROM person) q`, false, false},
		{`SELECT p.person_id FROM (person p JOIN condition_occurrence c ON c.person_id = p.person_id) j`, false, false},
		{`SELECT p.person_id FROM person p(a)`, false, false},
		{`SELECT DISTINCT person_id FROM person`, false, false},
		{`SELECT person_id FROM person GROUP BY person_id`, false, false},
		{`SELECT person_id FROM person UNION ALL SELECT person_id FROM person`, false, false},
		{`SELECT person_id, k FROM person, generate_series(1, 3) AS k`, false, false},
		{`SELECT 1 AS x`, false, false},
	}
	for _, c := range cases {
		safe, err := guard.Check(c.q)
		if err != nil {
			t.Fatalf("%s: %v", c.q, err)
		}
		ext, per := cohort.PersonRow(safe)
		if ext != c.extended || per != c.perPerson {
			t.Errorf("%s: extended %v one per person %v, want %v and %v", c.q, ext, per, c.extended, c.perPerson)
		}
	}
}

// Reading sex and birth date from the cohort's own omop.person row gives
// exactly the statistics of joining the cohort's person ids back to
// omop.person.
func TestPersonRowStatisticsMatchJoinBack(t *testing.T) {
	t.Parallel()
	back, err := cohort.New(cohort.Options{DSN: pgtestDB.ReaderDSN, MaxConns: 2, QueryTimeout: 10 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer back.Close()
	cohort.JoinBack(back)
	for _, q := range []string{
		`SELECT person_id, gender_source_value, year_of_birth FROM person WHERE year_of_birth BETWEEN 1950 AND 2000`,
		`SELECT * FROM person`,
		`SELECT person_id, NULL::text AS note, person_id AS person_id FROM person`,
		`SELECT person.person_id, k FROM person, generate_series(1, 3) AS k`,
		`SELECT person_id, generate_series(1, 2) AS k FROM person WHERE person_id < 9`,
		`SELECT p.person_id, c.condition_concept_id, c.condition_start_date FROM person p JOIN condition_occurrence c ON c.person_id = p.person_id WHERE c.condition_concept_id IN (201826, 320128)`,
		`SELECT p.person_id, io.accession_id, io.modality_concept_id FROM person p JOIN image_occurrence io ON io.person_id = p.person_id`,
		`SELECT p.person_id, io.accession_id FROM image_occurrence io LEFT JOIN person p ON p.person_id = io.person_id + 10`,
		`SELECT p.person_id, c.condition_concept_id FROM condition_occurrence c LEFT JOIN person p ON p.person_id = c.person_id AND p.gender_source_value = 'F'`,
		`SELECT person_id FROM person WHERE person_id > 100`,
	} {
		safe, err := guard.Check(q)
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		if ext, _ := cohort.PersonRow(safe); !ext {
			t.Errorf("%s: not extended", q)
		}
		got, _, err := engine.Statistics(context.Background(), safe, "test")
		if err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		want, _, err := back.Statistics(context.Background(), safe, "test")
		if err != nil {
			t.Fatalf("%s joined back: %v", q, err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s:\n got  %+v\n want %+v", q, got, want)
		}
	}
}
