package app

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/trust-api/internal/config"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/mesh"
)

const (
	trustID     = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	apiKey      = "HUBKEY-known-value-4f1c9a"
	internalKey = "INTERNALKEY-known-value-0123456789abcdef"
	email       = "jane.marker@nhs.example.uk"
	sql         = "SELECT person_id FROM omop.person WHERE zebra_marker = 42"
	projectID   = "2b8e4f5c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
)

var aesKey = base64.StdEncoding.EncodeToString([]byte("app-test-aes-key-app-test-aes-k!"))

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// hubStandin dispatches the queued tasks once and records what comes back.
type hubStandin struct {
	cipher  *envelope.Cipher
	trustID string

	mu      sync.Mutex
	queue   []hubapi.Task
	plain   map[string][]byte
	results map[string]hubapi.TaskResult
	cohort  []string
	beats   int
}

func (h *hubStandin) add(id string, tt hubapi.TaskType, payload any) {
	raw, _ := json.Marshal(payload)
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.plain == nil {
		h.plain, h.results = map[string][]byte{}, map[string]hubapi.TaskResult{}
	}
	h.plain[id] = raw
	h.queue = append(h.queue, hubapi.Task{ID: id, TaskType: tt})
}

func (h *hubStandin) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != apiKey {
		w.WriteHeader(401)
		return
	}
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	ident := `"trust_id":"` + h.trustID + `","trust_name":"GSTT"`
	switch {
	case r.URL.Path == "/api/trust/heartbeat":
		h.beats++
		_, _ = io.WriteString(w, `{`+ident+`,"message":"Heartbeat recorded","hub_version":"hub-7","aes_key_fingerprint":"`+h.cipher.Fingerprint()+`"}`)
	case r.URL.Path == "/api/tasks/pending":
		out := []hubapi.Task{}
		for _, t := range h.queue {
			t.Payload, _ = h.cipher.Seal(h.plain[t.ID], envelope.TaskContext(string(t.TaskType)))
			out = append(out, t)
		}
		h.queue = nil
		raw, _ := json.Marshal(out)
		_, _ = io.WriteString(w, `{`+ident+`,"tasks":`+string(raw)+`}`)
	case strings.HasSuffix(r.URL.Path, "/result"):
		var res hubapi.TaskResult
		_ = json.Unmarshal(body, &res)
		h.results[strings.Split(r.URL.Path, "/")[3]] = res
		_, _ = io.WriteString(w, `{`+ident+`,"message":"ok"}`)
	case r.URL.Path == "/api/cohort/results":
		h.cohort = append(h.cohort, string(body))
		_, _ = io.WriteString(w, `{"message":"Cohort results processed successfully"}`)
	default:
		w.WriteHeader(404)
	}
}

func (h *hubStandin) result(id string) (hubapi.TaskResult, bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	r, ok := h.results[id]
	return r, ok
}

// internalStandin plays data-access-api and imaging-api: it authenticates
// every call, and fails (echoing the request body, SQL and email included,
// as a careless upstream would) when the body contains "fail".
func internalStandin(t *testing.T, audience string) string {
	v := mesh.NewVerifier(audience, []byte(internalKey), "", slog.New(slog.DiscardHandler))
	h := v.Require(Issuer)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		if bytes.Contains(body, []byte("fail")) {
			w.WriteHeader(400)
			_, _ = w.Write(append([]byte(`{"detail":"bad request: `), append(bytes.ReplaceAll(body, []byte(`"`), []byte(`'`)), '"', '}')...))
			return
		}
		switch r.URL.Path {
		case "/cohort":
			_, _ = io.WriteString(w, `{"query_id":"q1","trust_id":"`+trustID+`","created":"2025-01-01","record_count":20,"data":[{"name":"Sex","results":[{"value":8507,"count":20}]}],"suppressed":false,"error":null}`)
		case "/health":
			_, _ = io.WriteString(w, `{"status":"ok","version":"svc-1"}`)
		default:
			_, _ = io.WriteString(w, `{"ok":true}`)
		}
	}))
	mux := http.NewServeMux()
	mux.Handle("/health", http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, `{"version":"svc-1"}`) }))
	mux.Handle("/", h)
	s := httptest.NewServer(mux)
	t.Cleanup(s.Close)
	return s.URL
}

func testConfig(t *testing.T, hubURL, dataURL, imagingURL string, extra map[string]string) config.Config {
	t.Helper()
	env := map[string]string{
		"CENTRAL_HUB_API_URL": hubURL + "/api", "TRUST_API_KEY": apiKey, "AES_KEY_BASE64": aesKey,
		"TRUST_INTERNAL_SERVICE_KEY": internalKey, "EXPECTED_TRUST_ID": trustID,
		"DATA_ACCESS_API_URL": dataURL, "IMAGING_API_URL": imagingURL, "XNAT_URL": imagingURL,
		"OMOP_DB_HOST": "127.0.0.1", "OMOP_DB_PORT": "1",
		"POLL_INTERVAL_SECONDS": "0.02", "HEARTBEAT_INTERVAL_SECONDS": "0.05", "HEALTH_COLLECT_INTERVAL_SECONDS": "0.05",
		"DELIVERY_BACKOFF_MIN_SECONDS": "0.01", "DELIVERY_BACKOFF_MAX_SECONDS": "0.05",
		"TRUST_API_ADDR": "127.0.0.1:0", "TRUST_API_DATA_DIR": t.TempDir(), "LOG_LEVEL": "DEBUG",
	}
	for k, v := range extra {
		env[k] = v
	}
	cfg, err := config.Load(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func start(t *testing.T, cfg config.Config, logs io.Writer) (*App, string, context.CancelFunc, chan error) {
	t.Helper()
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	srv := httpx.DefaultConfig(cfg.Addr)
	srv.DrainDelay = 0
	a, err := newApp(cfg, logger, prometheus.NewRegistry(), "test", srv)
	if err != nil {
		t.Fatal(err)
	}
	addr, err := a.Addr()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a, "http://" + addr.String(), cancel, done
}

func getJSON(t *testing.T, url string, v any) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if v != nil {
		_ = json.Unmarshal(raw, v)
	}
	return resp.StatusCode
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A full round trip with known secrets, an email and SQL in the payloads,
// and upstream errors that echo them: none may appear in any log line.
func TestRoundTripLogHygiene(t *testing.T) {
	t.Parallel()
	cipher, _ := envelope.NewFromBase64(aesKey)
	h := &hubStandin{cipher: cipher, trustID: trustID}
	hubSrv := httptest.NewServer(h)
	t.Cleanup(hubSrv.Close)
	data, imaging := internalStandin(t, "data-access-api"), internalStandin(t, "imaging-api")

	ids := map[string]string{
		"cohort ok":      "00000000-0000-4000-8000-000000000001",
		"cohort fail":    "00000000-0000-4000-8000-000000000002",
		"profile ok":     "00000000-0000-4000-8000-000000000003",
		"profile fail":   "00000000-0000-4000-8000-000000000004",
		"profile bad":    "00000000-0000-4000-8000-000000000005",
		"persist":        "00000000-0000-4000-8000-000000000006",
		"status missing": "00000000-0000-4000-8000-000000000007",
	}
	h.add(ids["cohort ok"], hubapi.CohortQuery, map[string]any{"query_id": "q1", "trust_id": trustID, "query": sql, "encrypted_project_id": "E", "query_name": "n"})
	h.add(ids["cohort fail"], hubapi.CohortQuery, map[string]any{"query_id": "q2", "trust_id": trustID, "query": sql + " fail", "encrypted_project_id": "E", "query_name": "n"})
	h.add(ids["profile ok"], hubapi.UpdateUserProfile, map[string]any{"email": email, "enabled": true})
	h.add(ids["profile fail"], hubapi.UpdateUserProfile, map[string]any{"email": "fail." + email, "enabled": false})
	h.add(ids["profile bad"], hubapi.UpdateUserProfile, map[string]any{"email": "Jane <" + email + ">", "enabled": true})
	h.add(ids["persist"], hubapi.PersistCohort, map[string]any{"project_id": projectID, "trust_id": trustID, "encrypted_project_id": "E", "query": sql})
	h.add(ids["status missing"], hubapi.GetImagingStatus, map[string]any{"imaging_project_id": "P1", "encoded_query": base64.RawURLEncoding.EncodeToString([]byte(sql + " fail"))})

	logs := &syncBuffer{}
	_, base, cancel, done := start(t, testConfig(t, hubSrv.URL, data, imaging, nil), logs)
	waitFor(t, "every result", func() bool {
		for _, id := range ids {
			if _, ok := h.result(id); !ok {
				return false
			}
		}
		return true
	})
	if r, _ := h.result(ids["cohort ok"]); !r.Success {
		t.Fatalf("cohort query failed: %+v", r)
	}
	if r, _ := h.result(ids["profile ok"]); !r.Success {
		t.Fatalf("profile update failed: %+v", r)
	}
	// The hub learns that the query failed and the status's category, never
	// the upstream error's text (which may name tables, SQL or people).
	if r, _ := h.result(ids["cohort fail"]); r.Success || r.Result == nil || strings.Contains(*r.Result, "zebra_marker") ||
		!regexp.MustCompile(`[0-9]{3}: [a-z]`).MatchString(*r.Result) {
		t.Fatalf("the hub should get a failure reduced to its status and category: %+v (%s)", r, deref(r.Result))
	}

	var rep map[string]any
	waitFor(t, "hub status in /health", func() bool {
		return getJSON(t, base+"/health", &rep) == 200 && rep["hub_key_match"] == true
	})
	if rep["status"] != "ok" || rep["hub_version"] != "hub-7" || rep["version"] != "test" {
		t.Fatalf("/health %v", rep)
	}
	waitFor(t, "ready", func() bool { return getJSON(t, base+"/ready", nil) == 200 })
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		"flip_trust_api_hub_up 1",
		`flip_trust_api_tasks_total{outcome="success",task_type="cohort_query"} 1`,
		`flip_trust_api_tasks_total{outcome="failed",task_type="update_user_profile"} 2`,
		`flip_trust_api_journal_entries{state="delivered"}`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	done <- nil // for the cleanup

	out := logs.String()
	if !strings.Contains(out, "Processing task") || !strings.Contains(out, "Authenticated to hub") {
		t.Fatalf("logs look empty:\n%s", out)
	}
	proof := envelope.CohortAdminProof(aesKey)
	for name, secret := range map[string]string{
		"hub API key": apiKey, "internal key": internalKey, "AES key": aesKey, "cohort admin proof": proof,
		"email": "jane.marker", "SQL": "zebra_marker", "SQL text": "FROM omop.person", "bearer token": "Bearer ",
	} {
		if strings.Contains(out, secret) {
			t.Errorf("the %s appears in the logs", name)
		}
	}
}

func TestIdentityMismatchEndsRun(t *testing.T) {
	t.Parallel()
	cipher, _ := envelope.NewFromBase64(aesKey)
	h := &hubStandin{cipher: cipher, trustID: "00000000-0000-4000-8000-000000000099"}
	hubSrv := httptest.NewServer(h)
	t.Cleanup(hubSrv.Close)
	logs := &syncBuffer{}
	_, _, _, done := start(t, testConfig(t, hubSrv.URL, hubSrv.URL, hubSrv.URL, nil), logs)
	select {
	case err := <-done:
		done <- nil
		var mm *hub.IdentityMismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("trust-api kept running for another trust")
	}
	if !strings.Contains(logs.String(), "Wrong kit deployed to this host? Exiting.") {
		t.Fatal("mismatch not explained in the log")
	}
}

func TestSecondInstanceRefused(t *testing.T) {
	t.Parallel()
	cipher, _ := envelope.NewFromBase64(aesKey)
	hubSrv := httptest.NewServer(&hubStandin{cipher: cipher, trustID: trustID})
	t.Cleanup(hubSrv.Close)
	cfg := testConfig(t, hubSrv.URL, hubSrv.URL, hubSrv.URL, nil)
	start(t, cfg, io.Discard)
	srv := httpx.DefaultConfig(cfg.Addr)
	begin := time.Now()
	if _, err := newApp(cfg, slog.New(slog.DiscardHandler), prometheus.NewRegistry(), "test", srv); err == nil {
		t.Fatal("a second trust-api opened the same journal")
	}
	if time.Since(begin) > 10*time.Second {
		t.Fatal("second instance waited too long for the journal lock")
	}
}

func deref(s *string) string {
	if s == nil {
		return "<nil>"
	}
	return *s
}
