package egress

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"
)

const reviewerKey = "reviewer-key-0123456789abcdef-0123"

func call(t *testing.T, srv *httptest.Server, method, path, key, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestReviewAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{CohortResults: Hold})
	r := chi.NewRouter()
	ReviewRoutes(r, e.gate, reviewerKey)
	srv := httptest.NewServer(r)
	defer srv.Close()

	exact := "{\"a\": 1,\n \"b\":\"é\"}"
	a, _ := e.gate.Submit(req(CohortResults, exact))
	b, _ := e.gate.Submit(req(CohortResults, `{"b":1}`))

	for _, key := range []string{"", "wrong", reviewerKey + "x"} {
		if code, _ := call(t, srv, "GET", "/review/v1/items", key, ""); code != http.StatusUnauthorized {
			t.Fatalf("key %q: %d", key, code)
		}
	}
	code, body := call(t, srv, "GET", "/review/v1/items?state=held", reviewerKey, "")
	var items []Item
	if code != 200 || json.Unmarshal([]byte(body), &items) != nil || len(items) != 2 {
		t.Fatalf("list = %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/review/v1/items/"+a.ID+"/content", reviewerKey, ""); code != 200 || body != exact {
		t.Fatalf("content = %d %q", code, body)
	}
	if code, _ := call(t, srv, "GET", "/review/v1/items/nope", reviewerKey, ""); code != 404 {
		t.Fatalf("unknown = %d", code)
	}
	if code, _ := call(t, srv, "POST", "/review/v1/items/"+a.ID+"/approve", reviewerKey, `{"note":"x"}`); code != 422 {
		t.Fatalf("approve without reviewer = %d", code)
	}
	code, body = call(t, srv, "POST", "/review/v1/items/"+a.ID+"/approve", reviewerKey, `{"reviewer":"ann","note":"ok"}`)
	if code != 200 || !strings.Contains(body, `"state":"released"`) {
		t.Fatalf("approve = %d %s", code, body)
	}
	if code, _ := call(t, srv, "POST", "/review/v1/items/"+a.ID+"/reject", reviewerKey, `{"reviewer":"ann","reason":"x"}`); code != 409 {
		t.Fatalf("reject after approve = %d", code)
	}
	code, body = call(t, srv, "POST", "/review/v1/items/"+b.ID+"/reject", reviewerKey, `{"reviewer":"ann","reason":"too small"}`)
	if code != 200 || !strings.Contains(body, `"reason":"too small"`) {
		t.Fatalf("reject = %d %s", code, body)
	}
	if code, body := call(t, srv, "GET", "/review/v1/items?state=held", reviewerKey, ""); code != 200 || body != "[]\n" && body != "[]" {
		t.Fatalf("held after decisions = %d %s", code, body)
	}
}

func TestMeshAPI(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{FLMetrics: Hold, FLWeights: Refuse})
	r := chi.NewRouter()
	MeshRoutes(r, e.gate, func(next http.Handler) http.Handler { return next })
	srv := httptest.NewServer(r)
	defer srv.Close()

	submit := func(ch, content string) (int, Decision) {
		t.Helper()
		body, _ := json.Marshal(map[string]any{"channel": ch, "task_id": "job-1", "project": "p", "kind": "metrics",
			"content_base64": base64.StdEncoding.EncodeToString([]byte(content)), "rules": []string{"dp"}})
		code, out := call(t, srv, "POST", "/egress/v1/items", "", string(body))
		var d Decision
		_ = json.Unmarshal([]byte(out), &d)
		return code, d
	}
	if code, d := submit("fl_metrics", `{"acc":0.9}`); code != 202 || d.Decision != "held" || d.ID == "" {
		t.Fatalf("held = %d %+v", code, d)
	} else {
		if code, out := call(t, srv, "GET", "/egress/v1/items/"+d.ID, "", ""); code != 200 || !strings.Contains(out, `"state":"held"`) {
			t.Fatalf("status = %d %s", code, out)
		}
		if _, err := e.gate.Approve(d.ID, "ann", ""); err != nil {
			t.Fatal(err)
		}
		if code, out := call(t, srv, "GET", "/egress/v1/items/"+d.ID, "", ""); code != 200 || !strings.Contains(out, `"state":"released","seq":1`) {
			t.Fatalf("status after approve = %d %s", code, out)
		}
	}
	if code, d := submit("fl_weights", "weights"); code != 403 || d.Decision != "refused" || d.Reason != ReasonRefused {
		t.Fatalf("refused = %d %+v", code, d)
	}
	if code, d := submit("task_result", "x"); code != 200 || d.Decision != "released" || d.Seq != 2 {
		t.Fatalf("released = %d %+v", code, d)
	}
	if code, _ := call(t, srv, "POST", "/egress/v1/items", "", `{"channel":"fl_weights","size":3}`); code != 422 {
		t.Fatalf("no digest = %d", code)
	}
}
