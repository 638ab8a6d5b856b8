package logging

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang/snappy"
	"github.com/grafana/loki/pkg/push"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
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

func newTest(t *testing.T, opts Options, reg prometheus.Registerer) (*Logger, *syncBuffer) {
	t.Helper()
	buf := &syncBuffer{}
	l, err := New(buf, opts, reg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_ = l.Close(ctx)
	})
	return l, buf
}

// closedLoopbackURL returns a URL on 127.0.0.1 where nothing listens.
func closedLoopbackURL(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return "http://" + addr
}

func TestQueryHash(t *testing.T) {
	t.Parallel()
	want := sha256.Sum256([]byte("select * from person where year_of_birth > 1990"))
	wantHex := hex.EncodeToString(want[:])[:12]
	variants := []string{
		"select * from person where year_of_birth > 1990",
		"  SELECT *\n\tFROM   person\r\n WHERE year_of_birth > 1990  ",
		"SELECT * FROM PERSON WHERE YEAR_OF_BIRTH > 1990",
	}
	for _, v := range variants {
		if got := QueryHash(v); got != wantHex {
			t.Errorf("QueryHash(%q) = %s, want %s", v, got, wantHex)
		}
	}
	if QueryHash("select 1") == QueryHash("select 2") {
		t.Error("different queries share a hash")
	}
	if len(QueryHash("")) != 12 {
		t.Error("hash is not 12 hex digits")
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{"", slog.LevelInfo, false},
		{"INFO", slog.LevelInfo, false},
		{"debug", slog.LevelDebug, false},
		{"Warning", slog.LevelWarn, false},
		{"warn", slog.LevelWarn, false},
		{"ERROR", slog.LevelError, false},
		{"CRITICAL", slog.LevelError, false},
		{"info+2", slog.LevelInfo + 2, false},
		{"verbose", slog.LevelInfo, true},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseLevel(tc.in)
			if (err != nil) != tc.err || got != tc.want {
				t.Fatalf("ParseLevel(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}

func TestDiscard(t *testing.T) {
	t.Parallel()
	l := Discard()
	if l.Enabled(context.Background(), slog.LevelError) {
		t.Fatal("Discard logger is enabled")
	}
	l.Info("nothing", "k", "v")
}

func TestLevelAndBaseAttrs(t *testing.T) {
	t.Parallel()
	l, buf := newTest(t, Options{Level: slog.LevelWarn, Service: "trust-api", Version: "1.2.3"}, nil)
	l.Slog().Info("hidden")
	l.Slog().Warn("shown", "n", 1)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 1 {
		t.Fatalf("lines: %q", lines)
	}
	var rec map[string]any
	if err := json.Unmarshal([]byte(lines[0]), &rec); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if rec["msg"] != "shown" || rec["service"] != "trust-api" || rec["version"] != "1.2.3" || rec["level"] != "WARN" {
		t.Fatalf("record %v", rec)
	}
	l.SetLevel(slog.LevelDebug)
	l.Slog().Debug("now shown")
	if !strings.Contains(buf.String(), "now shown") {
		t.Fatal("SetLevel had no effect")
	}
}

type creds struct {
	User     string            `json:"user"`
	Password string            `json:"password"`
	Nested   map[string]string `json:"nested"`
	SQL      string            `json:"sql"`
}

func TestRedaction(t *testing.T) {
	t.Parallel()
	const (
		aesKey   = "q8Zb1kKq0W1vYwq3Ck3lqS0fOZyj9kqPqvQyJbW5Xk0="
		apiKey   = "hub-api-key-7f3a9c"
		token    = "tok-5b2e8d1f"
		password = "hunter2-pw"
		cookie   = "sessid=abc987"
		email    = "jane.doe@nhs.example.uk"
		email2   = "x.y+z@trust.nhs.uk"
		bearer   = "Zm9vYmFyYmF6cXV4"
		jwtTok   = "eyJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJ0cnVzdC1hcGkifQ.c2lnbmF0dXJl"
		mrn      = "MRN-00123"
		sqlText  = "SELECT person_id FROM omop.person WHERE gender_concept_id = 8507"
	)
	l, buf := newTest(t, Options{Level: slog.LevelDebug, Service: "trust-api"}, nil)
	log := l.Slog()
	log.Info("loaded config",
		"key", aesKey, "AES_KEY_BASE64", aesKey, "TRUST_API_KEY", apiKey, "api_key", apiKey,
		"x-api-key", apiKey, "token", token, "access_token", token, "Authorization", "Bearer "+bearer,
		"password", password, "db_password", password, "cookie", cookie, "secret", token,
		"email", email, "user_email", email, "patient_id", mrn, "mrn", mrn, "trustApiKey", apiKey)
	log.Info("user "+email+" sent Bearer "+bearer, "detail", "reply from "+email2+": token="+token+" auth Basic "+bearer)
	log.Info("cohort query", "sql", sqlText, "query", sqlText, "cohort_sql", sqlText, "query_id", "q-123")
	log.Error("call failed", "error", errors.New("POST https://svc:"+password+"@hub/api as "+email+": Authorization: Bearer "+jwtTok))
	log.Info("struct", "payload", creds{User: email, Password: password, Nested: map[string]string{"api_key": apiKey, "note": "ok"}, SQL: sqlText})
	log.Info("jwt in text", "note", "got "+jwtTok)
	log.With("token", token).WithGroup("req").With("secret", token).Info("grouped", slog.Group("auth", "password", password), slog.Group("creds", "user", email))
	log.Info("bytes", "raw", []byte(aesKey))
	log.Info("kept", "key_fingerprint", "0a1b2c3d4e5f", "trust_id", "trust-1", "api_key_header", "Authorization", "task_type", "cohort_query")

	out := buf.String()
	for _, leak := range []string{aesKey, apiKey, token, password, cookie, email, email2, bearer, jwtTok, mrn, "omop.person", "SELECT", "select person_id", "gender_concept_id"} {
		if strings.Contains(out, leak) {
			t.Errorf("output contains %q", leak)
		}
	}
	h := QueryHash(sqlText)
	if strings.Count(out, `"sql":"`+h+`"`) != 2 || !strings.Contains(out, `"query":"`+h+`"`) || !strings.Contains(out, `"cohort_sql":"`+h+`"`) {
		t.Errorf("sql attributes not replaced by their hash %s:\n%s", h, out)
	}
	for _, kept := range []string{`"query_id":"q-123"`, `"key_fingerprint":"0a1b2c3d4e5f"`, `"trust_id":"trust-1"`, `"api_key_header":"Authorization"`, `"task_type":"cohort_query"`, `"note":"ok"`} {
		if !strings.Contains(out, kept) {
			t.Errorf("harmless attribute lost: %s", kept)
		}
	}
	if !strings.Contains(out, `"Authorization":"[REDACTED]"`) || !strings.Contains(out, "sent Bearer [REDACTED]") {
		t.Errorf("redaction markers missing:\n%s", out)
	}
	for i, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if !json.Valid([]byte(line)) {
			t.Errorf("line %d is not valid JSON: %s", i, line)
		}
	}
}

func TestSensitiveKey(t *testing.T) {
	t.Parallel()
	for key, want := range map[string]bool{
		"key": true, "aes_key": true, "AES_KEY_BASE64": true, "trustApiKey": true, "X-Api-Key": true,
		"TRUST_INTERNAL_SERVICE_KEY": true, "token": true, "refreshToken": true, "client_secret": true,
		"Authorization": true, "cookie": true, "Set-Cookie": true, "email": true, "userEmail": true,
		"password": true, "sql": true, "query": true, "cohort_query": true,
		"monkey": false, "key_fingerprint": false, "aes_key_fingerprint": false, "api_key_header": false,
		"trust_id": false, "query_id": false, "task_type": false, "status": false, "keyboard": false,
		"token_count": false,
	} {
		if got := SensitiveKey(key); got != want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", key, got, want)
		}
	}
}

func TestMaskString(t *testing.T) {
	t.Parallel()
	tests := []struct{ in, want string }{
		{"plain text stays", "plain text stays"},
		{"mail a.b@c.example.org now", "mail [REDACTED] now"},
		{"Authorization: Bearer abc.def-ghi", "Authorization: Bearer [REDACTED]"},
		{"postgres://reader:pa55@db:5432/omop", "postgres://[REDACTED]@db:5432/omop"},
		{"password=pa55&user=x", "password=[REDACTED]&user=x"},
		{`{"api_key": "abc"}`, `{"api_key": "[REDACTED]"}`},
		{"ratio 3:4 at 12:00", "ratio 3:4 at 12:00"},
	}
	for _, tc := range tests {
		if got := MaskString(tc.in); got != tc.want {
			t.Errorf("MaskString(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestDropCounterRegistration(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	if _, err := New(io.Discard, Options{}, reg); err != nil {
		t.Fatal(err)
	}
	if _, err := New(io.Discard, Options{}, reg); err != nil {
		t.Fatalf("second logger on the same registry: %v", err)
	}
	if n, err := testutil.GatherAndCount(reg, DroppedMetric); err != nil || n != 1 {
		t.Fatalf("%s series: %d %v", DroppedMetric, n, err)
	}
	clash := prometheus.NewRegistry()
	clash.MustRegister(prometheus.NewGauge(prometheus.GaugeOpts{Name: DroppedMetric, Help: "other"}))
	if _, err := New(io.Discard, Options{}, clash); err == nil {
		t.Fatal("conflicting metric accepted")
	}
}

func TestNewRejectsBadLokiOptions(t *testing.T) {
	t.Parallel()
	for name, opts := range map[string]Options{
		"relative url": {LokiURL: "loki:3100"},
		"bad scheme":   {LokiURL: "ftp://loki:3100"},
		"bad label":    {LokiURL: "http://loki:3100", LokiLabels: map[string]string{"bad-label": "x"}},
	} {
		if _, err := New(io.Discard, opts, nil); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLokiPushURL(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"http://loki:3100":                      "http://loki:3100/loki/api/v1/push",
		"http://loki:3100/":                     "http://loki:3100/loki/api/v1/push",
		"https://logs.example/loki/api/v1/push": "https://logs.example/loki/api/v1/push",
	} {
		if got, err := LokiPushURL(in); err != nil || got != want {
			t.Errorf("LokiPushURL(%q) = %q, %v", in, got, err)
		}
	}
}

// TestLokiDownNeverBlocks is the contract that a dead Loki does not slow the
// service: 10,000 log calls return at once and the overflow is counted.
func TestLokiDownNeverBlocks(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	l, buf := newTest(t, Options{Level: slog.LevelInfo, Service: "trust-api", LokiURL: closedLoopbackURL(t), LokiQueueSize: 100}, reg)
	log := l.Slog()
	base := withoutLoki(t)
	start := time.Now()
	for i := range 10_000 {
		log.Info("task processed", "n", i, "task_type", "cohort_query")
	}
	elapsed := time.Since(start)
	if elapsed >= 3*base+250*time.Millisecond {
		t.Fatalf("10,000 log calls took %v with Loki down, %v without Loki", elapsed, base)
	}
	if got := strings.Count(buf.String(), `"msg":"task processed"`); got != 10_000 {
		t.Fatalf("stdout got %d lines, want 10000", got)
	}
	dropped := l.Dropped()
	if dropped == 0 {
		t.Fatal("no line was dropped although the queue holds 100 and Loki is down")
	}
	if got := droppedMetric(t, reg); got != float64(dropped) {
		t.Fatalf("%s = %v, Dropped() = %d", DroppedMetric, got, dropped)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	closeStart := time.Now()
	err := l.Close(ctx)
	if d := time.Since(closeStart); d > 800*time.Millisecond {
		t.Fatalf("Close took %v, beyond its 300ms deadline", d)
	}
	if err != nil && !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close: %v", err)
	}
	before := l.Dropped()
	log.Info("after close")
	if l.Dropped() != before+1 {
		t.Fatal("a line logged after Close was not counted as dropped")
	}
}

func droppedMetric(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == DroppedMetric {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	t.Fatalf("%s not registered", DroppedMetric)
	return 0
}

// withoutLoki times 10,000 log calls of a logger that ships nowhere, the
// baseline the Loki tests compare with: on a loaded machine both slow down
// alike, while a call that waited on Loki would not stay near it.
func withoutLoki(t *testing.T) time.Duration {
	t.Helper()
	l, _ := newTest(t, Options{Level: slog.LevelInfo, Service: "trust-api"}, nil)
	log := l.Slog()
	start := time.Now()
	for i := range 10_000 {
		log.Info("task processed", "n", i, "task_type", "cohort_query")
	}
	return time.Since(start)
}

// TestLokiHangingNeverBlocks covers a Loki that accepts connections but never
// answers: log calls stay fast and Close honours its deadline.
func TestLokiHangingNeverBlocks(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	l, _ := newTest(t, Options{Service: "trust-api", LokiURL: srv.URL, LokiQueueSize: 256}, nil)
	base := withoutLoki(t)
	start := time.Now()
	for i := range 10_000 {
		l.Slog().Info("line", "i", i)
	}
	if d := time.Since(start); d >= 3*base+250*time.Millisecond {
		t.Fatalf("log calls took %v with Loki hanging, %v without Loki", d, base)
	}
	if l.Dropped() == 0 {
		t.Fatal("queue of 256 took 10,000 lines without dropping")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
	defer cancel()
	closeStart := time.Now()
	err := l.Close(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close with Loki hanging = %v, want deadline exceeded", err)
	}
	if d := time.Since(closeStart); d > 750*time.Millisecond {
		t.Fatalf("Close took %v, beyond its deadline", d)
	}
}

type received struct {
	path, contentType string
	streams           []push.Stream
}

func TestLokiPushArrives(t *testing.T) {
	t.Parallel()
	got := make(chan received, 16)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		rec := received{path: r.URL.Path, contentType: r.Header.Get("Content-Type")}
		if raw, err := snappy.Decode(nil, body); err == nil {
			var req push.PushRequest
			if err := req.Unmarshal(raw); err == nil {
				rec.streams = req.Streams
			}
		}
		got <- rec
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(srv.Close)

	l, _ := newTest(t, Options{Service: "trust-api", Version: "0.1.0", LokiURL: srv.URL,
		LokiLabels: map[string]string{"trust": "trust-1", "env": "test"}}, nil)
	l.Slog().Info("heartbeat sent", "token", "do-not-ship", "email", "a@b.example.org")
	l.Slog().Warn("hub slow")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := l.Close(ctx); err != nil {
		t.Fatalf("Close: %v", err)
	}

	var lines []string
	var first received
	for len(lines) < 2 {
		select {
		case r := <-got:
			if first.path == "" {
				first = r
			}
			if r.path != "/loki/api/v1/push" {
				t.Fatalf("push to %q, want /loki/api/v1/push", r.path)
			}
			if len(r.streams) == 0 {
				t.Fatalf("push body did not decode as snappy protobuf (content type %q)", r.contentType)
			}
			for _, s := range r.streams {
				for _, want := range []string{`service="trust-api"`, `trust="trust-1"`, `env="test"`} {
					if !strings.Contains(s.Labels, want) {
						t.Errorf("stream labels %s lack %s", s.Labels, want)
					}
				}
				for _, e := range s.Entries {
					lines = append(lines, e.Line)
				}
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("Loki received %d lines, want 2", len(lines))
		}
	}
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, `"msg":"heartbeat sent"`) || !strings.Contains(joined, `"msg":"hub slow"`) {
		t.Fatalf("pushed lines: %s", joined)
	}
	if strings.Contains(joined, "do-not-ship") || strings.Contains(joined, "a@b.example.org") {
		t.Fatalf("secrets pushed to Loki: %s", joined)
	}
	if l.Dropped() != 0 {
		t.Fatalf("dropped %d lines with a healthy Loki", l.Dropped())
	}
}

func TestCloseWithoutLoki(t *testing.T) {
	t.Parallel()
	l, err := New(io.Discard, Options{}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(context.Background()); err != nil {
		t.Fatalf("Close: %v", err)
	}
}
