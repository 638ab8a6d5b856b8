package flserver

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/flproto"
)

// web serves the task routes behind flproto's authenticator and the admin
// routes, the way dev-hub's composition root mounts them.
type web struct {
	*fixture
	url     string
	secrets map[string]string
}

func newWeb(t *testing.T) *web {
	t.Helper()
	f := newFixture(t, Config{})
	r := chi.NewRouter()
	r.Group(func(r chi.Router) {
		r.Use(flproto.NewAuthenticatorFunc(func() map[string][32]byte {
			out := map[string][32]byte{}
			for _, c := range f.srv.Credentials() {
				out[c.Name] = c.SecretSHA256
			}
			return out
		}).Middleware)
		NewTaskAPI(f.srv, func(r *http.Request) (string, bool) {
			name := flproto.ClientFrom(r.Context())
			return name, name != ""
		}).Mount(r)
	})
	NewAdminAPI(AdminConfig{
		ServerURL:     func() string { return "http://hub.example:8080" },
		SealProjectID: func(p string) (string, error) { return "sealed:" + p, nil },
	}, f.srv, f.arts).Mount(r)
	ts := httptest.NewServer(r)
	t.Cleanup(ts.Close)
	return &web{fixture: f, url: ts.URL, secrets: map[string]string{}}
}

// do sends a request as client ("" for none) and returns the status and body.
func (w *web) do(client, method, path string, body any) (int, []byte) {
	w.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		raw, _ := json.Marshal(b)
		rd = bytes.NewReader(raw)
	}
	req, _ := http.NewRequest(method, w.url+path, rd)
	if client != "" {
		req.Header.Set(flproto.HeaderClient, client)
		req.Header.Set("Authorization", "Bearer "+w.secrets[client])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

func (w *web) register(name string) {
	w.t.Helper()
	code, raw := w.do("", http.MethodPost, "/admin/fl/clients", AddClientRequest{Name: name})
	var reply AddClientReply
	if code != http.StatusOK || json.Unmarshal(raw, &reply) != nil || reply.Secret == "" || reply.ServerURL != "http://hub.example:8080" {
		w.t.Fatalf("register %s: %d %s", name, code, raw)
	}
	w.secrets[name] = reply.Secret
}

func TestTaskRoutesStatusCodes(t *testing.T) {
	t.Parallel()
	w := newWeb(t)
	w.register("A")
	w.register("B")

	if code, _ := w.do("", http.MethodGet, "/fl/v1/tasks/next?wait=0", nil); code != http.StatusUnauthorized {
		t.Fatalf("no credentials: %d", code)
	}
	w.secrets["Mallory"] = w.secrets["A"]
	if code, _ := w.do("Mallory", http.MethodGet, "/fl/v1/tasks/next?wait=0", nil); code != http.StatusUnauthorized {
		t.Fatalf("A's secret under another name: %d", code)
	}
	if code, _ := w.do("A", http.MethodGet, "/fl/v1/tasks/next?wait=abc", nil); code != http.StatusBadRequest {
		t.Fatalf("bad wait: %d", code)
	}
	start := time.Now()
	if code, _ := w.do("A", http.MethodGet, "/fl/v1/tasks/next?wait=0.2", nil); code != http.StatusNoContent || time.Since(start) < 200*time.Millisecond {
		t.Fatalf("empty poll: %d after %s", code, time.Since(start))
	}

	global := w.model([]float64{1}, 0, 0)
	spec := w.spec(flproto.KindTrain, global, "A", "B")
	spec.MinClients = 1
	code, raw := w.do("", http.MethodPost, "/admin/fl/jobs", spec)
	var job Job
	if code != http.StatusOK || json.Unmarshal(raw, &job) != nil {
		t.Fatalf("submit: %d %s", code, raw)
	}
	code, raw = w.do("A", http.MethodGet, "/fl/v1/tasks/next?wait=5", nil)
	var task flproto.Task
	if code != http.StatusOK || json.Unmarshal(raw, &task) != nil || task.JobID != job.ID || task.Model != global {
		t.Fatalf("next: %d %s", code, raw)
	}
	hb := "/fl/v1/tasks/" + task.ID + "/heartbeat"
	if code, raw := w.do("A", http.MethodPost, hb, nil); code != http.StatusOK || !strings.Contains(string(raw), `"cancel":false`) {
		t.Fatalf("heartbeat: %d %s", code, raw)
	}
	if code, _ := w.do("B", http.MethodPost, hb, nil); code != http.StatusNotFound {
		t.Fatalf("B heartbeating A's task: %d", code)
	}
	result := "/fl/v1/tasks/" + task.ID + "/result"
	ok := flproto.Result{Status: "ok", Update: global, SampleCount: 4, Metrics: map[string]float64{"loss": 0.5}}
	for name, c := range map[string]struct {
		client string
		body   any
		want   int
	}{
		"malformed":        {"A", `{"status":`, http.StatusBadRequest},
		"unknown field":    {"A", `{"status":"ok","weights":[1]}`, http.StatusBadRequest},
		"no update":        {"A", flproto.Result{Status: "ok", SampleCount: 1}, http.StatusBadRequest},
		"negative samples": {"A", flproto.Result{Status: "ok", Update: global, SampleCount: -2}, http.StatusBadRequest},
		"another client":   {"B", ok, http.StatusNotFound},
	} {
		if code, raw := w.do(c.client, http.MethodPost, result, c.body); code != c.want || !strings.Contains(string(raw), `"detail"`) {
			t.Errorf("%s: %d %s, want %d with a detail", name, code, raw, c.want)
		}
	}
	if code, _ := w.do("A", http.MethodPost, "/fl/v1/tasks/nope/result", ok); code != http.StatusNotFound {
		t.Fatalf("unknown task: %d", code)
	}
	if code, raw := w.do("A", http.MethodPost, result, ok); code != http.StatusOK {
		t.Fatalf("result: %d %s", code, raw)
	}
	if code, _ := w.do("A", http.MethodPost, result, ok); code != http.StatusOK {
		t.Fatalf("repeat: %d", code)
	}
	// B never polled; the job is cancelled, so B's late result is 409.
	if code, _ := w.do("", http.MethodPost, "/admin/fl/jobs/"+job.ID+"/cancel", nil); code != http.StatusOK {
		t.Fatalf("cancel: %d", code)
	}
	if code, _ := w.do("", http.MethodPost, "/admin/fl/jobs/"+job.ID+"/cancel", nil); code != http.StatusConflict {
		t.Fatalf("second cancel: %d", code)
	}
	j, _ := w.srv.Job(job.ID)
	bTask := j.Rounds[0].Clients[1].Task
	if code, _ := w.do("B", http.MethodPost, "/fl/v1/tasks/"+bTask+"/result", ok); code != http.StatusConflict {
		t.Fatalf("result after close: %d", code)
	}
	if code, raw := w.do("B", http.MethodPost, "/fl/v1/tasks/"+bTask+"/heartbeat", nil); code != http.StatusOK || !strings.Contains(string(raw), `"cancel":true`) {
		t.Fatalf("heartbeat after cancel: %d %s", code, raw)
	}
}

func TestAdminRoutes(t *testing.T) {
	t.Parallel()
	w := newWeb(t)
	w.register("Trust_1")
	if code, _ := w.do("", http.MethodPost, "/admin/fl/clients", AddClientRequest{Name: "Trust_1"}); code != http.StatusConflict {
		t.Fatalf("duplicate client: %d", code)
	}
	if code, _ := w.do("", http.MethodPost, "/admin/fl/clients", AddClientRequest{Name: "bad/name"}); code != http.StatusUnprocessableEntity {
		t.Fatalf("bad name: %d", code)
	}
	code, raw := w.do("", http.MethodGet, "/admin/fl/clients", nil)
	if code != http.StatusOK || !strings.Contains(string(raw), `"name":"Trust_1"`) || strings.Contains(string(raw), w.secrets["Trust_1"]) {
		t.Fatalf("clients: %d %s", code, raw)
	}

	// Artifacts round-trip, content-addressed.
	sum := sha256.Sum256([]byte("model bytes"))
	code, raw = w.do("", http.MethodPost, "/admin/fl/artifacts", "model bytes")
	var m flproto.Manifest
	if code != http.StatusOK || json.Unmarshal(raw, &m) != nil || m.ID != flproto.ArtifactID(hex.EncodeToString(sum[:])) || m.Size != 11 {
		t.Fatalf("put artifact: %d %s", code, raw)
	}
	if code, raw := w.do("", http.MethodGet, "/admin/fl/artifacts/"+m.ID, nil); code != http.StatusOK || string(raw) != "model bytes" {
		t.Fatalf("get artifact: %d %q", code, raw)
	}
	if code, _ := w.do("", http.MethodGet, "/admin/fl/artifacts/sha256:"+strings.Repeat("0", 64), nil); code != http.StatusNotFound {
		t.Fatalf("unknown artifact: %d", code)
	}

	// Validation lists every bad field; project_id is sealed by the hub.
	code, raw = w.do("", http.MethodPost, "/admin/fl/jobs", map[string]any{"kind": "nope", "clients": []string{"ghost"}, "model": "x"})
	var problems struct {
		Detail []string `json:"detail"`
	}
	if code != http.StatusUnprocessableEntity || json.Unmarshal(raw, &problems) != nil || len(problems.Detail) < 5 {
		t.Fatalf("invalid job: %d %s", code, raw)
	}
	global := w.model([]float64{1}, 0, 0)
	spec := w.spec(flproto.KindEvaluate, global, "Trust_1")
	spec.Data.EncryptedProjectID = ""
	req := SubmitRequest{JobSpec: spec, ProjectID: "6a2f41a3-c54c-fce8-32d2-0324e1c32e22"}
	code, raw = w.do("", http.MethodPost, "/admin/fl/jobs", req)
	var job Job
	if code != http.StatusOK || json.Unmarshal(raw, &job) != nil || job.Spec.Data.EncryptedProjectID != "sealed:6a2f41a3-c54c-fce8-32d2-0324e1c32e22" {
		t.Fatalf("submit with project_id: %d %s", code, raw)
	}
	if code, raw := w.do("", http.MethodGet, "/admin/fl/jobs", nil); code != http.StatusOK || !strings.Contains(string(raw), job.ID) {
		t.Fatalf("list: %d %s", code, raw)
	}
	if code, raw := w.do("", http.MethodGet, "/admin/fl/jobs/"+job.ID, nil); code != http.StatusOK || !strings.Contains(string(raw), `"rounds"`) {
		t.Fatalf("show: %d %s", code, raw)
	}
	if code, _ := w.do("", http.MethodGet, "/admin/fl/jobs/unknown", nil); code != http.StatusNotFound {
		t.Fatalf("unknown job: %d", code)
	}
}
