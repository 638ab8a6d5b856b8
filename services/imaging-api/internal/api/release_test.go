package api

import (
	"encoding/json"
	"testing"

	"github.com/flip-trust/node/shared/disclosure"
)

// FLIP#858: import status counts must not reveal a small cell, or a small
// cohort, through the status route.
func TestReleaseCounts(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name     string
		rounding int64
		in       ImportCounts
		want     string
	}{
		{name: "nothing small", in: ImportCounts{Successful: 40, Queued: 12},
			want: `{"successful_count":40,"failed_count":0,"processing_count":0,"queued_count":12,"queue_failed_count":0}`},
		{name: "a small state is withheld with its complement", in: ImportCounts{Successful: 40, Failed: 2, Queued: 12},
			want: `{"successful_count":40,"failed_count":null,"processing_count":0,"queued_count":null,"queue_failed_count":0}`},
		{name: "a cohort under the floor reveals nothing", in: ImportCounts{Successful: 3, Failed: 1},
			want: `{"successful_count":null,"failed_count":null,"processing_count":0,"queued_count":0,"queue_failed_count":0}`},
		{name: "rounding", rounding: 5, in: ImportCounts{Successful: 43, Queued: 12},
			want: `{"successful_count":45,"failed_count":0,"processing_count":0,"queued_count":10,"queue_failed_count":0}`},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r, err := disclosure.Seal(releasedRetrieval{true, ReleaseCounts(disclosure.MustPolicy(10, 0, tc.rounding), tc.in)})
			if err != nil {
				t.Fatal(err)
			}
			want := `{"project_creation_completed":true,"import_status":` + tc.want + `}`
			if got, _ := json.Marshal(r); string(got) != want {
				t.Fatalf("got  %s\nwant %s", got, want)
			}
		})
	}
}
