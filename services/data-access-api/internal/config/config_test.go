package config

import (
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
