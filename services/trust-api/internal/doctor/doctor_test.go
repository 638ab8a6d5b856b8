package doctor

import (
	"bytes"
	"context"
	"encoding/base64"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func env(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestDoctorAgainstAHub runs the whole command against a plain-HTTP hub and
// internal services: the report names every check, passes the reachable
// ones, warns on plain HTTP, prints fingerprints and never a key.
func TestDoctorAgainstAHub(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/health" {
			_, _ = w.Write([]byte(`{"status":"ok"}`))
			return
		}
		http.NotFound(w, r)
	}))
	t.Cleanup(srv.Close)
	aes := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	vars := map[string]string{
		"CENTRAL_HUB_API_URL": srv.URL + "/api", "TRUST_API_KEY": "trust-api-key-value", "AES_KEY_BASE64": aes,
		"TRUST_INTERNAL_SERVICE_KEY": strings.Repeat("k", 40), "DATA_ACCESS_API_URL": srv.URL, "IMAGING_API_URL": srv.URL,
		"TRUST_API_DATA_DIR": t.TempDir(),
	}
	var out bytes.Buffer
	code := Run(context.Background(), nil, env(vars), &out)
	text := out.String()
	if code != 0 {
		t.Fatalf("exit %d:\n%s", code, text)
	}
	for _, want := range []string{
		"PASS  trust-api        configuration", "PASS  trust-api        hub reachable", "WARN  trust-api        hub TLS certificate",
		"PASS  trust-api        clock skew", "fingerprint 4bb06f8e4e3a", "PASS  trust-api        data-access-api reachable", "PASS  trust-api        journal disk",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
	for _, secret := range []string{aes, "trust-api-key-value", strings.Repeat("k", 40)} {
		if strings.Contains(text, secret) {
			t.Errorf("report prints a key:\n%s", text)
		}
	}
}

func TestDoctorFailures(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	_ = l.Close()
	vars := map[string]string{
		"CENTRAL_HUB_API_URL": closed + "/api", "TRUST_API_KEY": "k", "AES_KEY_BASE64": base64.StdEncoding.EncodeToString([]byte("short")),
		"TRUST_INTERNAL_SERVICE_KEY": "short", "DATA_ACCESS_API_URL": closed, "IMAGING_API_URL": closed,
		"TRUST_API_DATA_DIR": t.TempDir() + "/missing",
	}
	var out bytes.Buffer
	code := Run(context.Background(), []string{"-timeout", "5s"}, env(vars), &out)
	text := out.String()
	if code != 1 {
		t.Fatalf("exit %d, want 1:\n%s", code, text)
	}
	for _, want := range []string{
		"FAIL  trust-api        configuration", "FAIL  trust-api        hub reachable", "FAIL  trust-api        hub envelope key",
		"FAIL  trust-api        internal service key", "FAIL  trust-api        journal disk", "fix: allow outbound HTTPS",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("report lacks %q:\n%s", want, text)
		}
	}
}
