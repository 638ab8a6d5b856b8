package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const projA = "0f8fad5b-d9cb-469f-a165-70867728950e"

// The site policy file sets review modes, expiry and budgets; the
// environment can only make them stricter.
func TestSitePolicyFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "site.toml")
	doc := `[review]
cohort_results = "hold"
fl_weights = "hold"
expiry = "2h"

[budget."` + strings.ToUpper(projA) + `"]
epsilon = 8.0
delta = 1e-5
`
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimal()
	m["SITE_POLICY_FILE"] = path
	m["EGRESS_REVIEW"] = "fl_weights=refuse,cohort_results=release"
	m["PRIVACY_BUDGETS"] = projA + "=3:1e-3"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if got := c.EgressReview.String(); got != "cohort_results=hold,fl_weights=refuse" {
		t.Errorf("review = %q, want the file's hold kept and fl_weights made stricter by the environment", got)
	}
	if c.EgressReviewExpiry != 2*time.Hour {
		t.Errorf("expiry = %v, want the file's 2h", c.EgressReviewExpiry)
	}
	if b := c.Budgets[projA]; b.Epsilon != 3 || b.Delta != 1e-5 {
		t.Errorf("budget = %+v, want the smaller epsilon (3) and delta (1e-5)", b)
	}
	if c.Safe()["SITE_POLICY_FILE"] != "SITE_POLICY_FILE="+path {
		t.Errorf("safe view names %v", c.Safe()["SITE_POLICY_FILE"])
	}

	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(bad, []byte("[review]\ncohort_results = \"maybe\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m["SITE_POLICY_FILE"] = bad
	m["EGRESS_REVIEW_EXPIRY"] = "soon"
	_, err = Load(env(m))
	if err == nil || !strings.Contains(err.Error(), "maybe") || !strings.Contains(err.Error(), "EGRESS_REVIEW_EXPIRY") {
		t.Errorf("a bad file and a bad variable are reported together: %v", err)
	}
}
