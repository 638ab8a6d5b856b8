package hubserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/dev-hub/internal/store"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
)

// clock is a settable test clock.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

type harness struct {
	t      *testing.T
	store  *store.Store
	cipher *envelope.Cipher
	clock  *clock
	url    string
	keys   map[string]string // trust name -> raw API key
	trusts map[string]store.Trust
}

var testKey = bytes.Repeat([]byte{7}, 32)

func newHarness(t *testing.T, cfg Config) *harness {
	t.Helper()
	st, err := store.Open(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cipher, err := envelope.New(testKey)
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{now: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)}
	cfg.Now = clk.Now
	srv := httpx.NewServer(httpx.Config{MaxBodyBytes: MaxBodyBytes}, nil, nil, nil)
	New(cfg, st, cipher, slog.New(slog.DiscardHandler)).Mount(srv.Router())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	h := &harness{t: t, store: st, cipher: cipher, clock: clk, url: ts.URL + "/api", keys: map[string]string{}, trusts: map[string]store.Trust{}}
	h.addTrust("GSTT")
	h.addTrust("KCH")
	return h
}

func (h *harness) addTrust(name string) store.Trust {
	key := "key-for-" + name + "-0123456789abcdef0123456789"
	tr, err := h.store.CreateTrust(store.NewTrust{Name: name, Code: name, KeyHash: sha256.Sum256([]byte(key))}, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	h.keys[name] = key
	h.trusts[name] = tr
	return tr
}

func (h *harness) enqueue(trust string, typ hubapi.TaskType, payload string) store.Task {
	h.t.Helper()
	task, err := h.store.CreateTask(store.NewTask{TrustID: h.trusts[trust].ID, TaskType: typ, Payload: json.RawMessage(payload)}, h.clock.Now())
	if err != nil {
		h.t.Fatal(err)
	}
	h.clock.Add(time.Millisecond)
	return task
}

type response struct {
	status int
	header http.Header
	body   []byte
}

func (r response) json(t *testing.T, v any) {
	t.Helper()
	if err := json.Unmarshal(r.body, v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
}

func (r response) detail(t *testing.T) any {
	t.Helper()
	var e struct{ Detail any }
	r.json(t, &e)
	return e.Detail
}

// do sends a request as trust (its key in the default header); trust "" sends
// no key.
func (h *harness) do(method, path, trust, body string) response {
	h.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, h.url+path, rd)
	if err != nil {
		h.t.Fatal(err)
	}
	if trust != "" {
		req.Header.Set("Authorization", h.keys[trust])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return response{status: resp.StatusCode, header: resp.Header, body: b}
}

func TestAuthentication(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	paths := []struct{ method, path, body string }{
		{http.MethodGet, "/tasks/pending", ""},
		{http.MethodPost, "/trust/heartbeat", ""},
		{http.MethodPost, "/tasks/6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a/result", `{"success":true}`},
		{http.MethodPost, "/cohort/results", `{}`},
	}
	for _, p := range paths {
		t.Run(p.path, func(t *testing.T) {
			r := h.do(p.method, p.path, "", p.body)
			if r.status != http.StatusUnauthorized || r.detail(t) != "Not authenticated: API key is missing." || r.header.Get("WWW-Authenticate") != "ApiKey" {
				t.Fatalf("no key: %d %s %v", r.status, r.body, r.header)
			}
			for name, value := range map[string]string{
				"unknown key": "not-a-registered-key",
				"bearer":      "Bearer " + h.keys["GSTT"],
			} {
				req, _ := http.NewRequest(p.method, h.url+p.path, strings.NewReader(p.body))
				req.Header.Set("Authorization", value)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusUnauthorized || !strings.Contains(string(b), `"Invalid API Key."`) {
					t.Fatalf("%s: %d %s", name, resp.StatusCode, b)
				}
			}
		})
	}
}

func TestCustomKeyHeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{KeyHeader: "X-Trust-Key"})
	req, _ := http.NewRequest(http.MethodGet, h.url+"/tasks/pending", nil)
	req.Header.Set("X-Trust-Key", h.keys["KCH"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var reply hubapi.PendingReply
	if err := json.NewDecoder(resp.Body).Decode(&reply); err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("custom header: %d %v", resp.StatusCode, err)
	}
	if reply.TrustID != h.trusts["KCH"].ID || reply.TrustName != "KCH" {
		t.Fatalf("identity %+v", reply.Identity)
	}
	if r := h.do(http.MethodGet, "/tasks/pending", "KCH", ""); r.status != http.StatusUnauthorized {
		t.Fatalf("key in Authorization while X-Trust-Key is configured: %d", r.status)
	}
}

func TestPendingDispatchSealsPerTaskType(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	q := h.enqueue("GSTT", hubapi.CohortQuery, `{"query_id":"q1"}`)
	cancelled := h.enqueue("GSTT", hubapi.DeleteImaging, `{"imaging_project_id":"x"}`)
	del := h.enqueue("GSTT", hubapi.DeleteImaging, `{"imaging_project_id":"y"}`)
	h.enqueue("KCH", hubapi.CohortQuery, `{"query_id":"other"}`)
	if _, err := h.store.CancelTask(cancelled.ID, h.clock.Now()); err != nil {
		t.Fatal(err)
	}

	r := h.do(http.MethodGet, "/tasks/pending", "GSTT", "")
	if r.status != http.StatusOK {
		t.Fatalf("pending: %d %s", r.status, r.body)
	}
	var reply hubapi.PendingReply
	r.json(t, &reply)
	if reply.TrustID != h.trusts["GSTT"].ID || reply.TrustName != "GSTT" {
		t.Fatalf("identity %+v", reply.Identity)
	}
	if len(reply.Tasks) != 2 || reply.Tasks[0].ID != q.ID || reply.Tasks[1].ID != del.ID {
		t.Fatalf("tasks %+v, want [%s %s]", reply.Tasks, q.ID, del.ID)
	}
	if _, err := time.Parse(time.RFC3339Nano, reply.Tasks[0].CreatedAt); err != nil {
		t.Fatalf("created_at %q: %v", reply.Tasks[0].CreatedAt, err)
	}
	for _, task := range reply.Tasks {
		plain, err := h.cipher.Open(task.Payload, envelope.TaskContext(string(task.TaskType)))
		if err != nil {
			t.Fatalf("open %s with its own context: %v", task.TaskType, err)
		}
		stored, _ := h.store.Task(task.ID)
		if !bytes.Equal(plain, stored.Payload) {
			t.Fatalf("opened payload %s, stored %s", plain, stored.Payload)
		}
		if stored.Status != hubapi.InProgress || stored.DispatchedAt == nil || !stored.UpdatedAt.Equal(*stored.DispatchedAt) {
			t.Fatalf("stored after dispatch: %+v", stored)
		}
	}
	if _, err := h.cipher.Open(reply.Tasks[0].Payload, envelope.TaskContext(string(hubapi.GetImagingStatus))); !errors.Is(err, envelope.ErrAuthentication) {
		t.Fatalf("cohort_query payload opened as get_imaging_status: %v", err)
	}

	r = h.do(http.MethodGet, "/tasks/pending", "GSTT", "")
	if r.status != http.StatusOK || !strings.Contains(string(r.body), `"tasks":[]`) {
		t.Fatalf("second poll: %d %s", r.status, r.body)
	}
	if c, _ := h.store.Task(cancelled.ID); c.Status != hubapi.Cancelled {
		t.Fatalf("cancelled task became %s", c.Status)
	}
}

func TestPendingClaimsAtMostFifty(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	for i := 0; i < 60; i++ {
		h.enqueue("GSTT", hubapi.CohortQuery, fmt.Sprintf(`{"n":%d}`, i))
	}
	for _, want := range []int{50, 10, 0} {
		var reply hubapi.PendingReply
		h.do(http.MethodGet, "/tasks/pending", "GSTT", "").json(t, &reply)
		if len(reply.Tasks) != want {
			t.Fatalf("poll got %d tasks, want %d", len(reply.Tasks), want)
		}
	}
}

func TestResult(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	img := h.enqueue("GSTT", hubapi.CreateImaging, `{}`)
	q := h.enqueue("GSTT", hubapi.CohortQuery, `{}`)
	kch := h.enqueue("KCH", hubapi.CohortQuery, `{}`)
	h.do(http.MethodGet, "/tasks/pending", "GSTT", "")
	h.do(http.MethodGet, "/tasks/pending", "KCH", "")
	waiting := h.enqueue("GSTT", hubapi.CohortQuery, `{}`)
	missing := "6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a"
	tooLong := `{"success":true,"result":"` + strings.Repeat("x", hubapi.MaxResultLength+1) + `"}`

	refusals := []struct {
		name, id, body string
		status         int
		detail         string
	}{
		{"non-uuid id", "not-a-uuid", `{"success":true}`, 422, ""},
		{"path traversal id", "..%2Fother-resource", `{"success":true}`, 422, ""},
		{"not json", img.ID, `{`, 422, ""},
		{"not an object", img.ID, `[true]`, 422, ""},
		{"missing success", img.ID, `{"result":"x"}`, 422, ""},
		{"success not bool", img.ID, `{"success":"yes"}`, 422, ""},
		{"result not string", img.ID, `{"success":true,"result":42}`, 422, ""},
		{"result too long", img.ID, tooLong, 422, ""},
		{"unknown task", missing, `{"success":true}`, 404, "Task " + missing + " not found"},
		{"other trust's task", kch.ID, `{"success":true}`, 403, "Task " + kch.ID + " does not belong to trust 'GSTT'"},
		{"pending task", waiting.ID, `{"success":true}`, 409, "Task " + waiting.ID + " is not in progress (current status: PENDING)"},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			r := h.do(http.MethodPost, "/tasks/"+c.id+"/result", "GSTT", c.body)
			if r.status != c.status {
				t.Fatalf("status %d, want %d: %.300s", r.status, c.status, r.body)
			}
			d := r.detail(t)
			if c.detail != "" && d != c.detail {
				t.Fatalf("detail %v, want %q", d, c.detail)
			}
			if c.status == 422 {
				if list, ok := d.([]any); !ok || len(list) == 0 {
					t.Fatalf("422 detail is not an error list: %v", d)
				}
			}
		})
	}
	if got, _ := h.store.Task(img.ID); got.Status != hubapi.InProgress {
		t.Fatalf("refused posts changed the task: %s", got.Status)
	}

	res := `{"ID":"p1","name":"n","created_users":[],"added_users":[]}`
	body, _ := json.Marshal(hubapi.TaskResult{Success: true, Result: &res})
	r := h.do(http.MethodPost, "/tasks/"+strings.ToUpper(img.ID)+"/result", "GSTT", string(body))
	if r.status != http.StatusOK {
		t.Fatalf("result: %d %s", r.status, r.body)
	}
	var reply hubapi.ResultReply
	r.json(t, &reply)
	if reply.TrustID != h.trusts["GSTT"].ID || reply.TrustName != "GSTT" || reply.Message != "Task "+img.ID+" result recorded" {
		t.Fatalf("reply %+v", reply)
	}
	got, _ := h.store.Task(img.ID)
	if got.Status != hubapi.Completed || !got.NeedsPostProcessing || *got.Result != res || got.ResultPosts != 1 {
		t.Fatalf("completed create_imaging: %+v", got)
	}

	errText := hubapi.TaskErrorResult("502: Failed to connect to remote service", nil)
	body, _ = json.Marshal(hubapi.TaskResult{Success: false, Result: &errText})
	if r := h.do(http.MethodPost, "/tasks/"+q.ID+"/result", "GSTT", string(body)); r.status != http.StatusOK {
		t.Fatalf("failure result: %d %s", r.status, r.body)
	}
	got, _ = h.store.Task(q.ID)
	if got.Status != hubapi.Failed || got.NeedsPostProcessing || *got.Result != errText {
		t.Fatalf("failed task: %+v", got)
	}

	r = h.do(http.MethodPost, "/tasks/"+img.ID+"/result", "GSTT", `{"success":true,"result":null}`)
	if r.status != http.StatusConflict || r.detail(t) != "Task "+img.ID+" is not in progress (current status: COMPLETED)" {
		t.Fatalf("second result: %d %s", r.status, r.body)
	}
	if got, _ := h.store.Task(img.ID); got.ResultPosts != 1 || got.RefusedPosts != 1 || got.Status != hubapi.Completed {
		t.Fatalf("after duplicate post: accepted=%d refused=%d status=%s", got.ResultPosts, got.RefusedPosts, got.Status)
	}
}

func services(n int, mutate func(i int, name string, v map[string]any)) map[string]any {
	out := map[string]any{}
	for i := 0; i < n; i++ {
		name := fmt.Sprintf("svc-%d", i)
		v := map[string]any{"status": "healthy", "version": "1.0", "response_ms": 12}
		if mutate != nil {
			mutate(i, name, v)
		}
		out[name] = v
	}
	return out
}

func TestHeartbeatValidation(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{HubVersion: "dev-hub-test"})
	key32 := strings.Repeat("a", 32)
	cases := []struct {
		name string
		body any
		ok   bool
	}{
		{"one service", map[string]any{"services": services(1, nil)}, true},
		{"exactly 16 services", map[string]any{"services": services(16, nil)}, true},
		{"17 services", map[string]any{"services": services(17, nil)}, false},
		{"empty services", map[string]any{"services": map[string]any{}}, false},
		{"services missing", map[string]any{"collected_at": "2025-03-01T09:00:00Z"}, false},
		{"services not a map", map[string]any{"services": []any{}}, false},
		{"32-char key", map[string]any{"services": map[string]any{key32: map[string]any{"status": "down"}}}, true},
		{"33-char key", map[string]any{"services": map[string]any{key32 + "a": map[string]any{"status": "down"}}}, false},
		{"upper-case key", map[string]any{"services": map[string]any{"Trust-API": map[string]any{"status": "down"}}}, false},
		{"bad status", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["status"] = "fine" })}, false},
		{"status missing", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { delete(v, "status") })}, false},
		{"nulls allowed", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["version"] = nil; v["response_ms"] = nil })}, true},
		{"64-char version", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["version"] = strings.Repeat("v", 64) })}, true},
		{"65-char version", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["version"] = strings.Repeat("v", 65) })}, false},
		{"response_ms max", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["response_ms"] = 1_000_000 })}, true},
		{"response_ms over max", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["response_ms"] = 1_000_001 })}, false},
		{"response_ms negative", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["response_ms"] = -1 })}, false},
		{"response_ms fractional", map[string]any{"services": services(1, func(_ int, _ string, v map[string]any) { v["response_ms"] = 1.5 })}, false},
		{"collected_at accepted", map[string]any{"services": services(1, nil), "collected_at": "2025-03-01T09:00:00.123456+00:00"}, true},
		{"collected_at garbage", map[string]any{"services": services(1, nil), "collected_at": "yesterday"}, false},
		{"body is a list", []any{1, 2}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// Each case uses its own trust so last_heartbeat proves what was stamped.
			name := strings.ReplaceAll(c.name, " ", "_")
			tr := h.addTrust(name)
			body, _ := json.Marshal(c.body)
			r := h.do(http.MethodPost, "/trust/heartbeat", name, string(body))
			got, _ := h.store.Trust(tr.ID)
			if !c.ok {
				if r.status != http.StatusUnprocessableEntity {
					t.Fatalf("status %d, want 422: %s", r.status, r.body)
				}
				if list, ok := r.detail(t).([]any); !ok || len(list) == 0 {
					t.Fatalf("detail is not an error list: %s", r.body)
				}
				if got.LastHeartbeat != nil || got.ServicesHealth != nil {
					t.Fatalf("422 persisted state: %+v", got)
				}
				return
			}
			if r.status != http.StatusOK {
				t.Fatalf("status %d: %s", r.status, r.body)
			}
			if got.LastHeartbeat == nil || got.ServicesHealthAt == nil || !got.ServicesHealthAt.Equal(h.clock.Now()) {
				t.Fatalf("accepted heartbeat not stamped: %+v", got)
			}
			var stored map[string]hubapi.ServiceHealth
			if err := json.Unmarshal(got.ServicesHealth, &stored); err != nil || len(stored) != len(c.body.(map[string]any)["services"].(map[string]any)) {
				t.Fatalf("stored snapshot %s: %v", got.ServicesHealth, err)
			}
		})
	}
}

func TestHeartbeatReplyAndBodyless(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{HubVersion: "v9.9.9"})
	snap := `{"services":{"trust-api":{"status":"healthy","version":"v1","response_ms":null},"omop":{"status":"down","version":null,"response_ms":3}}}`
	r := h.do(http.MethodPost, "/trust/heartbeat", "GSTT", snap)
	if r.status != http.StatusOK {
		t.Fatalf("heartbeat: %d %s", r.status, r.body)
	}
	var reply hubapi.HeartbeatReply
	r.json(t, &reply)
	if reply.TrustID != h.trusts["GSTT"].ID || reply.TrustName != "GSTT" || reply.Message != "Heartbeat recorded" ||
		reply.HubVersion == nil || *reply.HubVersion != "v9.9.9" ||
		reply.AESKeyFingerprint == nil || *reply.AESKeyFingerprint != envelope.Fingerprint(testKey) {
		t.Fatalf("reply %s", r.body)
	}
	first, _ := h.store.Trust(h.trusts["GSTT"].ID)

	h.clock.Add(time.Minute)
	for _, body := range []string{"", "null"} {
		if r := h.do(http.MethodPost, "/trust/heartbeat", "GSTT", body); r.status != http.StatusOK {
			t.Fatalf("bodyless %q: %d %s", body, r.status, r.body)
		}
	}
	got, _ := h.store.Trust(h.trusts["GSTT"].ID)
	if !got.LastHeartbeat.Equal(h.clock.Now()) {
		t.Fatalf("bodyless heartbeat did not stamp: %v", got.LastHeartbeat)
	}
	if !got.ServicesHealthAt.Equal(*first.ServicesHealthAt) || !bytes.Equal(got.ServicesHealth, first.ServicesHealth) {
		t.Fatalf("bodyless heartbeat touched services_health")
	}
	var stored map[string]hubapi.ServiceHealth
	if err := json.Unmarshal(got.ServicesHealth, &stored); err != nil || stored["omop"].Status != "down" || *stored["omop"].ResponseMS != 3 {
		t.Fatalf("stored snapshot %s", got.ServicesHealth)
	}

	// A rejected snapshot leaves the earlier stamp in place.
	h.clock.Add(time.Minute)
	if r := h.do(http.MethodPost, "/trust/heartbeat", "GSTT", `{"services":{}}`); r.status != http.StatusUnprocessableEntity {
		t.Fatalf("empty services: %d", r.status)
	}
	after, _ := h.store.Trust(h.trusts["GSTT"].ID)
	if !after.LastHeartbeat.Equal(*got.LastHeartbeat) {
		t.Fatalf("422 stamped last_heartbeat")
	}
}

func TestCohortResults(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	gstt := h.trusts["GSTT"].ID
	query := "0b5e8f0a-6d4c-4c1e-9f7e-2a6f3b1d9c11"
	valid := fmt.Sprintf(`{"query_id":%q,"trust_id":%q,"created":"2025-03-01","record_count":24,"data":[{"name":"Sex Distribution","results":[{"value":"F","count":12},{"value":"Other","count":12}]}],"suppressed":false,"error":null}`, query, gstt)

	r := h.do(http.MethodPost, "/cohort/results", "KCH", valid)
	if r.status != http.StatusForbidden {
		t.Fatalf("foreign trust_id: %d %s", r.status, r.body)
	}
	for _, bad := range []string{
		`{"trust_id":"` + gstt + `"}`,
		strings.Replace(valid, `"count":12`, `"count":"12"`, 1),
		strings.Replace(valid, `"value":"F"`, `"value":1`, 1),
		strings.Replace(valid, query, "not-a-uuid", 1),
	} {
		if r := h.do(http.MethodPost, "/cohort/results", "GSTT", bad); r.status != http.StatusUnprocessableEntity {
			t.Fatalf("invalid body %s: %d %s", bad, r.status, r.body)
		}
	}
	for i := 0; i < 2; i++ {
		r = h.do(http.MethodPost, "/cohort/results", "GSTT", valid)
		if r.status != http.StatusOK || string(bytes.TrimSpace(r.body)) != `{"message":"Cohort results processed successfully"}` {
			t.Fatalf("cohort results: %d %s", r.status, r.body)
		}
	}
	errEnvelope := fmt.Sprintf(`{"query_id":%q,"trust_id":%q,"created":"2025-03-01","record_count":0,"data":[],"error":"500: query_failed"}`, query, h.trusts["KCH"].ID)
	if r := h.do(http.MethodPost, "/cohort/results", "KCH", errEnvelope); r.status != http.StatusOK {
		t.Fatalf("error envelope: %d %s", r.status, r.body)
	}
	rows, err := h.store.CohortResults(query)
	if err != nil || len(rows) != 2 {
		t.Fatalf("rows %+v %v", rows, err)
	}
	for _, row := range rows {
		switch row.TrustID {
		case gstt:
			if row.ReceivedCount != 2 || row.Data.RecordCount != 24 || len(row.Data.Data) != 1 || row.Data.Data[0].Results[0].Value != "F" {
				t.Fatalf("GSTT row %+v", row)
			}
		default:
			if row.Data.Error == nil || *row.Data.Error != "500: query_failed" || row.ReceivedCount != 1 {
				t.Fatalf("KCH row %+v", row)
			}
		}
	}
}

func TestRateLimits(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{Limits: Limits{PendingPerMin: 2, HeartbeatPerMin: 1, ResultPerMin: 0}})
	for i := 0; i < 2; i++ {
		if r := h.do(http.MethodGet, "/tasks/pending", "GSTT", ""); r.status != http.StatusOK {
			t.Fatalf("poll %d: %d", i, r.status)
		}
	}
	r := h.do(http.MethodGet, "/tasks/pending", "GSTT", "")
	if r.status != http.StatusTooManyRequests || r.detail(t) != "Rate limit exceeded. Try again later." {
		t.Fatalf("third poll: %d %s", r.status, r.body)
	}
	if r := h.do(http.MethodGet, "/tasks/pending", "KCH", ""); r.status != http.StatusOK {
		t.Fatalf("other trust limited by GSTT's traffic: %d", r.status)
	}
	if r := h.do(http.MethodPost, "/trust/heartbeat", "GSTT", ""); r.status != http.StatusOK {
		t.Fatalf("heartbeat has its own budget: %d", r.status)
	}
	if r := h.do(http.MethodPost, "/trust/heartbeat", "GSTT", ""); r.status != http.StatusTooManyRequests {
		t.Fatalf("second heartbeat: %d", r.status)
	}
	for i := 0; i < 100; i++ { // a zero limit is unlimited
		if r := h.do(http.MethodPost, "/tasks/6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a/result", "GSTT", `{"success":true}`); r.status != http.StatusNotFound {
			t.Fatalf("unlimited result route, post %d: %d", i, r.status)
		}
	}
	h.clock.Add(time.Minute)
	if r := h.do(http.MethodGet, "/tasks/pending", "GSTT", ""); r.status != http.StatusOK {
		t.Fatalf("poll in the next window: %d", r.status)
	}
}

func TestSealedPayloadIsDispatchedVerbatim(t *testing.T) {
	t.Parallel()
	h := newHarness(t, Config{})
	other, err := h.cipher.Seal([]byte(`{"imaging_project_id":"x"}`), envelope.TaskContext(string(hubapi.GetImagingStatus)))
	if err != nil {
		t.Fatal(err)
	}
	task, err := h.store.CreateTask(store.NewTask{TrustID: h.trusts["GSTT"].ID, TaskType: hubapi.DeleteImaging, SealedPayload: other}, h.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	var reply hubapi.PendingReply
	h.do(http.MethodGet, "/tasks/pending", "GSTT", "").json(t, &reply)
	if len(reply.Tasks) != 1 || reply.Tasks[0].ID != task.ID || reply.Tasks[0].Payload != other {
		t.Fatalf("dispatched %+v, want the stored envelope verbatim", reply.Tasks)
	}
	if _, err := h.cipher.Open(reply.Tasks[0].Payload, envelope.TaskContext(string(hubapi.DeleteImaging))); !errors.Is(err, envelope.ErrAuthentication) {
		t.Fatalf("a get_imaging_status seal opened as delete_imaging: %v", err)
	}
}
