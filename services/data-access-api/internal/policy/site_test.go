package policy_test

import (
	"testing"

	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// One file serves as both the governance policy (ACCESS_POLICY_FILE) and
// the site policy (SITE_POLICY_FILE): each loader takes its sections and
// leaves the other's to it.
func TestOneFileForBothPolicies(t *testing.T) {
	t.Parallel()
	doc := []byte(`[disclosure]
min_cohort_size = 12
floor = 15
rounding = 5

[review]
cohort_results = "hold"

[dp]
clip_norm = 1.0

[budget."6f9619ff-8b86-d011-b42d-00c04fc964ff"]
epsilon = 8.0
delta = 1e-5

[images]
allowed = []

[[access.rule]]
id = "all"
action = "cohort.statistics"
effect = "permit"
`)
	gov, err := policy.Parse(doc, "ACCESS_POLICY_FILE=site.toml", 10)
	if err != nil {
		t.Fatal(err)
	}
	if gov.MinCohortSize != 12 || len(gov.Rules) != 1 {
		t.Fatalf("governance = %+v", gov)
	}
	site, err := sitepolicy.Parse(doc, "site.toml", 10)
	if err != nil {
		t.Fatal(err)
	}
	if site.Floor != 15 || site.Rounding != 5 || site.Review[sitepolicy.CohortResults] != sitepolicy.Hold {
		t.Fatalf("site = %+v", site)
	}
	// A site-only document is not "a document that configures nothing".
	if _, err := policy.Parse([]byte("[review]\nfl_weights = \"refuse\"\n"), "ACCESS_POLICY_FILE=s.toml", 10); err != nil {
		t.Fatal(err)
	}
	// The governance loader still rejects what neither document defines.
	if _, err := policy.Parse([]byte("[disclosure]\nfloor = 15\ncolour = 1\n"), "ACCESS_POLICY_FILE=s.toml", 10); err == nil {
		t.Fatal("unknown key accepted")
	}
}
