package hub

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/hubapi"
)

const (
	trustID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	taskID  = "2b8e4f5c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
	apiKey  = "trust-api-key-value"
)

type hit struct {
	method, path string
	body         []byte
	key          string
}

type fakeHub struct {
	mu     sync.Mutex
	hits   []hit
	answer func(n int, h hit) (int, string)
}

func (f *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	h := hit{r.Method, r.URL.Path, body, r.Header.Get("X-Hub-Key")}
	f.mu.Lock()
	f.hits = append(f.hits, h)
	n := len(f.hits)
	f.mu.Unlock()
	code, text := 200, `{"trust_id":"`+trustID+`","trust_name":"GSTT","message":"ok"}`
	if f.answer != nil {
		code, text = f.answer(n, h)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, text)
}

func (f *fakeHub) all() []hit {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]hit(nil), f.hits...)
}

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) { l.mu.Lock(); defer l.mu.Unlock(); return l.b.Write(p) }
func (l *logBuf) String() string              { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func newClient(t *testing.T, f *fakeHub, expected, own string) (*Client, *logBuf) {
	t.Helper()
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	logs := &logBuf{}
	c := New(Options{BaseURL: srv.URL + "/api/", Key: apiKey, KeyHeader: "X-Hub-Key", ExpectedTrustID: expected, OwnFingerprint: own, Timeout: 2 * time.Second},
		slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	return c, logs
}

func snapshot() *hubapi.HealthSnapshot {
	return &hubapi.HealthSnapshot{Services: map[string]hubapi.ServiceHealth{"trust-api": {Status: hubapi.HealthHealthy}}}
}

func TestHeartbeat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		snap      *hubapi.HealthSnapshot
		answer    func(n int, h hit) (int, string)
		wantHits  int
		wantCode  int // 0 = success
		wantBody  []bool
		wantInLog string
	}{
		{name: "bodyless before first collection", wantHits: 1, wantBody: []bool{false}},
		{name: "snapshot attached", snap: snapshot(), wantHits: 1, wantBody: []bool{true}},
		{
			name: "422 retried once bodyless", snap: snapshot(),
			answer: func(n int, _ hit) (int, string) {
				if n == 1 {
					return 422, `{"detail":[{"loc":["body","services"],"msg":"bad"}]}` + strings.Repeat("x", 600)
				}
				return 200, `{"trust_id":"` + trustID + `","trust_name":"GSTT","message":"Heartbeat recorded"}`
			},
			wantHits: 2, wantBody: []bool{true, false},
			wantInLog: `Hub rejected health snapshot (HTTP 422): {\"detail\":[{\"loc\":[\"body\",\"services\"],\"msg\":\"bad\"}]}`,
		},
		{
			name: "422 then failing retry", snap: snapshot(),
			answer:   func(n int, _ hit) (int, string) { return 422, `{}` },
			wantHits: 2, wantCode: 422, wantBody: []bool{true, false},
		},
		{
			name: "401 not retried", snap: snapshot(),
			answer:   func(int, hit) (int, string) { return 401, `{"detail":"Invalid API Key."}` },
			wantHits: 1, wantCode: 401, wantBody: []bool{true},
		},
		{
			name: "500 not retried", answer: func(int, hit) (int, string) { return 500, `oops` },
			wantHits: 1, wantCode: 500, wantBody: []bool{false},
		},
		{
			name: "non-JSON 2xx tolerated", answer: func(int, hit) (int, string) { return 200, `OK` },
			wantHits: 1, wantBody: []bool{false},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := &fakeHub{answer: tc.answer}
			c, logs := newClient(t, f, "", "abc")
			err := c.Heartbeat(context.Background(), tc.snap)
			var se *StatusError
			switch {
			case tc.wantCode == 0 && err != nil:
				t.Fatalf("heartbeat: %v", err)
			case tc.wantCode != 0 && (!errors.As(err, &se) || se.Code != tc.wantCode):
				t.Fatalf("heartbeat error %v, want HTTP %d", err, tc.wantCode)
			}
			hits := f.all()
			if len(hits) != tc.wantHits {
				t.Fatalf("%d hub calls, want %d", len(hits), tc.wantHits)
			}
			for i, h := range hits {
				if h.method != http.MethodPost || h.path != "/api/trust/heartbeat" || h.key != apiKey {
					t.Fatalf("call %d: %s %s key=%q", i, h.method, h.path, h.key)
				}
				if (len(h.body) > 0) != tc.wantBody[i] {
					t.Fatalf("call %d body %q, want body=%v", i, h.body, tc.wantBody[i])
				}
			}
			if tc.wantInLog != "" {
				if !strings.Contains(logs.String(), tc.wantInLog) {
					t.Fatalf("log lacks %q:\n%s", tc.wantInLog, logs)
				}
				if strings.Contains(logs.String(), strings.Repeat("x", 500)) {
					t.Fatal("422 body not truncated to 500 characters")
				}
			}
		})
	}
}

func TestIdentityCheck(t *testing.T) {
	t.Parallel()
	noID := func(n int, _ hit) (int, string) {
		if n == 1 {
			return 200, `{"message":"Heartbeat recorded"}`
		}
		return 200, `{"trust_id":"` + trustID + `","trust_name":"GSTT","tasks":[]}`
	}
	t.Run("mismatch is a typed error", func(t *testing.T) {
		t.Parallel()
		c, logs := newClient(t, &fakeHub{}, "00000000-0000-4000-8000-000000000000", "")
		err := c.Heartbeat(context.Background(), nil)
		var mm *IdentityMismatchError
		if !errors.As(err, &mm) || mm.TrustID != trustID || mm.TrustName != "GSTT" {
			t.Fatalf("got %v", err)
		}
		if !strings.Contains(logs.String(), "kit declares EXPECTED_TRUST_ID=00000000-0000-4000-8000-000000000000. Wrong kit deployed to this host? Exiting.") {
			t.Fatalf("FLIP line missing:\n%s", logs)
		}
		if _, err := c.Pending(context.Background()); !errors.As(err, &mm) {
			t.Fatalf("poll after mismatch: %v", err)
		}
	})
	t.Run("match logs once", func(t *testing.T) {
		t.Parallel()
		c, logs := newClient(t, &fakeHub{}, strings.ToUpper(trustID), "")
		for range 3 {
			if err := c.Heartbeat(context.Background(), nil); err != nil {
				t.Fatal(err)
			}
		}
		if n := strings.Count(logs.String(), "Authenticated to hub as trust"); n != 1 {
			t.Fatalf("announced %d times", n)
		}
	})
	t.Run("unset expected still announces", func(t *testing.T) {
		t.Parallel()
		c, logs := newClient(t, &fakeHub{}, "", "")
		if err := c.Heartbeat(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(logs.String(), `Authenticated to hub as trust \"GSTT\" (`+trustID+`).`) {
			t.Fatalf("log:\n%s", logs)
		}
	})
	t.Run("body without identity is skipped, the poll is checked", func(t *testing.T) {
		t.Parallel()
		c, _ := newClient(t, &fakeHub{answer: noID}, "00000000-0000-4000-8000-000000000000", "")
		if err := c.Heartbeat(context.Background(), nil); err != nil {
			t.Fatalf("identity-less heartbeat: %v", err)
		}
		var mm *IdentityMismatchError
		if _, err := c.Pending(context.Background()); !errors.As(err, &mm) {
			t.Fatalf("poll: %v", err)
		}
	})
}

func TestPending(t *testing.T) {
	t.Parallel()
	t.Run("tasks", func(t *testing.T) {
		t.Parallel()
		f := &fakeHub{answer: func(int, hit) (int, string) {
			return 200, `{"trust_id":"` + trustID + `","trust_name":"GSTT","tasks":[{"id":"` + taskID + `","task_type":"cohort_query","payload":"P","created_at":"2025-01-01T00:00:00"}]}`
		}}
		c, _ := newClient(t, f, "", "")
		tasks, err := c.Pending(context.Background())
		if err != nil || len(tasks) != 1 || tasks[0].ID != taskID || tasks[0].TaskType != hubapi.CohortQuery || tasks[0].Payload != "P" {
			t.Fatalf("tasks %+v err %v", tasks, err)
		}
		if h := f.all()[0]; h.method != http.MethodGet || h.path != "/api/tasks/pending" || h.key != apiKey {
			t.Fatalf("poll call %+v", h)
		}
	})
	for _, code := range []int{201, 401, 500} {
		t.Run("non-200 is empty", func(t *testing.T) {
			t.Parallel()
			f := &fakeHub{answer: func(int, hit) (int, string) {
				return code, `{"trust_id":"x","trust_name":"y","tasks":[{"id":"` + taskID + `"}]}`
			}}
			c, _ := newClient(t, f, "", "")
			tasks, err := c.Pending(context.Background())
			var se *StatusError
			if len(tasks) != 0 || !errors.As(err, &se) || se.Code != code {
				t.Fatalf("code %d: tasks %v err %v", code, tasks, err)
			}
		})
	}
	t.Run("unreachable is empty", func(t *testing.T) {
		t.Parallel()
		srv := httptest.NewServer(http.NotFoundHandler())
		srv.Close()
		c := New(Options{BaseURL: srv.URL, Key: apiKey}, slog.New(slog.DiscardHandler))
		if tasks, err := c.Pending(context.Background()); err == nil || len(tasks) != 0 {
			t.Fatalf("tasks %v err %v", tasks, err)
		}
	})
}

func TestPostResult(t *testing.T) {
	t.Parallel()
	f := &fakeHub{}
	c, _ := newClient(t, f, "", "")
	r := `{"error": "x"}`
	if err := c.PostResult(context.Background(), taskID, hubapi.TaskResult{Success: false, Result: &r}); err != nil {
		t.Fatal(err)
	}
	if err := c.PostCohortResults(context.Background(), []byte(`{"query_id":"q"}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.PostResult(context.Background(), "../x", hubapi.TaskResult{}); err == nil {
		t.Fatal("non-UUID task id accepted in a path")
	}
	hits := f.all()
	if len(hits) != 2 || hits[0].path != "/api/tasks/"+taskID+"/result" || string(hits[0].body) != `{"success":false,"result":"{\"error\": \"x\"}"}` {
		t.Fatalf("result post %+v", hits)
	}
	if hits[1].path != "/api/cohort/results" || string(hits[1].body) != `{"query_id":"q"}` || hits[1].key != apiKey {
		t.Fatalf("cohort post %+v", hits[1])
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 1, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		value string
		want  time.Duration
		ok    bool
	}{
		{"", 0, false},
		{"3", 3 * time.Second, true},
		{"0.5", 500 * time.Millisecond, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"soon", 0, false},
	}
	for _, tc := range tests {
		t.Run(tc.value, func(t *testing.T) {
			e := &StatusError{Header: http.Header{"Retry-After": {tc.value}}}
			got, ok := e.RetryAfter(now)
			if got != tc.want || ok != tc.ok {
				t.Fatalf("got %v %v", got, ok)
			}
		})
	}
}

func TestHubStatus(t *testing.T) {
	t.Parallel()
	ver, match, other := "v1.2.3", "abc123abc123", "ffffffffffff"
	var fp *string
	f := &fakeHub{answer: func(int, hit) (int, string) {
		if fp == nil {
			return 200, `{"trust_id":"` + trustID + `","trust_name":"GSTT","message":"m"}`
		}
		return 200, `{"trust_id":"` + trustID + `","trust_name":"GSTT","message":"m","hub_version":"` + ver + `","aes_key_fingerprint":"` + *fp + `"}`
	}}
	c, logs := newClient(t, f, "", match)
	hb := func() StatusView {
		t.Helper()
		if err := c.Heartbeat(context.Background(), nil); err != nil {
			t.Fatal(err)
		}
		return c.Status().Current()
	}
	if v := hb(); v.KeyMatch != nil || v.HubVersion != nil {
		t.Fatalf("older hub: %+v", v)
	}
	fp = &match
	if v := hb(); v.KeyMatch == nil || !*v.KeyMatch || *v.HubVersion != ver || *v.KeyFingerprint != match {
		t.Fatalf("match: %+v", v)
	}
	fp = &other
	hb()
	if v := hb(); v.KeyMatch == nil || *v.KeyMatch {
		t.Fatalf("mismatch: %+v", v)
	}
	if n := strings.Count(logs.String(), "AES key differs"); n != 1 {
		t.Fatalf("mismatch warned %d times", n)
	}
	f.answer = func(int, hit) (int, string) { return 500, "" }
	_ = c.Heartbeat(context.Background(), nil)
	if v := c.Status().Current(); v.HubVersion != nil || v.KeyMatch != nil {
		t.Fatalf("failed heartbeat kept status %+v", v)
	}
}
