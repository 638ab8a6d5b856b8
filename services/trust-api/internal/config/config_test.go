package config

import (
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/mesh"
)

var aes = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

func minimal() map[string]string {
	return map[string]string{
		"CENTRAL_HUB_API_URL": "https://hub.example.org/api",
		"TRUST_API_KEY":       "hub-key-secret-value",
		"AES_KEY_BASE64":      aes,
	}
}

func TestDefaults(t *testing.T) {
	t.Parallel()
	c, err := Load(env(minimal()))
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		got  any
		want any
	}{
		{"key header", c.APIKeyHeader, "Authorization"},
		{"internal header", c.InternalKeyHeader, "X-Trust-Internal-Service-Key"},
		{"cohort admin header", c.CohortAdminHeader, "X-Cohort-Admin-Key"},
		{"auth mode", c.InternalAuth, mesh.ModeJWT},
		{"data access", c.DataAccessURL, "http://data-access-api:8000"},
		{"imaging", c.ImagingURL, "http://imaging-api:8000"},
		{"xnat", c.XNATURL, "http://xnat-web:8080"},
		{"omop", fmt.Sprintf("%s:%d", c.OMOPHost, c.OMOPPort), "omop-db:5432"},
		{"poll", c.PollInterval, 5 * time.Second},
		{"heartbeat follows poll", c.HeartbeatInterval, 5 * time.Second},
		{"cohort timeout", c.CohortQueryTimeout, 300 * time.Second},
		{"health interval", c.HealthCollectInterval, 30 * time.Second},
		{"degraded", c.HealthDegraded, time.Second},
		{"addr", c.Addr, ":8000"},
		{"journal", c.JournalPath(), "/var/lib/trust-api/journal.db"},
		{"workers", c.TaskWorkers, 4},
		{"delivery concurrency", c.DeliveryConcurrency, 8},
		{"backoff", [2]time.Duration{c.BackoffMin, c.BackoffMax}, [2]time.Duration{time.Second, time.Minute}},
		{"env", c.Env, "development"},
		{"ledger dir", c.AuditLedgerDir, "/var/lib/trust-api/audit"},
		{"review addr", c.ReviewAddr, "127.0.0.1:8021"},
		{"review expiry", c.EgressReviewExpiry, 72 * time.Hour},
		{"review policy", c.EgressReview.String(), ""},
		{"reviewer key", c.ReviewerKey, ""},
	}
	for _, tc := range checks {
		t.Run(tc.name, func(t *testing.T) {
			if tc.got != tc.want {
				t.Fatalf("got %v want %v", tc.got, tc.want)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	t.Parallel()
	m := minimal()
	m["POLL_INTERVAL_SECONDS"] = "0.5"
	m["TRUST_INTERNAL_AUTH"] = "KEY"
	m["TASK_WORKERS"] = "8"
	m["DELIVERY_CONCURRENCY"] = "3"
	m["EXPECTED_TRUST_ID"] = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	m["COHORT_QUERY_TIMEOUT_SECONDS"] = ""
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.PollInterval != 500*time.Millisecond || c.HeartbeatInterval != 500*time.Millisecond || c.InternalAuth != mesh.ModeKey || c.TaskWorkers != 8 || c.DeliveryConcurrency != 3 || c.CohortQueryTimeout != 300*time.Second {
		t.Fatalf("%+v", c)
	}
}

func TestSecretFromFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	path := filepath.Join(dir, "key")
	if err := os.WriteFile(path, []byte("from-file-secret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := minimal()
	delete(m, "TRUST_API_KEY")
	m["TRUST_API_KEY_FILE"] = path
	c, err := Load(env(m))
	if err != nil || c.APIKey != "from-file-secret" {
		t.Fatalf("key %q err %v", c.APIKey, err)
	}
}

func TestEveryProblemAtOnce(t *testing.T) {
	t.Parallel()
	m := map[string]string{
		"AES_KEY_BASE64":               base64.StdEncoding.EncodeToString([]byte("short")),
		"TRUST_INTERNAL_AUTH":          "magic",
		"POLL_INTERVAL_SECONDS":        "soon",
		"TASK_WORKERS":                 "0",
		"DELIVERY_CONCURRENCY":         "0",
		"DELIVERY_BACKOFF_MIN_SECONDS": "10",
		"DELIVERY_BACKOFF_MAX_SECONDS": "2",
		"EXPECTED_TRUST_ID":            "GSTT",
		"TRUST_API_KEY_HEADER":         "Bad Header",
		"OMOP_DB_PORT":                 "70000",
		"LOG_LEVEL":                    "chatty",
	}
	_, err := Load(env(m))
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{
		"CENTRAL_HUB_API_URL is required", "TRUST_API_KEY is required", "AES_KEY_BASE64: AES key must be 32 bytes",
		"TRUST_INTERNAL_AUTH", "POLL_INTERVAL_SECONDS", "TASK_WORKERS", "DELIVERY_CONCURRENCY", "DELIVERY_BACKOFF_MAX_SECONDS (2s) is below",
		"EXPECTED_TRUST_ID", "TRUST_API_KEY_HEADER", "OMOP_DB_PORT", "LOG_LEVEL",
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("missing problem %q in:\n%v", want, err)
		}
	}
	if strings.Count(err.Error(), "CENTRAL_HUB_API_URL is required") != 1 {
		t.Errorf("problem repeated:\n%v", err)
	}
}

func TestSafeRedacts(t *testing.T) {
	t.Parallel()
	m := minimal()
	m["TRUST_INTERNAL_SERVICE_KEY"] = "internal-secret-internal-secret-internal"
	m["CENTRAL_HUB_API_URL"] = "https://user:pw-secret@hub.example.org/api"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	text := fmt.Sprint(c.Safe())
	for _, secret := range []string{"hub-key-secret-value", aes, "internal-secret-internal-secret-internal", "pw-secret"} {
		if strings.Contains(text, secret) {
			t.Fatalf("Safe() shows %q", secret)
		}
	}
	if !strings.Contains(text, "hub.example.org/api") {
		t.Fatalf("Safe() lost the hub URL: %s", text)
	}
}

func TestEgressSettings(t *testing.T) {
	t.Parallel()
	m := minimal()
	m["EGRESS_REVIEW"] = "cohort_results=hold,fl_weights=refuse"
	m["EGRESS_REVIEW_EXPIRY"] = "90m"
	m["AUDIT_LEDGER_DIR"] = "/srv/audit"
	m["EGRESS_REVIEWER_KEY"] = strings.Repeat("r", 32)
	m["EGRESS_REVIEW_ADDR"] = "[::1]:9000"
	c, err := Load(env(m))
	if err != nil {
		t.Fatal(err)
	}
	if c.EgressReview.String() != "cohort_results=hold,fl_weights=refuse" || c.EgressReviewExpiry != 90*time.Minute ||
		c.AuditLedgerDir != "/srv/audit" || c.ReviewAddr != "[::1]:9000" {
		t.Fatalf("config = %+v", c)
	}
	if got := c.Safe()["EGRESS_REVIEWER_KEY"]; got == m["EGRESS_REVIEWER_KEY"] {
		t.Fatal("Safe shows the reviewer key")
	}

	bad := minimal()
	bad["EGRESS_REVIEW"] = "cohort_results=later"
	bad["EGRESS_REVIEW_EXPIRY"] = "soon"
	bad["EGRESS_REVIEWER_KEY"] = "short"
	bad["EGRESS_REVIEW_ADDR"] = "0.0.0.0:8021"
	_, err = Load(env(bad))
	for _, want := range []string{"EGRESS_REVIEW:", "EGRESS_REVIEW_EXPIRY", "EGRESS_REVIEWER_KEY", "EGRESS_REVIEW_ADDR"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not name %s", err, want)
		}
	}
	bad = minimal()
	bad["EGRESS_REVIEW_ADDR"] = "0.0.0.0:8021"
	bad["EGRESS_REVIEW_ALLOW_REMOTE"] = "true"
	if _, err := Load(env(bad)); err != nil {
		t.Fatalf("remote review addr with EGRESS_REVIEW_ALLOW_REMOTE: %v", err)
	}
}
