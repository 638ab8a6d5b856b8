package admin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/dev-hub/internal/store"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
)

const (
	token  = "admin-token-0123456789abcdef"
	aesB64 = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
)

type harness struct {
	t      *testing.T
	url    string
	store  *store.Store
	cipher *envelope.Cipher
	dbPath string
	now    time.Time
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	h := &harness{t: t, dbPath: filepath.Join(t.TempDir(), "hub.db"), now: time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)}
	st, err := store.Open(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = st.Close() })
	cipher, err := envelope.NewFromBase64(aesB64)
	if err != nil {
		t.Fatal(err)
	}
	h.store, h.cipher = st, cipher
	srv := httpx.NewServer(httpx.Config{}, nil, nil, nil)
	New(Config{
		Token: token, AESKeyBase64: aesB64,
		HubAPIURL:    func() string { return "http://hub.example:8080/api" },
		StaleTimeout: 30 * time.Minute, MaxRetries: 3,
		Now: func() time.Time { return h.now },
	}, st, cipher, slog.New(slog.DiscardHandler)).Mount(srv.Router())
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	h.url = ts.URL
	return h
}

func (h *harness) call(method, path, auth string, body any, out any) int {
	h.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, h.url+path, rd)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			h.t.Fatalf("%s %s: decode %s: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

func (h *harness) do(method, path string, body any, out any) int {
	h.t.Helper()
	return h.call(method, path, "Bearer "+token, body, out)
}

func (h *harness) register(name string) CreateTrustReply {
	h.t.Helper()
	var reply CreateTrustReply
	if code := h.do(http.MethodPost, "/admin/trusts", map[string]string{"name": name}, &reply); code != http.StatusOK {
		h.t.Fatalf("register %s: HTTP %d", name, code)
	}
	return reply
}

func TestAdminAuth(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for name, auth := range map[string]string{
		"missing":      "",
		"wrong token":  "Bearer not-the-token",
		"no scheme":    token,
		"other scheme": "Basic " + token,
		"empty bearer": "Bearer ",
	} {
		t.Run(name, func(t *testing.T) {
			if code := h.call(http.MethodGet, "/admin/trusts", auth, nil, nil); code != http.StatusUnauthorized {
				t.Fatalf("HTTP %d, want 401", code)
			}
		})
	}
	if code := h.do(http.MethodGet, "/admin/trusts", nil, nil); code != http.StatusOK {
		t.Fatalf("right token: HTTP %d", code)
	}
}

func TestAdminRefusesEverythingWithoutAToken(t *testing.T) {
	t.Parallel()
	st, err := store.Open(filepath.Join(t.TempDir(), "hub.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cipher, _ := envelope.NewFromBase64(aesB64)
	srv := httpx.NewServer(httpx.Config{}, nil, nil, nil)
	New(Config{}, st, cipher, slog.New(slog.DiscardHandler)).Mount(srv.Router())
	req := httptest.NewRequest(http.MethodGet, "/admin/trusts", nil)
	req.Header.Set("Authorization", "Bearer ")
	rec := httptest.NewRecorder()
	srv.Handler().ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized {
		t.Fatalf("unset token admitted a request: %d", rec.Code)
	}
}

func parseKit(t *testing.T, text string) map[string]string {
	t.Helper()
	kit := map[string]string{}
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("kit line %q is not NAME=value", line)
		}
		kit[k] = v
	}
	return kit
}

func TestRegisterTrust(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	reply := h.register("GSTT")
	other := h.register("KCH")

	for _, k := range []string{reply.APIKey, reply.InternalServiceKey, other.APIKey} {
		if len(k) < 32 {
			t.Fatalf("minted key %d characters, want at least 32", len(k))
		}
	}
	if reply.APIKey == reply.InternalServiceKey || reply.APIKey == other.APIKey {
		t.Fatal("minted keys repeat")
	}
	kit := parseKit(t, reply.KitEnv)
	want := map[string]string{
		"TRUST_API_KEY":              reply.APIKey,
		"TRUST_API_KEY_HEADER":       "Authorization",
		"TRUST_INTERNAL_SERVICE_KEY": reply.InternalServiceKey,
		"AES_KEY_BASE64":             aesB64,
		"CENTRAL_HUB_API_URL":        "http://hub.example:8080/api",
		"EXPECTED_TRUST_ID":          reply.TrustID,
	}
	for k, v := range want {
		if kit[k] != v {
			t.Errorf("kit %s = %q, want %q", k, kit[k], v)
		}
	}

	tr, err := h.store.Trust(reply.TrustID)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(reply.APIKey))
	if tr.APIKeySHA256 != hex.EncodeToString(sum[:]) || tr.Name != "GSTT" || tr.Code != "GSTT" {
		t.Fatalf("stored trust %+v", tr)
	}
	// Neither plaintext key reaches the disk.
	if err := h.store.Close(); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(h.dbPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, secret := range []string{reply.APIKey, reply.InternalServiceKey} {
		if bytes.Contains(raw, []byte(secret)) {
			t.Fatal("a plaintext trust key is stored in the hub database")
		}
	}
}

func TestRegisterTrustRefusals(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.register("GSTT")
	cases := []struct {
		name string
		body any
		want int
	}{
		{"duplicate name", map[string]string{"name": "GSTT"}, http.StatusConflict},
		{"empty name", map[string]string{"name": ""}, http.StatusUnprocessableEntity},
		{"name with a quote", map[string]string{"name": "x'y"}, http.StatusUnprocessableEntity},
		{"bad hub url", map[string]string{"name": "N1", "hub_api_url": "ftp://x"}, http.StatusUnprocessableEntity},
		{"not json", "nope", http.StatusUnprocessableEntity},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if code := h.do(http.MethodPost, "/admin/trusts", c.body, nil); code != c.want {
				t.Fatalf("HTTP %d, want %d", code, c.want)
			}
		})
	}
}

func TestRegisterTrustHubURL(t *testing.T) {
	t.Parallel()
	cases := map[string]string{
		"http://dev-hub:8080":       "http://dev-hub:8080/api",
		"http://dev-hub:8080/":      "http://dev-hub:8080/api",
		"https://hub.example/api/":  "https://hub.example/api",
		"http://10.0.0.1:9/prefix/": "http://10.0.0.1:9/prefix/api",
	}
	h := newHarness(t)
	i := 0
	for in, want := range cases {
		i++
		var reply CreateTrustReply
		if code := h.do(http.MethodPost, "/admin/trusts", map[string]string{"name": "T" + string(rune('A'+i)), "hub_api_url": in}, &reply); code != http.StatusOK {
			t.Fatalf("%s: HTTP %d", in, code)
		}
		if got := parseKit(t, reply.KitEnv)["CENTRAL_HUB_API_URL"]; got != want {
			t.Errorf("hub_api_url %q gave %q, want %q", in, got, want)
		}
	}
}

func TestTasks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gstt := h.register("GSTT")
	h.register("KCH")

	refusals := []struct {
		name string
		body map[string]any
		want int
	}{
		{"unknown type", map[string]any{"trust_name": "GSTT", "task_type": "train_model", "payload": map[string]any{}}, 422},
		{"payload not an object", map[string]any{"trust_name": "GSTT", "task_type": "delete_imaging", "payload": []int{1}}, 422},
		{"no trust", map[string]any{"task_type": "delete_imaging", "payload": map[string]any{}}, 422},
		{"both trust fields", map[string]any{"trust_name": "GSTT", "trust_id": gstt.TrustID, "task_type": "delete_imaging", "payload": map[string]any{}}, 422},
		{"unknown trust", map[string]any{"trust_name": "nobody", "task_type": "delete_imaging", "payload": map[string]any{}}, 404},
		{"payload and sealed", map[string]any{"trust_name": "GSTT", "task_type": "delete_imaging", "payload": map[string]any{}, "sealed_payload": "x"}, 422},
	}
	for _, c := range refusals {
		t.Run(c.name, func(t *testing.T) {
			if code := h.do(http.MethodPost, "/admin/tasks", c.body, nil); code != c.want {
				t.Fatalf("HTTP %d, want %d", code, c.want)
			}
		})
	}

	var task TaskView
	if code := h.do(http.MethodPost, "/admin/tasks", map[string]any{
		"trust_id": gstt.TrustID, "task_type": "persist_cohort",
		"payload": map[string]any{"query_id": "q-1", "query": "SELECT 1"},
	}, &task); code != http.StatusOK {
		t.Fatalf("submit: HTTP %d", code)
	}
	if task.Status != hubapi.Pending || task.TrustName != "GSTT" || task.QueryID == nil || *task.QueryID != "q-1" {
		t.Fatalf("task row %+v", task)
	}
	var shown TaskView
	if code := h.do(http.MethodGet, "/admin/tasks/"+task.ID, nil, &shown); code != http.StatusOK {
		t.Fatalf("show: HTTP %d", code)
	}
	if string(shown.Payload) != `{"query":"SELECT 1","query_id":"q-1"}` {
		t.Fatalf("shown payload %s", shown.Payload)
	}
	if code := h.do(http.MethodGet, "/admin/tasks/6f1c1b7e-3c1f-4d3e-9a55-0b8d7c1e2f3a", nil, nil); code != http.StatusNotFound {
		t.Fatalf("unknown task: HTTP %d", code)
	}

	var sealed TaskView
	if code := h.do(http.MethodPost, "/admin/tasks", map[string]any{"trust_name": "KCH", "task_type": "delete_imaging", "sealed_payload": "opaque"}, &sealed); code != http.StatusOK {
		t.Fatalf("sealed submit: HTTP %d", code)
	}
	kch, _ := h.store.TrustByName("KCH")
	claimed, err := h.store.ClaimPending(kch.ID, 50, h.now, func(store.Task) error { return nil })
	if err != nil || len(claimed) != 1 || claimed[0].SealedPayload != "opaque" {
		t.Fatalf("sealed task stored as %+v (%v)", claimed, err)
	}

	var list []TaskView
	h.do(http.MethodGet, "/admin/tasks?trust=GSTT", nil, &list)
	if len(list) != 1 || list[0].ID != task.ID || list[0].Payload != nil {
		t.Fatalf("list by trust name: %+v", list)
	}
	h.do(http.MethodGet, "/admin/tasks?trust="+kch.ID+"&status=in_progress", nil, &list)
	if len(list) != 1 || list[0].ID != sealed.ID {
		t.Fatalf("list by trust id and status: %+v", list)
	}
	if code := h.do(http.MethodGet, "/admin/tasks?status=DONE", nil, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("bad status filter: HTTP %d", code)
	}

	var cancelled TaskView
	if code := h.do(http.MethodPost, "/admin/tasks/"+task.ID+"/cancel", nil, &cancelled); code != http.StatusOK || cancelled.Status != hubapi.Cancelled {
		t.Fatalf("cancel: HTTP %d %+v", code, cancelled)
	}
	if code := h.do(http.MethodPost, "/admin/tasks/"+sealed.ID+"/cancel", nil, nil); code != http.StatusConflict {
		t.Fatalf("cancel IN_PROGRESS: HTTP %d", code)
	}
}

func TestCohortQueryBuilder(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gstt := h.register("GSTT")
	project := "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	var task TaskView
	if code := h.do(http.MethodPost, "/admin/cohort-queries", map[string]any{
		"trust_name": "GSTT", "query": "SELECT person_id FROM omop.person", "project_id": project, "query_name": "q",
	}, &task); code != http.StatusOK {
		t.Fatalf("submit: HTTP %d", code)
	}
	stored, err := h.store.Task(task.ID)
	if err != nil {
		t.Fatal(err)
	}
	var p CohortQueryPayload
	if err := json.Unmarshal(stored.Payload, &p); err != nil {
		t.Fatal(err)
	}
	if stored.TaskType != hubapi.CohortQuery || p.TrustID != gstt.TrustID || p.Query != "SELECT person_id FROM omop.person" || p.QueryName != "q" ||
		task.QueryID == nil || p.QueryID != *task.QueryID || !hubapi.ValidTaskID(p.QueryID) {
		t.Fatalf("payload %+v task %+v", p, task)
	}
	plain, err := h.cipher.Open(p.EncryptedProjectID, envelope.ProjectIDContext)
	if err != nil || string(plain) != project {
		t.Fatalf("encrypted_project_id opens to %q (%v), want %s", plain, err, project)
	}
	if _, err := h.cipher.Open(p.EncryptedProjectID, envelope.TaskContext("cohort_query")); err == nil {
		t.Fatal("encrypted_project_id opened under a task context")
	}
	for name, body := range map[string]map[string]any{
		"no query":       {"trust_name": "GSTT"},
		"bad project id": {"trust_name": "GSTT", "query": "SELECT 1", "project_id": "p1"},
	} {
		if code := h.do(http.MethodPost, "/admin/cohort-queries", body, nil); code != http.StatusUnprocessableEntity {
			t.Errorf("%s: HTTP %d, want 422", name, code)
		}
	}
}

func TestTrustListAndCohortResults(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	gstt := h.register("GSTT")
	kch := h.register("KCH")
	snap := json.RawMessage(`{"trust-api":{"status":"healthy","version":"v1","response_ms":null}}`)
	if _, err := h.store.Heartbeat(gstt.TrustID, snap, h.now.Add(-10*time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.Heartbeat(kch.TrustID, nil, h.now.Add(-31*time.Second)); err != nil {
		t.Fatal(err)
	}
	var trusts []TrustView
	h.do(http.MethodGet, "/admin/trusts", nil, &trusts)
	if len(trusts) != 2 {
		t.Fatalf("trusts %+v", trusts)
	}
	byName := map[string]TrustView{}
	for _, tr := range trusts {
		byName[tr.Name] = tr
	}
	if g := byName["GSTT"]; !g.Online || !strings.Contains(string(g.ServicesHealth), `"trust-api"`) || g.ServicesHealthAt == nil {
		t.Fatalf("GSTT %+v", g)
	}
	if k := byName["KCH"]; k.Online || string(k.ServicesHealth) != "null" {
		t.Fatalf("KCH (heartbeat 31 s ago, bodyless) %+v", k)
	}

	query := "0b5e8f0a-6d4c-4c1e-9f7e-2a6f3b1d9c11"
	if _, err := h.store.UpsertCohortResult(hubapi.CohortResults{QueryID: query, TrustID: gstt.TrustID, Created: "2025-03-01", RecordCount: 120,
		Data: []hubapi.CohortStat{{Name: "Counts", Results: []hubapi.CohortValue{{Value: "person_id", Count: 120}}}}}, h.now); err != nil {
		t.Fatal(err)
	}
	var rows []CohortResultView
	if code := h.do(http.MethodGet, "/admin/cohort-results?query_id="+strings.ToUpper(query), nil, &rows); code != http.StatusOK {
		t.Fatalf("cohort results: HTTP %d", code)
	}
	if len(rows) != 1 || rows[0].RecordCount != 120 || rows[0].ReceivedCount != 1 || len(rows[0].Data) != 1 || rows[0].TrustID != gstt.TrustID {
		t.Fatalf("rows %+v", rows)
	}
	if code := h.do(http.MethodGet, "/admin/cohort-results?query_id=nope", nil, nil); code != http.StatusUnprocessableEntity {
		t.Fatalf("bad query id: HTTP %d", code)
	}
}

func TestSweepEndpoint(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	reply := h.register("GSTT")
	task, err := h.store.CreateTask(store.NewTask{TrustID: reply.TrustID, TaskType: hubapi.DeleteImaging, Payload: json.RawMessage(`{}`)}, h.now)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.store.ClaimPending(reply.TrustID, 50, h.now.Add(-31*time.Minute), func(store.Task) error { return nil }); err != nil {
		t.Fatal(err)
	}
	var rep store.SweepReport
	if code := h.do(http.MethodPost, "/admin/sweep", nil, &rep); code != http.StatusOK {
		t.Fatalf("sweep: HTTP %d", code)
	}
	if len(rep.Requeued) != 1 || rep.Requeued[0] != task.ID || len(rep.Failed) != 0 {
		t.Fatalf("sweep report %+v", rep)
	}
}
