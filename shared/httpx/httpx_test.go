package httpx

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
)

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func testLogger() (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewJSONHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

func detailOf(t *testing.T, body []byte) any {
	t.Helper()
	var eb struct {
		Detail any `json:"detail"`
	}
	if err := json.Unmarshal(body, &eb); err != nil {
		t.Fatalf("body %q is not JSON: %v", body, err)
	}
	return eb.Detail
}

func do(t *testing.T, h http.Handler, method, path string, body io.Reader) *httptest.ResponseRecorder {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(method, path, body))
	return rec
}

func TestProbes(t *testing.T) {
	t.Parallel()
	s := NewServer(DefaultConfig(":0"), nil, nil, nil)
	if rec := do(t, s.Handler(), "GET", "/health", nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"status":"ok"`) {
		t.Fatalf("default health: %d %s", rec.Code, rec.Body)
	}
	rec := do(t, s.Handler(), "GET", "/ready", nil)
	if rec.Code != 200 || strings.TrimSpace(rec.Body.String()) != `{"ready":true}` {
		t.Fatalf("ready: %d %s", rec.Code, rec.Body)
	}
	s.SetReady(false, "journal not open")
	rec = do(t, s.Handler(), "GET", "/ready", nil)
	if rec.Code != 503 || strings.TrimSpace(rec.Body.String()) != `{"ready":false,"reason":"journal not open"}` {
		t.Fatalf("not ready: %d %s", rec.Code, rec.Body)
	}
	s.SetReady(true, "")
	if rec := do(t, s.Handler(), "GET", "/ready", nil); rec.Code != 200 {
		t.Fatalf("ready again: %d", rec.Code)
	}

	degraded := NewServer(DefaultConfig(":0"), nil, nil, func(ctx context.Context) (int, any) {
		return http.StatusServiceUnavailable, map[string]any{"status": "degraded", "services": map[string]string{"db": "down"}}
	})
	rec = do(t, degraded.Handler(), "GET", "/health", nil)
	if rec.Code != 503 || !strings.Contains(rec.Body.String(), `"status":"degraded"`) {
		t.Fatalf("custom health: %d %s", rec.Code, rec.Body)
	}
	if rec.Header().Get("Content-Type") != "application/json" {
		t.Errorf("content type %q", rec.Header().Get("Content-Type"))
	}
}

func TestRoutesAndMetrics(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	s := NewServer(DefaultConfig(":0"), nil, reg, nil)
	var mwRan bool
	s.Router().Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { mwRan = true; next.ServeHTTP(w, r) })
	})
	s.Router().Get("/items/{id}", Handle(func(r *http.Request) (map[string]string, error) {
		return map[string]string{"id": chi.URLParam(r, "id")}, nil
	}))
	for _, id := range []string{"1", "2", "3"} {
		if rec := do(t, s.Handler(), "GET", "/items/"+id, nil); rec.Code != 200 || !strings.Contains(rec.Body.String(), `"id":"`+id+`"`) {
			t.Fatalf("item %s: %d %s", id, rec.Code, rec.Body)
		}
	}
	if !mwRan {
		t.Error("middleware added through Router().Use did not run")
	}
	rec := do(t, s.Handler(), "GET", "/nope/"+strings.Repeat("x", 10), nil)
	if rec.Code != 404 || detailOf(t, rec.Body.Bytes()) != "Not Found" {
		t.Fatalf("404: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s.Handler(), "POST", "/items/1", nil); rec.Code != 405 {
		t.Fatalf("405: %d %s", rec.Code, rec.Body)
	}
	rec = do(t, s.Handler(), "GET", "/metrics", nil)
	if rec.Code != 200 {
		t.Fatalf("metrics: %d", rec.Code)
	}
	body := rec.Body.String()
	for _, want := range []string{
		`flip_http_requests_total{code="200",method="GET",route="/items/{id}"} 3`,
		`flip_http_requests_total{code="404",method="GET",route="unmatched"} 1`,
		`flip_http_request_duration_seconds_count{method="GET",route="/items/{id}"} 3`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s\n%s", want, body)
		}
	}
	if strings.Contains(body, "xxxxxxxxxx") {
		t.Error("raw unmatched path leaked into metric labels")
	}
}

func TestSharedRegistry(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	a := NewServer(DefaultConfig(":0"), nil, reg, nil)
	b := NewServer(DefaultConfig(":0"), nil, reg, nil)
	do(t, a.Handler(), "GET", "/health", nil)
	do(t, b.Handler(), "GET", "/health", nil)
	rec := do(t, a.Handler(), "GET", "/metrics", nil)
	if !strings.Contains(rec.Body.String(), `flip_http_requests_total{code="200",method="GET",route="/health"} 2`) {
		t.Fatalf("two servers on one registry should share counters:\n%s", rec.Body)
	}
}

func TestMetricConflictIsLogged(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: "flip_http_requests_total", Help: "clash"}))
	logger, logs := testLogger()
	s := NewServer(DefaultConfig(":0"), logger, reg, nil)
	if rec := do(t, s.Handler(), "GET", "/health", nil); rec.Code != 200 {
		t.Fatalf("server unusable after a metric clash: %d", rec.Code)
	}
	if !strings.Contains(logs.String(), "http metrics not registered") {
		t.Fatalf("clash not logged:\n%s", logs)
	}
}

func TestNewRegistry(t *testing.T) {
	t.Parallel()
	mfs, err := NewRegistry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, mf := range mfs {
		names = append(names, mf.GetName())
	}
	if !strings.Contains(strings.Join(names, " "), "go_goroutines") {
		t.Errorf("runtime metrics missing: %v", names)
	}
}

func TestRequestID(t *testing.T) {
	t.Parallel()
	s := NewServer(DefaultConfig(":0"), nil, nil, nil)
	s.Router().Get("/id", func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, RequestIDFrom(r.Context())) })
	tests := []struct {
		name, in string
		keep     bool
	}{
		{"absent", "", false},
		{"from proxy", "abc-123", true},
		{"too long", strings.Repeat("a", 200), false},
		{"control chars", "a\tb", false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("GET", "/id", nil)
			if tc.in != "" {
				req.Header.Set(HeaderRequestID, tc.in)
			}
			rec := httptest.NewRecorder()
			s.Handler().ServeHTTP(rec, req)
			got := rec.Header().Get(HeaderRequestID)
			if got == "" || got != rec.Body.String() {
				t.Fatalf("response id %q, handler saw %q", got, rec.Body.String())
			}
			if (got == tc.in) != tc.keep {
				t.Fatalf("id %q for input %q (keep=%v)", got, tc.in, tc.keep)
			}
		})
	}
}

func TestPanicRecovery(t *testing.T) {
	t.Parallel()
	logger, logs := testLogger()
	reg := prometheus.NewRegistry()
	s := NewServer(DefaultConfig(":0"), logger, reg, nil)
	s.Router().Get("/boom", func(http.ResponseWriter, *http.Request) { panic("kaboom") })
	s.Router().Get("/late", func(w http.ResponseWriter, _ *http.Request) {
		w.WriteHeader(http.StatusAccepted)
		panic(errors.New("after header"))
	})
	s.Router().Get("/ok", func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "fine") })

	req := httptest.NewRequest("GET", "/boom", nil)
	req.Header.Set(HeaderRequestID, "req-panic-1")
	rec := httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 500 || detailOf(t, rec.Body.Bytes()) != "Internal server error" {
		t.Fatalf("panic reply: %d %s", rec.Code, rec.Body)
	}
	out := logs.String()
	if !strings.Contains(out, `"msg":"handler panic"`) || !strings.Contains(out, "kaboom") || !strings.Contains(out, `"request_id":"req-panic-1"`) || !strings.Contains(out, `"route":"/boom"`) {
		t.Fatalf("panic not logged with request id and route:\n%s", out)
	}
	if rec := do(t, s.Handler(), "GET", "/late", nil); rec.Code != http.StatusAccepted {
		t.Fatalf("status already sent must stand: %d", rec.Code)
	}
	if rec := do(t, s.Handler(), "GET", "/ok", nil); rec.Code != 200 || rec.Body.String() != "fine" {
		t.Fatalf("server unusable after panic: %d %s", rec.Code, rec.Body)
	}
	if rec := do(t, s.Handler(), "GET", "/metrics", nil); !strings.Contains(rec.Body.String(), `flip_http_requests_total{code="500",method="GET",route="/boom"} 1`) {
		t.Fatalf("panic not counted as 500:\n%s", rec.Body)
	}
}

func TestPanicAbortHandlerPropagates(t *testing.T) {
	t.Parallel()
	s := NewServer(DefaultConfig(":0"), nil, nil, nil)
	s.Router().Get("/abort", func(http.ResponseWriter, *http.Request) { panic(http.ErrAbortHandler) })
	defer func() {
		err, _ := recover().(error)
		if !errors.Is(err, http.ErrAbortHandler) {
			t.Fatalf("recovered %v, want http.ErrAbortHandler", err)
		}
	}()
	do(t, s.Handler(), "GET", "/abort", nil)
	t.Fatal("ErrAbortHandler was swallowed")
}

type payload struct {
	Name  string `json:"name"`
	Count int    `json:"count"`
	Inner struct {
		Flag bool `json:"flag"`
	} `json:"inner"`
}

func TestBodyLimit(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig(":0")
	cfg.MaxBodyBytes = 64
	s := NewServer(cfg, nil, nil, nil)
	var reached int
	var mu sync.Mutex
	s.Router().Post("/in", Handle(func(r *http.Request) (payload, error) {
		mu.Lock()
		reached++
		mu.Unlock()
		var p payload
		return p, DecodeJSON(r, &p)
	}))
	small := `{"name":"a","count":1}`
	big := `{"name":"` + strings.Repeat("x", 100) + `"}`

	if rec := do(t, s.Handler(), "POST", "/in", strings.NewReader(small)); rec.Code != 200 {
		t.Fatalf("small body: %d %s", rec.Code, rec.Body)
	}
	// Declared length over the limit: refused before the handler runs.
	rec := do(t, s.Handler(), "POST", "/in", strings.NewReader(big))
	if rec.Code != 413 || !strings.Contains(fmt.Sprint(detailOf(t, rec.Body.Bytes())), "64 bytes") {
		t.Fatalf("declared big body: %d %s", rec.Code, rec.Body)
	}
	// Unknown length (chunked): the read fails and DecodeJSON maps it to 413.
	req := httptest.NewRequest("POST", "/in", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	rec = httptest.NewRecorder()
	s.Handler().ServeHTTP(rec, req)
	if rec.Code != 413 {
		t.Fatalf("chunked big body: %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	if reached != 2 {
		t.Fatalf("handler reached %d times, want 2 (small + chunked)", reached)
	}
}

type created struct {
	ID string `json:"id"`
}

func (created) StatusCode() int { return http.StatusCreated }

func TestHandleErrorMapping(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		fn         http.HandlerFunc
		wantStatus int
		wantBody   string
		wantLog    bool
	}{
		{"value", Handle(func(*http.Request) (map[string]int, error) { return map[string]int{"n": 1}, nil }), 200, `{"n":1}`, false},
		{"status coder", Handle(func(*http.Request) (created, error) { return created{ID: "x"}, nil }), 201, `{"id":"x"}`, false},
		{"not found", Handle(func(*http.Request) (any, error) { return nil, NewError(404, "Task not found") }), 404, `{"detail":"Task not found"}`, false},
		{"wrapped error", Handle(func(*http.Request) (any, error) {
			return nil, fmt.Errorf("load task: %w", Errorf(409, "task %s already completed", "t1"))
		}), 409, `{"detail":"task t1 already completed"}`, false},
		{"structured detail", Handle(func(*http.Request) (any, error) {
			return nil, NewError(422, []map[string]string{{"loc": "body.sql", "msg": "required"}})
		}), 422, `{"detail":[{"loc":"body.sql","msg":"required"}]}`, false},
		{"plain error hides text", Handle(func(*http.Request) (any, error) { return nil, errors.New("db password=hunter2 refused") }), 500, `{"detail":"Internal server error"}`, true},
		{"5xx Error logged", Handle(func(*http.Request) (any, error) { return nil, NewError(502, "hub unreachable") }), 502, `{"detail":"hub unreachable"}`, true},
		{"unencodable value", Handle(func(*http.Request) (any, error) { return func() {}, nil }), 500, `{"detail":"Internal server error"}`, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			logger, logs := testLogger()
			s := NewServer(DefaultConfig(":0"), logger, nil, nil)
			s.Router().Get("/x", tc.fn)
			rec := do(t, s.Handler(), "GET", "/x", nil)
			if rec.Code != tc.wantStatus || strings.TrimSpace(rec.Body.String()) != tc.wantBody {
				t.Fatalf("got %d %s, want %d %s", rec.Code, rec.Body, tc.wantStatus, tc.wantBody)
			}
			if got := strings.Contains(logs.String(), `"msg":"request failed"`); got != tc.wantLog {
				t.Fatalf("logged=%v, want %v:\n%s", got, tc.wantLog, logs)
			}
		})
	}
	var e error = NewError(404, "gone")
	if e.Error() != "http 404: gone" {
		t.Errorf("Error() = %q", e.Error())
	}
}

func TestDecodeJSON(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name       string
		body       string
		strict     bool
		wantStatus int // 0: success
		wantIn     string
	}{
		{"valid", `{"name":"a","count":2,"inner":{"flag":true}}`, false, 0, ""},
		{"unknown field lenient", `{"name":"a","extra":1}`, false, 0, ""},
		{"unknown field strict", `{"name":"a","extra":1}`, true, 422, `unknown field "extra"`},
		{"empty", ``, false, 422, "required"},
		{"whitespace only", "  \n", false, 422, "required"},
		{"syntax", `{"name":}`, false, 422, "syntax error at byte"},
		{"truncated", `{"name":"a"`, false, 422, "unexpected end"},
		{"wrong type", `{"count":"three"}`, false, 422, `field "count" must be int, got string`},
		{"nested wrong type", `{"inner":{"flag":"yes"}}`, false, 422, `field "inner.flag" must be bool`},
		{"not an object", `[1,2]`, false, 422, "expected"},
		{"trailing data", `{"name":"a"} {"name":"b"}`, false, 422, "after the JSON value"},
		{"trailing garbage", `{"name":"a"} x`, false, 422, "syntax error"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			req := httptest.NewRequest("POST", "/", strings.NewReader(tc.body))
			var p payload
			var err error
			if tc.strict {
				err = DecodeJSONStrict(req, &p)
			} else {
				err = DecodeJSON(req, &p)
			}
			if tc.wantStatus == 0 {
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
				if p.Name != "a" {
					t.Fatalf("decoded %+v", p)
				}
				return
			}
			var he *Error
			if !errors.As(err, &he) {
				t.Fatalf("err %v (%T), want *Error", err, err)
			}
			if he.Status != tc.wantStatus || !strings.Contains(fmt.Sprint(he.Detail), tc.wantIn) {
				t.Fatalf("got %d %q, want %d containing %q", he.Status, he.Detail, tc.wantStatus, tc.wantIn)
			}
		})
	}
	req := httptest.NewRequest("POST", "/", nil)
	req.Body = nil
	var he *Error
	if err := DecodeJSON(req, &payload{}); !errors.As(err, &he) || he.Status != 422 {
		t.Fatalf("nil body: %v", err)
	}
}

// startServer runs s in the background and returns its base URL, a function
// cancelling Run, and a channel receiving Run's error.
func startServer(t *testing.T, s *Server) (string, context.CancelFunc, <-chan error) {
	t.Helper()
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	finished := make(chan struct{})
	go func() {
		done <- s.Run(ctx)
		close(finished)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-finished:
		case <-time.After(10 * time.Second):
			t.Error("Run did not return")
		}
	})
	return "http://" + addr.String(), cancel, done
}

func TestReadinessFlipsBeforeShutdown(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig("127.0.0.1:0")
	cfg.DrainDelay = 400 * time.Millisecond
	cfg.ShutdownGrace = 5 * time.Second
	s := NewServer(cfg, nil, nil, nil)
	release := make(chan struct{})
	started := make(chan struct{})
	s.Router().Get("/slow", func(w http.ResponseWriter, _ *http.Request) {
		close(started)
		<-release
		_, _ = io.WriteString(w, "done")
	})
	base, cancel, done := startServer(t, s)
	client := NewClient(5 * time.Second)

	if code := status(t, client, base+"/ready"); code != 200 {
		t.Fatalf("ready before shutdown: %d", code)
	}
	slowResult := make(chan string, 1)
	go func() {
		resp, err := client.Get(base + "/slow")
		if err != nil {
			slowResult <- "error: " + err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		slowResult <- string(b)
	}()
	<-started

	shutdownAt := time.Now()
	cancel()
	// During the drain the server still answers, with /ready at 503.
	var sawDraining bool
	for time.Since(shutdownAt) < cfg.DrainDelay/2 {
		code := status(t, client, base+"/ready")
		if code == 503 {
			sawDraining = true
			if h := status(t, client, base+"/health"); h != 200 {
				t.Fatalf("health during drain: %d", h)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	if !sawDraining {
		t.Fatal("/ready never answered 503 during the drain")
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v while a request was in flight", err)
	case <-time.After(cfg.DrainDelay):
	}
	close(release)
	if got := <-slowResult; got != "done" {
		t.Fatalf("in-flight request: %s", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not return after the in-flight request finished")
	}
	if elapsed := time.Since(shutdownAt); elapsed < cfg.DrainDelay {
		t.Fatalf("shut down after %v, before the drain delay %v", elapsed, cfg.DrainDelay)
	}
	if _, err := client.Get(base + "/ready"); err == nil {
		t.Fatal("server still answering after Run returned")
	}
}

func TestShutdownGraceExceeded(t *testing.T) {
	t.Parallel()
	cfg := DefaultConfig("127.0.0.1:0")
	cfg.DrainDelay = 0
	cfg.ShutdownGrace = 100 * time.Millisecond
	s := NewServer(cfg, nil, nil, nil)
	started := make(chan struct{})
	stuck := make(chan struct{})
	t.Cleanup(func() { close(stuck) })
	s.Router().Get("/stuck", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		select {
		case <-stuck:
		case <-r.Context().Done():
		}
	})
	base, cancel, done := startServer(t, s)
	go func() {
		resp, err := NewClient(5 * time.Second).Get(base + "/stuck")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-started
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Run = %v, want a deadline error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run ignored ShutdownGrace")
	}
}

func TestRunAddressInUse(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	s := NewServer(DefaultConfig(ln.Addr().String()), nil, nil, nil)
	if err := s.Run(t.Context()); err == nil || !strings.Contains(err.Error(), "listen on") {
		t.Fatalf("Run on a busy address: %v", err)
	}
}

func TestListenIsIdempotent(t *testing.T) {
	t.Parallel()
	s := NewServer(quickConfig(), nil, nil, nil)
	a, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Listen()
	if err != nil || a.String() != b.String() {
		t.Fatalf("second Listen: %v %v", b, err)
	}
	base, _, _ := startServer(t, s)
	if base != "http://"+a.String() {
		t.Fatalf("Run served on %s, Listen gave %s", base, a)
	}
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	c := Config{Addr: ":1", DrainDelay: -1}.withDefaults()
	d := DefaultConfig(":1")
	d.DrainDelay = 0
	if c != d {
		t.Fatalf("zero config filled as %+v, want %+v", c, d)
	}
	s := NewServer(Config{Addr: ":0"}, nil, nil, nil)
	if s.srv.ReadHeaderTimeout == 0 || s.srv.ReadTimeout == 0 || s.srv.WriteTimeout == 0 || s.srv.IdleTimeout == 0 {
		t.Fatalf("server without timeouts: %+v", s.srv)
	}
}

// quickConfig listens on a free loopback port and shuts down without a drain delay.
func quickConfig() Config {
	c := DefaultConfig("127.0.0.1:0")
	c.DrainDelay = 0
	return c
}

func status(t *testing.T, c *http.Client, url string) int {
	t.Helper()
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func TestNewClientTimeout(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer srv.Close()
	defer close(release)
	c := NewClient(150 * time.Millisecond)
	start := time.Now()
	_, err := c.Get(srv.URL)
	if err == nil {
		t.Fatal("request to a hung server succeeded")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("timeout not applied: %v", d)
	}
	if NewClient(0).Timeout <= 0 {
		t.Fatal("zero timeout must not mean no timeout")
	}
}

func TestProbeHealth(t *testing.T) {
	t.Parallel()
	live := NewServer(quickConfig(), nil, nil, nil)
	liveURL, _, _ := startServer(t, live)

	sick := NewServer(quickConfig(), nil, nil, func(context.Context) (int, any) {
		return http.StatusServiceUnavailable, map[string]string{"status": "unhealthy"}
	})
	sickURL, _, _ := startServer(t, sick)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadURL := "http://" + ln.Addr().String()
	ln.Close()

	tests := []struct {
		name, url string
		want      int
	}{
		{"live", liveURL + "/health", 0},
		{"unhealthy", sickURL + "/health", 1},
		{"not found", liveURL + "/nothing", 1},
		{"dead", deadURL + "/health", 1},
		{"bad url", "::not a url", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := ProbeHealth(t.Context(), tc.url); got != tc.want {
				t.Fatalf("ProbeHealth(%s) = %d, want %d", tc.url, got, tc.want)
			}
		})
	}
}

func TestHealthFlag(t *testing.T) {
	t.Parallel()
	fs := flag.NewFlagSet("svc", flag.ContinueOnError)
	h := HealthFlag(fs)
	if *h {
		t.Fatal("default true")
	}
	if err := fs.Parse([]string{"-health"}); err != nil || !*h {
		t.Fatalf("parse -health: %v %v", err, *h)
	}
}

func TestAccessLog(t *testing.T) {
	t.Parallel()
	logger, logs := testLogger()
	s := NewServer(DefaultConfig(":0"), logger, nil, nil)
	s.Router().Get("/tasks/{id}", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) })
	do(t, s.Handler(), "GET", "/tasks/patient-123?nhs=999", nil)
	out := logs.String()
	if !strings.Contains(out, `"route":"/tasks/{id}"`) || !strings.Contains(out, `"status":204`) {
		t.Fatalf("access log missing route/status:\n%s", out)
	}
	// (the bare "999" could also occur in a random request id or a duration)
	if strings.Contains(out, "patient-123") || strings.Contains(out, "nhs=") || strings.Contains(out, "nhs") {
		t.Fatalf("access log leaks raw path or query:\n%s", out)
	}
}

func TestLocalHealthURL(t *testing.T) {
	cases := map[string]string{
		"":             "http://127.0.0.1:8000/health",
		":9000":        "http://127.0.0.1:9000/health",
		"0.0.0.0:9001": "http://127.0.0.1:9001/health",
		"[::]:9002":    "http://127.0.0.1:9002/health",
		"garbage":      "http://127.0.0.1:8000/health",
	}
	for addr, want := range cases {
		if got := LocalHealthURL(addr, "8000"); got != want {
			t.Errorf("LocalHealthURL(%q) = %q, want %q", addr, got, want)
		}
	}
}
