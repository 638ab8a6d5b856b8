package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flip-trust/node/services/data-access-api/internal/config"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

func testConfig(t *testing.T, extra map[string]string) config.Config {
	t.Helper()
	m := map[string]string{
		"DATA_ACCESS_POSTGRES_USER": "data_analyst_reader", "DATA_ACCESS_POSTGRES_PASSWORD": "x",
		"OMOP_POSTGRES_DB": "omop", "AES_KEY_BASE64": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
		"OMOP_DB_SERVICE_NAME": "127.0.0.1", "OMOP_DB_PORT": "1", "DATA_ACCESS_API_ADDR": "127.0.0.1:0",
	}
	for k, v := range extra {
		m[k] = v
	}
	c, err := config.Load(func(k string) string { return m[k] })
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// An invalid governance policy stops startup with a message naming its line.
func TestInvalidPolicyStopsStartup(t *testing.T) {
	path := filepath.Join(t.TempDir(), "governance.toml")
	doc := "[[access.rule]]\nid = \"a\"\naction = \"cohort.statistics\"\neffect = \"allow\"\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := New(testConfig(t, map[string]string{"ACCESS_POLICY_FILE": path}), logging.Discard(), httpx.NewRegistry(), "test")
	if err == nil || !strings.Contains(err.Error(), "line 4") || !strings.Contains(err.Error(), path) {
		t.Fatalf("want an error naming %s line 4, got %v", path, err)
	}
}

// Without a database the service still starts (requests answer 503 until it
// comes up), and a valid policy is accepted.
func TestStartsWithoutDatabase(t *testing.T) {
	path := filepath.Join(t.TempDir(), "governance.toml")
	doc := "[disclosure]\nmin_cohort_size = 20\n"
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := New(testConfig(t, map[string]string{"ACCESS_POLICY_FILE": path}), logging.Discard(), httpx.NewRegistry(), "test")
	if err != nil {
		t.Fatal(err)
	}
	a.engine.Close()
}
