package cohort_test

import (
	"encoding/json"
	"testing"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/shared/disclosure"
)

// Release applies complementary suppression where the record count is a
// released total, FLIP's fold where none is, and the site's rounding.
func TestRelease(t *testing.T) {
	t.Parallel()
	st := &cohort.Stats{Rows: 310, Subjects: 304, Charts: []cohort.Chart{
		{Name: cohort.ChartCounts, Results: []cohort.Result{{"person\nid", 310}, {"note", 306}}},
		{Name: cohort.ChartNulls, Results: []cohort.Result{{"person\nid", 0}, {"note", 4}}},
		{Name: cohort.ChartAge, Results: []cohort.Result{{"20-29", 150}, {"30-39", 140}, {"40-49", 14}}},
		{Name: cohort.ChartSex, Results: []cohort.Result{{"M", 300}, {"F", 4}}},
		{Name: cohort.ChartModality, Results: []cohort.Result{{"CT", 300}, {"XR", 4}, {"MR", 3}}},
	}}
	cases := []struct {
		name     string
		rounding int64
		want     string
	}{
		{name: "exact", want: `[{"name":"Counts","results":[{"value":"person\nid","count":310}]},` +
			`{"name":"Nulls","results":[{"value":"person\nid","count":0}]},` +
			`{"name":"Age Distribution","results":[{"value":"20-29","count":150},{"value":"30-39","count":140},{"value":"40-49","count":14}]},` +
			// F (4) alone would be 304 − 300: M is withheld with it.
			`{"name":"Sex Distribution","results":[{"value":"Other","count":304}]},` +
			// Studies: no released total, and XR + MR (7) stay under the floor.
			`{"name":"Modality Distribution","results":[{"value":"CT","count":300}]}]`},
		{name: "rounded to 10", rounding: 10, want: `[{"name":"Counts","results":[{"value":"person\nid","count":310}]},` +
			`{"name":"Nulls","results":[{"value":"person\nid","count":0}]},` +
			`{"name":"Age Distribution","results":[{"value":"20-29","count":150},{"value":"30-39","count":140},{"value":"40-49","count":10}]},` +
			`{"name":"Sex Distribution","results":[{"value":"Other","count":300}]},` +
			`{"name":"Modality Distribution","results":[{"value":"CT","count":300}]}]`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, err := json.Marshal(st.Release(disclosure.MustPolicy(10, 0, tc.rounding)))
			if err != nil || string(got) != tc.want {
				t.Fatalf("Release =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}
