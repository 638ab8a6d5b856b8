package delivery

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/shared/hubapi"
)

const taskID = "2b8e4f5c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"

type post struct {
	at   time.Time
	path string
	body string
}

// fakeHub answers result and cohort posts with the next scripted reply per
// path (the last one repeats).
type fakeHub struct {
	mu      sync.Mutex
	posts   []post
	scripts map[string][]func(w http.ResponseWriter)
}

func (f *fakeHub) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	f.mu.Lock()
	f.posts = append(f.posts, post{time.Now(), r.URL.Path, string(body)})
	key := "result"
	if strings.HasSuffix(r.URL.Path, "/cohort/results") {
		key = "cohort"
	}
	var fn func(http.ResponseWriter)
	if s := f.scripts[key]; len(s) > 0 {
		fn = s[0]
		if len(s) > 1 {
			f.scripts[key] = s[1:]
		}
	}
	f.mu.Unlock()
	if fn == nil {
		_, _ = io.WriteString(w, `{"message":"ok"}`)
		return
	}
	fn(w)
}

func (f *fakeHub) all() []post {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]post(nil), f.posts...)
}

func status(code int, hdr ...string) func(http.ResponseWriter) {
	return func(w http.ResponseWriter) {
		for i := 0; i+1 < len(hdr); i += 2 {
			w.Header().Set(hdr[i], hdr[i+1])
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, `{"detail":"scripted"}`)
	}
}

func times(n int, fn func(http.ResponseWriter)) []func(http.ResponseWriter) {
	out := make([]func(http.ResponseWriter), n)
	for i := range out {
		out[i] = fn
	}
	return out
}

type rig struct {
	j    *journal.Journal
	hub  *fakeHub
	srv  *httptest.Server
	path string
}

func newRig(t *testing.T) *rig {
	t.Helper()
	r := &rig{hub: &fakeHub{scripts: map[string][]func(http.ResponseWriter){}}, path: filepath.Join(t.TempDir(), "journal.db")}
	r.srv = httptest.NewServer(r.hub)
	t.Cleanup(r.srv.Close)
	j, err := journal.Open(r.path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.j = j
	t.Cleanup(func() { _ = r.j.Close() })
	return r
}

func (r *rig) record(t *testing.T, id string, o journal.Outcome) {
	t.Helper()
	if _, _, err := r.j.Claim(id, "cohort_query", "SEALED"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.j.Record(id, o); err != nil {
		t.Fatal(err)
	}
}

// start runs a Deliverer until the test ends or stop is called.
func (r *rig) start(t *testing.T, opts Options) (stop func()) {
	t.Helper()
	if opts.BackoffMin == 0 {
		opts.BackoffMin, opts.BackoffMax = 10*time.Millisecond, 40*time.Millisecond
	}
	c := hub.New(hub.Options{BaseURL: r.srv.URL + "/api", Key: "k", Timeout: time.Second}, slog.New(slog.DiscardHandler))
	d := New(r.j, c, opts, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	stop = func() { cancel(); <-done }
	t.Cleanup(stop)
	return stop
}

func (r *rig) waitState(t *testing.T, id string, want journal.State) journal.Entry {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		e, err := r.j.Get(id)
		if err == nil && e.State == want {
			return e
		}
		if time.Now().After(deadline) {
			t.Fatalf("task %s is %s, want %s", id, e.State, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func strp(s string) *string { return &s }

func TestBackoffAcrossFailuresThenDelivers(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.hub.scripts["result"] = append(times(5, status(503)), status(200))
	r.record(t, taskID, journal.Outcome{Success: true, Result: strp(`{"ID":"x"}`)})
	r.start(t, Options{BackoffMin: 20 * time.Millisecond, BackoffMax: 80 * time.Millisecond, Jitter: func() float64 { return 1 }})
	e := r.waitState(t, taskID, journal.Delivered)
	posts := r.hub.all()
	if len(posts) != 6 || e.Attempts != 5 {
		t.Fatalf("%d posts, %d attempts; want 6 and 5", len(posts), e.Attempts)
	}
	// Jitter 1 gives the ceiling: 20, 40, 80, 80, 80 ms.
	want := []time.Duration{20, 40, 80, 80, 80}
	for i := 1; i < len(posts); i++ {
		gap := posts[i].at.Sub(posts[i-1].at)
		if gap < want[i-1]*time.Millisecond || gap > want[i-1]*time.Millisecond+time.Second {
			t.Errorf("gap %d = %v, want about %v ms", i, gap, want[i-1])
		}
	}
	if posts[5].path != "/api/tasks/"+taskID+"/result" || posts[5].body != `{"success":true,"result":"{\"ID\":\"x\"}"}` {
		t.Fatalf("final post %+v", posts[5])
	}
}

func TestHubDownThenUp(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	url := r.srv.URL
	r.srv.Close() // the hub is unreachable
	r.record(t, taskID, journal.Outcome{Success: true})
	c := hub.New(hub.Options{BaseURL: url + "/api", Key: "k", Timeout: time.Second}, slog.New(slog.DiscardHandler))
	d := New(r.j, c, Options{BackoffMin: 5 * time.Millisecond, BackoffMax: 20 * time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	time.Sleep(300 * time.Millisecond)
	e, _ := r.j.Get(taskID)
	if e.State != journal.Recorded || e.Attempts < 5 {
		t.Fatalf("during outage: %s after %d attempts", e.State, e.Attempts)
	}
	// The hub comes back on the same address.
	l, err := listenOn(url)
	if err != nil {
		t.Skipf("cannot rebind %s: %v", url, err)
	}
	srv := &http.Server{Handler: r.hub, ReadHeaderTimeout: time.Second}
	go func() { _ = srv.Serve(l) }()
	defer srv.Close()
	r.waitState(t, taskID, journal.Delivered)
	cancel()
	<-done
}

func TestTerminalAnswers(t *testing.T) {
	t.Parallel()
	for _, code := range []int{403, 404, 409} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.hub.scripts["result"] = times(1, status(code))
			r.record(t, taskID, journal.Outcome{Success: false, Result: strp(`{"error": "x"}`)})
			r.start(t, Options{})
			e := r.waitState(t, taskID, journal.Rejected)
			time.Sleep(100 * time.Millisecond)
			if e.RejectCode != code || len(r.hub.all()) != 1 {
				t.Fatalf("code %d, %d posts", e.RejectCode, len(r.hub.all()))
			}
		})
	}
}

func TestRetryAfterHonoured(t *testing.T) {
	t.Parallel()
	for _, code := range []int{429, 503} {
		t.Run(http.StatusText(code), func(t *testing.T) {
			t.Parallel()
			r := newRig(t)
			r.hub.scripts["result"] = []func(http.ResponseWriter){status(code, "Retry-After", "1"), status(200)}
			r.record(t, taskID, journal.Outcome{Success: true})
			r.start(t, Options{BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
			r.waitState(t, taskID, journal.Delivered)
			posts := r.hub.all()
			if len(posts) != 2 {
				t.Fatalf("%d posts", len(posts))
			}
			if gap := posts[1].at.Sub(posts[0].at); gap < 950*time.Millisecond {
				t.Fatalf("retried after %v despite Retry-After: 1", gap)
			}
		})
	}
	t.Run("http date", func(t *testing.T) {
		t.Parallel()
		r := newRig(t)
		r.hub.scripts["result"] = []func(http.ResponseWriter){
			func(w http.ResponseWriter) {
				w.Header().Set("Retry-After", time.Now().Add(2*time.Second).UTC().Format(http.TimeFormat))
				w.WriteHeader(503)
			}, status(200)}
		r.record(t, taskID, journal.Outcome{Success: true})
		r.start(t, Options{BackoffMin: 5 * time.Millisecond, BackoffMax: 10 * time.Millisecond})
		r.waitState(t, taskID, journal.Delivered)
		posts := r.hub.all()
		if gap := posts[1].at.Sub(posts[0].at); gap < 900*time.Millisecond {
			t.Fatalf("retried after %v despite a Retry-After date", gap)
		}
	})
}

func TestCohortResultsFirstAndOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.hub.scripts["cohort"] = []func(http.ResponseWriter){status(502), status(200)}
	r.hub.scripts["result"] = []func(http.ResponseWriter){status(500), status(500), status(200)}
	stats := `{"query_id":"q","trust_id":"t","record_count":3}`
	r.record(t, taskID, journal.Outcome{Success: true, CohortResults: json.RawMessage(stats)})
	r.start(t, Options{})
	r.waitState(t, taskID, journal.Delivered)
	var paths []string
	cohort := 0
	for _, p := range r.hub.all() {
		paths = append(paths, p.path)
		if p.path == "/api/cohort/results" {
			cohort++
			if p.body != stats {
				t.Fatalf("cohort body %s", p.body)
			}
		}
	}
	want := []string{"/api/cohort/results", "/api/cohort/results", "/api/tasks/" + taskID + "/result", "/api/tasks/" + taskID + "/result", "/api/tasks/" + taskID + "/result"}
	if strings.Join(paths, " ") != strings.Join(want, " ") {
		t.Fatalf("posts %v", paths)
	}
	if cohort != 2 {
		t.Fatalf("accepted cohort results reposted")
	}
}

func TestCohortRefusedBecomesErrorEnvelope(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.hub.scripts["cohort"] = []func(http.ResponseWriter){status(422), status(200)}
	r.record(t, taskID, journal.Outcome{Success: true, CohortResults: json.RawMessage(`{"query_id":"q","trust_id":"t","created":"2025-01-02","record_count":3,"data":[],"error":null}`)})
	r.start(t, Options{})
	e := r.waitState(t, taskID, journal.Delivered)
	posts := r.hub.all()
	if len(posts) != 3 {
		t.Fatalf("%d posts", len(posts))
	}
	var env hubapi.CohortResults
	if err := json.Unmarshal([]byte(posts[1].body), &env); err != nil || env.Error == nil || !strings.HasPrefix(*env.Error, "422: ") || env.QueryID != "q" || env.Created != "2025-01-02" || env.RecordCount != 0 {
		t.Fatalf("error envelope %s", posts[1].body)
	}
	if e.Outcome.Success || !strings.Contains(posts[2].body, `"success":false`) || !strings.Contains(posts[2].body, `422: `) {
		t.Fatalf("result post %s", posts[2].body)
	}
}

func TestResumesAfterRestart(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.hub.scripts["result"] = times(1000, status(503))
	r.record(t, taskID, journal.Outcome{Success: true})
	stop := r.start(t, Options{})
	// Wait for failed attempts to be noted (a fixed sleep is too short on a
	// loaded machine).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if e, err := r.j.Get(taskID); err == nil && e.Attempts >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no two failed attempts noted within 10s")
		}
	}
	stop()
	if err := r.j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err := journal.Open(r.path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	r.j = j
	r.hub.mu.Lock()
	r.hub.scripts["result"] = nil
	r.hub.mu.Unlock()
	r.start(t, Options{})
	e := r.waitState(t, taskID, journal.Delivered)
	if e.Attempts < 2 {
		t.Fatalf("attempts before restart not kept: %d", e.Attempts)
	}
}

func TestBackoffBounds(t *testing.T) {
	t.Parallel()
	for _, jitter := range []float64{0, 0.5, 0.999} {
		d := New(nil, nil, Options{BackoffMin: time.Second, BackoffMax: 60 * time.Second, Jitter: func() float64 { return jitter }}, slog.New(slog.DiscardHandler))
		for n := 1; n < 100; n++ {
			got := d.backoff(n)
			ceiling := min(time.Second<<min(n-1, 20), 60*time.Second)
			if got < time.Second || got > ceiling {
				t.Fatalf("attempt %d jitter %v: %v outside [1s, %v]", n, jitter, got, ceiling)
			}
		}
	}
}

// Entries handed over by Recorded are posted at once, and an entry that
// reached the outbox without a hand-over is still found, at the latest when
// another entry's retry comes due.
func TestHandedOverAndListedEntriesAreDelivered(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	const a, b, c = "3c9f5a6d-2e3b-4d4c-8f9a-1b2c3d4e5f60", "4dab6b7e-3f4c-4e5d-9a0b-2c3d4e5f6071", "5ebc7c8f-4a5d-4f6e-8b1c-3d4e5f607182"
	r.hub.scripts["result"] = []func(http.ResponseWriter){status(400), status(200)}
	c2 := hub.New(hub.Options{BaseURL: r.srv.URL + "/api", Key: "k", Timeout: time.Second}, slog.New(slog.DiscardHandler))
	d := New(r.j, c2, Options{BackoffMin: 300 * time.Millisecond, BackoffMax: 300 * time.Millisecond}, slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	r.record(t, a, journal.Outcome{Success: true, Result: strp("a")})
	d.Recorded(a)
	for len(r.hub.all()) == 0 { // a's first post fails with 400: retried in 300 ms
		time.Sleep(time.Millisecond)
	}
	r.record(t, c, journal.Outcome{Success: true, Result: strp("c")}) // no hand-over
	r.record(t, b, journal.Outcome{Success: true, Result: strp("b")})
	d.Recorded(b)
	r.waitState(t, b, journal.Delivered)
	r.waitState(t, a, journal.Delivered)
	r.waitState(t, c, journal.Delivered)
	var order []string
	for _, p := range r.hub.all() {
		order = append(order, strings.TrimSuffix(strings.TrimPrefix(p.path, "/api/tasks/"), "/result"))
	}
	if len(order) != 4 || order[0] != a || order[1] != b {
		t.Fatalf("posts in order %v; want a (refused), b at once, then a and c", order)
	}
}
