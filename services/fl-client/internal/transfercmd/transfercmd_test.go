package transfercmd

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flip-trust/node/shared/flproto"
)

const secret = "trust-one-secret-0123456789abcdef0123456789"

func server(t *testing.T) *httptest.Server {
	t.Helper()
	dir := t.TempDir()
	store, err := flproto.NewArtifactStore(filepath.Join(dir, "artifacts"), 0)
	if err != nil {
		t.Fatal(err)
	}
	uploads, err := flproto.NewUploads(filepath.Join(dir, "uploads"), store, 0)
	if err != nil {
		t.Fatal(err)
	}
	auth := flproto.NewAuthenticator(map[string][sha256.Size]byte{"Trust_1": flproto.HashSecret(secret)})
	srv := httptest.NewServer(auth.Middleware(flproto.NewArtifactHandler(store, uploads)))
	t.Cleanup(srv.Close)
	return srv
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestPutThenGet(t *testing.T) {
	t.Parallel()
	srv := server(t)
	dir := t.TempDir()
	data := make([]byte, 3*flproto.MinChunkSize+5)
	_, _ = rand.Read(data)
	src := filepath.Join(dir, "update.safetensors")
	if err := os.WriteFile(src, data, 0o600); err != nil {
		t.Fatal(err)
	}
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	getenv := env(map[string]string{"FL_CLIENT_NAME": "Trust_1", "FL_CLIENT_SECRET_FILE": secretFile, "FL_SERVER_URL": srv.URL})

	var out, errOut bytes.Buffer
	err := RunEnv(context.Background(), []string{"put", "--chunk-size", "65536", src}, getenv, &out, &errOut)
	if err != nil {
		t.Fatalf("put: %v\n%s", err, errOut.String())
	}
	id := strings.TrimSpace(out.String())
	sum := sha256.Sum256(data)
	if id != flproto.ArtifactID(hex.EncodeToString(sum[:])) {
		t.Fatalf("put printed %q", id)
	}
	if !strings.Contains(errOut.String(), "(100%)") {
		t.Fatalf("no final progress line: %q", errOut.String())
	}

	dst := filepath.Join(dir, "copy.safetensors")
	out.Reset()
	err = RunEnv(context.Background(), []string{"get", "--server", srv.URL, "--id", id, "--out", dst, "--quiet"},
		env(map[string]string{"FL_CLIENT_NAME": "Trust_1", "FL_CLIENT_SECRET": secret}), &out, &errOut)
	if err != nil {
		t.Fatalf("get: %v", err)
	}
	got, err := os.ReadFile(dst)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("downloaded file differs (%v)", err)
	}
	if !strings.Contains(out.String(), "verified") {
		t.Fatalf("get printed %q", out.String())
	}

	// A wrong secret is the server's 401, not a usage error.
	err = RunEnv(context.Background(), []string{"get", "--id", id, "--out", dst + "2"},
		env(map[string]string{"FL_CLIENT_NAME": "Trust_1", "FL_CLIENT_SECRET": "wrong", "FL_SERVER_URL": srv.URL}), &out, &errOut)
	var he *flproto.HTTPError
	if !errors.As(err, &he) || he.Status != 401 || errors.Is(err, ErrUsage) {
		t.Fatalf("wrong secret: %v", err)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	full := env(map[string]string{"FL_CLIENT_NAME": "Trust_1", "FL_CLIENT_SECRET": secret, "FL_SERVER_URL": "http://127.0.0.1:1"})
	for _, tc := range []struct {
		name   string
		args   []string
		getenv func(string) string
		want   string
	}{
		{"no command", nil, full, "needs a command"},
		{"unknown command", []string{"list"}, full, "unknown artifact command"},
		{"get without id", []string{"get", "--out", "x"}, full, "--id"},
		{"put without file", []string{"put"}, full, "exactly one FILE"},
		{"bad chunk size", []string{"put", "--chunk-size", "10", "f"}, full, "--chunk-size"},
		{"no credentials", []string{"get", "--id", "sha256:00", "--out", "x"}, env(nil), "FL_CLIENT_NAME is required; FL_CLIENT_SECRET or FL_CLIENT_SECRET_FILE is required"},
		{"unknown flag", []string{"get", "--nope"}, full, "nope"},
	} {
		err := RunEnv(context.Background(), tc.args, tc.getenv, &bytes.Buffer{}, &bytes.Buffer{})
		if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}
