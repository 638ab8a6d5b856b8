package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func base() map[string]string {
	return map[string]string{
		"DATA_ACCESS_POSTGRES_USER": "data_analyst_reader", "DATA_ACCESS_POSTGRES_PASSWORD": "p@ss/word:1",
		"OMOP_POSTGRES_DB": "omop", "AES_KEY_BASE64": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
	}
}

func TestDefaults(t *testing.T) {
	c, err := Load(env(base()))
	if err != nil {
		t.Fatal(err)
	}
	if c.Threshold != 10 || c.QueryTimeout != 300*time.Second || c.DBHost != "omop-db" || c.DBPort != 5432 ||
		c.DBMaxConns != 4 || c.SnapshotDir != "" || c.Addr != ":8000" || c.DBSSLMode != "prefer" {
		t.Errorf("defaults: %+v", c)
	}
	// Credentials are escaped in the DSN.
	if dsn := c.DSN(); !strings.Contains(dsn, "p%40ss%2Fword%3A1@omop-db:5432/omop") {
		t.Errorf("DSN %s", dsn)
	}
	// Commented-out kit entries arrive empty and mean the default.
	m := base()
	m["COHORT_QUERY_THRESHOLD"] = ""
	if c, err := Load(env(m)); err != nil || c.Threshold != 10 {
		t.Errorf("empty threshold: %d %v", c.Threshold, err)
	}
	if strings.Contains(c.Safe()["DATA_ACCESS_POSTGRES_PASSWORD"].(string), "word") {
		t.Errorf("the password reaches the startup log")
	}
}

func TestProblemsAreAllReported(t *testing.T) {
	m := base()
	delete(m, "OMOP_POSTGRES_DB")
	delete(m, "AES_KEY_BASE64")
	m["COHORT_QUERY_THRESHOLD"] = "0"
	m["OMOP_DB_PORT"] = "70000"
	m["OMOP_DB_SSLMODE"] = "sometimes"
	m["ENV"] = "staging"
	_, err := Load(env(m))
	if err == nil {
		t.Fatal("invalid configuration accepted")
	}
	for _, want := range []string{"OMOP_POSTGRES_DB", "AES_KEY_BASE64", "COHORT_QUERY_THRESHOLD", "OMOP_DB_PORT", "OMOP_DB_SSLMODE", "ENV"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s:\n%v", want, err)
		}
	}
	m = base()
	m["COHORT_QUERY_THRESHOLD"] = "-3"
	if _, err := Load(env(m)); err == nil || !strings.Contains(err.Error(), "positive") {
		t.Errorf("negative threshold: %v", err)
	}
}

// The site policy is loaded with the configuration: its problems fail
// startup together with every other one.
func TestSitePolicyFile(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.toml")
	bad := filepath.Join(dir, "bad.toml")
	if err := os.WriteFile(good, []byte("[disclosure]\nfloor = 20\nrounding = 5\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bad, []byte("[disclosure]\nfloor = 5\nrounding = -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := base()
	m["SITE_POLICY_FILE"] = good
	c, err := Load(env(m))
	if err != nil || c.Site.Floor != 20 || c.Site.Rounding != 5 || c.Safe()["SITE_POLICY_FILE"] != good {
		t.Fatalf("good site policy: %+v %v", c.Site, err)
	}
	m["SITE_POLICY_FILE"] = bad
	m["OMOP_DB_PORT"] = "70000"
	_, err = Load(env(m))
	for _, want := range []string{"OMOP_DB_PORT", "line 2: disclosure.floor 5 is below COHORT_QUERY_THRESHOLD 10", "line 3: disclosure.rounding"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
	if c, err := Load(env(base())); err != nil || c.Site == nil || c.Site.Source != "defaults" {
		t.Fatalf("no site policy: %+v %v", c.Site, err)
	}
}
