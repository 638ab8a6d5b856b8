package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/dev-hub/internal/app"
	"github.com/flip-trust/node/services/dev-hub/internal/config"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
)

const (
	testToken = "cli-admin-token-0123456789abcdef"
	testAES   = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

// hub is an in-process dev-hub built by the production composition root.
type hub struct {
	adminURL, apiURL string
	stop             func()
}

func startHub(t *testing.T, dataDir string) *hub {
	t.Helper()
	cfg, err := config.Load(func(k string) string {
		return map[string]string{
			"DEV_HUB_ADDR": "127.0.0.1:0", "DEV_HUB_ADMIN_ADDR": "127.0.0.1:0", "DEV_HUB_ADMIN_TOKEN": testToken,
			"DEV_HUB_DATA_DIR": dataDir, "AES_KEY_BASE64": testAES, "DEV_HUB_VERSION": "test-hub",
		}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	a, err := app.New(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	hubAddr, adminAddr, err := a.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	h := &hub{adminURL: "http://" + adminAddr.String(), apiURL: "http://" + hubAddr.String() + "/api"}
	stopped := false
	h.stop = func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("hub run: %v", err)
		}
	}
	t.Cleanup(h.stop)
	return h
}

// cli runs the command line in-process and returns its exit code and output.
func (h *hub) cli(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	env := map[string]string{"DEV_HUB_ADMIN_URL": h.adminURL, "DEV_HUB_ADMIN_TOKEN": testToken}
	code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }})
	return code, stdout.String(), stderr.String()
}

func (h *hub) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	code, out, errOut := h.cli(t, args...)
	if code != 0 {
		t.Fatalf("dev-hub %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// trust plays the trust-api side of the wire with a kit.
type trust struct {
	t      *testing.T
	kit    map[string]string
	cipher *envelope.Cipher
}

func (tr *trust) call(method, path string, body any, out any) int {
	tr.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, tr.kit["CENTRAL_HUB_API_URL"]+path, rd)
	req.Header.Set(tr.kit["TRUST_API_KEY_HEADER"], tr.kit["TRUST_API_KEY"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tr.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			tr.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func parseKit(t *testing.T, text string) map[string]string {
	t.Helper()
	kit := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if k, v, ok := strings.Cut(line, "="); ok && !strings.HasPrefix(line, "#") {
			kit[k] = v
		}
	}
	return kit
}

func TestEndToEndAgainstInProcessHub(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	h := startHub(t, dataDir)

	kit := parseKit(t, h.mustCLI(t, "trust", "add", "--name", "GSTT"))
	if kit["CENTRAL_HUB_API_URL"] != h.apiURL || kit["TRUST_API_KEY_HEADER"] != "Authorization" || kit["AES_KEY_BASE64"] != testAES {
		t.Fatalf("kit %v (hub at %s)", kit, h.apiURL)
	}
	if code, _, errOut := h.cli(t, "trust", "add", "--name", "GSTT"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate trust: exit %d %q", code, errOut)
	}
	cipher, err := envelope.NewFromBase64(kit["AES_KEY_BASE64"])
	if err != nil {
		t.Fatal(err)
	}
	tr := &trust{t: t, kit: kit, cipher: cipher}

	project := "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	cohortID := strings.TrimSpace(h.mustCLI(t, "task", "submit", "--trust", "GSTT", "--type", "cohort_query",
		"--sql", "SELECT person_id FROM omop.person", "--project-id", project))
	payloadFile := filepath.Join(t.TempDir(), "p.json")
	if err := os.WriteFile(payloadFile, []byte(`{"imaging_project_id":"0b6f7c1e-8d2a-4f3b-9c5d-1e2f3a4b5c6d"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	deleteID := strings.TrimSpace(h.mustCLI(t, "task", "submit", "--trust", "GSTT", "--type", "delete_imaging", "--payload-file", payloadFile))
	if !hubapi.ValidTaskID(cohortID) || !hubapi.ValidTaskID(deleteID) {
		t.Fatalf("submit printed %q and %q", cohortID, deleteID)
	}
	if out := h.mustCLI(t, "task", "list", "--trust", "GSTT", "--status", "pending"); !strings.Contains(out, cohortID) || !strings.Contains(out, deleteID) {
		t.Fatalf("task list:\n%s", out)
	}

	// The trust side: heartbeat with a snapshot, poll, open, report.
	var hb hubapi.HeartbeatReply
	if code := tr.call(http.MethodPost, "/trust/heartbeat", map[string]any{"services": map[string]any{"trust-api": map[string]any{"status": "healthy", "version": "v1", "response_ms": nil}}}, &hb); code != 200 {
		t.Fatalf("heartbeat HTTP %d", code)
	}
	if hb.TrustID != kit["EXPECTED_TRUST_ID"] || hb.AESKeyFingerprint == nil || *hb.AESKeyFingerprint != cipher.Fingerprint() || hb.HubVersion == nil || *hb.HubVersion != "test-hub" {
		t.Fatalf("heartbeat reply %+v", hb)
	}
	if out := h.mustCLI(t, "trust", "list"); !strings.Contains(out, "online") || !strings.Contains(out, "trust-api=healthy") {
		t.Fatalf("trust list:\n%s", out)
	}
	var pending hubapi.PendingReply
	tr.call(http.MethodGet, "/tasks/pending", nil, &pending)
	if len(pending.Tasks) != 2 || pending.Tasks[0].ID != cohortID {
		t.Fatalf("pending %+v", pending)
	}
	plain, err := cipher.Open(pending.Tasks[0].Payload, envelope.TaskContext("cohort_query"))
	if err != nil {
		t.Fatal(err)
	}
	var payload map[string]string
	if err := json.Unmarshal(plain, &payload); err != nil {
		t.Fatal(err)
	}
	if p, err := cipher.Open(payload["encrypted_project_id"], envelope.ProjectIDContext); err != nil || string(p) != project {
		t.Fatalf("encrypted_project_id opens to %q (%v)", p, err)
	}
	if payload["trust_id"] != kit["EXPECTED_TRUST_ID"] || payload["query"] != "SELECT person_id FROM omop.person" {
		t.Fatalf("cohort payload %v", payload)
	}
	if code := tr.call(http.MethodPost, "/cohort/results", map[string]any{
		"query_id": payload["query_id"], "trust_id": payload["trust_id"], "created": "2025-03-01", "record_count": 120,
		"data": []any{map[string]any{"name": "Counts", "results": []any{map[string]any{"value": "person_id", "count": 120}}}},
	}, nil); code != 200 {
		t.Fatalf("cohort results HTTP %d", code)
	}
	if code := tr.call(http.MethodPost, "/tasks/"+cohortID+"/result", map[string]any{"success": true, "result": nil}, nil); code != 200 {
		t.Fatalf("result HTTP %d", code)
	}
	failure := hubapi.TaskErrorResult("Invalid payload: failed authentication", nil)
	if code := tr.call(http.MethodPost, "/tasks/"+deleteID+"/result", map[string]any{"success": false, "result": failure}, nil); code != 200 {
		t.Fatalf("failure result HTTP %d", code)
	}

	if out := h.mustCLI(t, "task", "wait", cohortID, "--timeout", "5s"); !strings.Contains(out, "COMPLETED") {
		t.Fatalf("wait printed %q", out)
	}
	if code, _, errOut := h.cli(t, "task", "wait", deleteID, "--timeout", "5s"); code != 1 || !strings.Contains(errOut, "failed authentication") {
		t.Fatalf("wait on FAILED: exit %d %q", code, errOut)
	}
	var shown map[string]any
	if err := json.Unmarshal([]byte(h.mustCLI(t, "task", "show", cohortID)), &shown); err != nil {
		t.Fatal(err)
	}
	if shown["status"] != "COMPLETED" || shown["result_posts"] != float64(1) || shown["query_id"] != payload["query_id"] {
		t.Fatalf("task show %v", shown)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(h.mustCLI(t, "results", "--query-id", payload["query_id"])), &rows); err != nil {
		t.Fatal(err)
	}
	if len(rows) != 1 || rows[0]["record_count"] != float64(120) || rows[0]["received_count"] != float64(1) {
		t.Fatalf("results %v", rows)
	}

	// A waiting task times out with exit 1.
	waiting := strings.TrimSpace(h.mustCLI(t, "task", "submit", "--trust", kit["EXPECTED_TRUST_ID"], "--type", "update_user_profile", "--payload", `{"email":"a@b.c","enabled":true}`))
	if code, _, _ := h.cli(t, "task", "wait", waiting, "--timeout", "300ms", "--interval", "50ms"); code != 1 {
		t.Fatalf("wait on PENDING: exit %d, want 1", code)
	}

	// Restart: the same data directory serves the same state and keys.
	h.stop()
	h2 := startHub(t, dataDir)
	tr.kit["CENTRAL_HUB_API_URL"] = h2.apiURL
	var shown2 map[string]any
	if err := json.Unmarshal([]byte(h2.mustCLI(t, "task", "show", cohortID)), &shown2); err != nil {
		t.Fatal(err)
	}
	if shown2["status"] != "COMPLETED" {
		t.Fatalf("after restart the task is %v", shown2["status"])
	}
	var again hubapi.PendingReply
	if code := tr.call(http.MethodGet, "/tasks/pending", nil, &again); code != 200 || len(again.Tasks) != 1 || again.Tasks[0].ID != waiting {
		t.Fatalf("after restart: HTTP %d pending %+v", code, again.Tasks)
	}
	if code := tr.call(http.MethodPost, "/tasks/"+cohortID+"/result", map[string]any{"success": true}, nil); code != http.StatusConflict {
		t.Fatalf("duplicate result after restart: HTTP %d, want 409", code)
	}
}

func TestUsageErrors(t *testing.T) {
	t.Parallel()
	cases := [][]string{
		{},
		{"bogus"},
		{"trust"},
		{"trust", "remove"},
		{"trust", "add"},
		{"trust", "add", "--name", "x", "extra"},
		{"trust", "add", "--no-such-flag"},
		{"task", "submit", "--type", "cohort_query", "--sql", "SELECT 1"},
		{"task", "submit", "--trust", "A", "--type", "delete_imaging"},
		{"task", "submit", "--trust", "A", "--type", "delete_imaging", "--payload", "{}", "--sql", "SELECT 1"},
		{"task", "submit", "--trust", "A", "--type", "delete_imaging", "--sql", "SELECT 1"},
		{"task", "submit", "--trust", "A", "--type", "nope", "--payload", "{}"},
		{"task", "submit", "--trust", "A", "--type", "delete_imaging", "--payload", "[1]"},
		{"task", "show"},
		{"task", "show", "not-a-uuid"},
		{"task", "wait", "6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a", "--timeout", "soon"},
		{"results", "--query-id", "nope"},
		{"serve", "extra"},
		{"--admin", "ftp://x", "trust", "list"},
	}
	for _, args := range cases {
		t.Run(fmt.Sprint(args), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			env := Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
			if code := Run(context.Background(), args, env); code != 2 {
				t.Fatalf("exit %d, want 2; stderr %q", code, stderr.String())
			}
			if !strings.Contains(stderr.String(), "usage: dev-hub") {
				t.Fatalf("usage not shown: %q", stderr.String())
			}
		})
	}
}

func TestHelpAndMissingToken(t *testing.T) {
	t.Parallel()
	var stdout, stderr bytes.Buffer
	env := Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(string) string { return "" }}
	if code := Run(context.Background(), []string{"-h"}, env); code != 0 || !strings.Contains(stdout.String(), "task wait ID") {
		t.Fatalf("-h: exit %d %q", code, stdout.String())
	}
	stderr.Reset()
	if code := Run(context.Background(), []string{"trust", "list"}, env); code != 1 || !strings.Contains(stderr.String(), "DEV_HUB_ADMIN_TOKEN") {
		t.Fatalf("no token: exit %d %q", code, stderr.String())
	}
}

func TestFlagsAfterPositional(t *testing.T) {
	t.Parallel()
	fs := (&command{}).flags("x")
	timeout := fs.Duration("timeout", time.Second, "")
	pos, err := parse(fs, []string{"ID", "--timeout", "7s", "--admin", "http://a:1"})
	if err != nil || len(pos) != 1 || pos[0] != "ID" || *timeout != 7*time.Second {
		t.Fatalf("parse: %v %v %v", pos, *timeout, err)
	}
}

func TestSeal(t *testing.T) {
	t.Parallel()
	cipher, err := envelope.NewFromBase64(testAES)
	if err != nil {
		t.Fatal(err)
	}
	keyFile := filepath.Join(t.TempDir(), "aes")
	if err := os.WriteFile(keyFile, []byte(testAES+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	run := func(env map[string]string, args ...string) (int, string, string) {
		var stdout, stderr bytes.Buffer
		code := Run(context.Background(), args, Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string { return env[k] }})
		return code, stdout.String(), stderr.String()
	}
	const project = "3f2b6c1a-8d4e-4f5a-9b6c-7d8e9f0a1b2c"
	for _, tc := range []struct {
		env     map[string]string
		args    []string
		context string
	}{
		{map[string]string{"AES_KEY_BASE64": testAES}, []string{"seal", project}, envelope.ProjectIDContext},
		{map[string]string{"AES_KEY_BASE64_FILE": keyFile}, []string{"seal", project, "--context", "task:x"}, "task:x"},
	} {
		code, out, errOut := run(tc.env, tc.args...)
		if code != 0 {
			t.Fatalf("%v: exit %d: %s", tc.args, code, errOut)
		}
		pt, err := cipher.Open(strings.TrimSpace(out), tc.context)
		if err != nil || string(pt) != project {
			t.Fatalf("%v: opened %q, %v", tc.args, pt, err)
		}
		if _, err := cipher.Open(strings.TrimSpace(out), "other"); err == nil {
			t.Fatalf("%v: opened under another context", tc.args)
		}
	}
	if code, _, errOut := run(nil, "seal", project); code != 1 || !strings.Contains(errOut, "AES_KEY_BASE64") {
		t.Fatalf("no key: exit %d %q", code, errOut)
	}
	if code, _, errOut := run(map[string]string{"AES_KEY_BASE64": "c2hvcnQ="}, "seal", project); code != 1 || !strings.Contains(errOut, "32 bytes") {
		t.Fatalf("short key: exit %d %q", code, errOut)
	}
	for _, args := range [][]string{{"seal"}, {"seal", "a", "b"}, {"seal", "--context", "", "a"}} {
		if code, _, errOut := run(map[string]string{"AES_KEY_BASE64": testAES}, args...); code != 2 || !strings.Contains(errOut, "usage: dev-hub") {
			t.Fatalf("%v: exit %d %q", args, code, errOut)
		}
	}
}

func TestHealthProbe(t *testing.T) {
	t.Parallel()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/health" {
			http.NotFound(w, r)
			return
		}
		w.WriteHeader(http.StatusOK)
	}))
	t.Cleanup(up.Close) // the subtests run after this function returns
	addr := strings.TrimPrefix(up.URL, "http://")
	for _, tc := range []struct {
		name, addr string
		want       int
	}{
		{"healthy admin listener", addr, 0},
		{"nothing listening", "127.0.0.1:1", 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var stdout, stderr bytes.Buffer
			env := Env{Stdout: &stdout, Stderr: &stderr, Getenv: func(k string) string {
				if k == "DEV_HUB_ADMIN_ADDR" {
					return tc.addr
				}
				return ""
			}}
			if code := Run(context.Background(), []string{"-health"}, env); code != tc.want {
				t.Fatalf("-health against %s: exit %d, want %d (stderr %q)", tc.addr, code, tc.want, stderr.String())
			}
		})
	}
}
