package importer

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
)

func TestFullImport(t *testing.T) {
	accs := []string{"a1", "a2", "a3", "a4", "a5", "a6"}
	be := newFake(accs...)
	im := open(t, be, nil)
	if err := im.Enqueue("p1", accs); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p1", len(accs))

	got, err := im.Status("p1", accs)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{Successful: 6}); got != want {
		t.Fatalf("Status = %+v, want %+v", got, want)
	}
	bd, err := im.Breakdown("p1", accs)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(bd.Successful, accs) {
		t.Errorf("Breakdown.Successful = %v, want %v", bd.Successful, accs)
	}
	for _, a := range accs {
		r := mustRecord(t, im, "p1", a)
		if r.State != StateImported || r.StudyUID != uid(a) || r.Attempts != 0 || r.Reason != "" {
			t.Errorf("record %s = %+v", a, r)
		}
		if n := be.count(be.moves, uid(a)); n != 1 {
			t.Errorf("Move(%s) called %d times, want 1", a, n)
		}
		if !be.staged["p1\x00"+uid(a)] {
			t.Errorf("study of %s not staged under project p1", a)
		}
	}
}

func TestCountsJSONNames(t *testing.T) {
	raw, err := json.Marshal(Counts{Successful: 1, Failed: 2, Processing: 3, Queued: 4, QueueFailed: 5})
	if err != nil {
		t.Fatal(err)
	}
	want := `{"successful_count":1,"failed_count":2,"processing_count":3,"queued_count":4,"queue_failed_count":5}`
	if string(raw) != want {
		t.Fatalf("JSON = %s, want %s", raw, want)
	}
}

// TestStatusClasses puts a cohort's accessions in every class at once.
func TestStatusClasses(t *testing.T) {
	be := newFake("ok", "bad", "block", "later")
	be.moveFail[uid("bad")] = -1
	release := make(chan struct{})
	be.block[uid("block")] = release
	im := open(t, be, func(o *Options) { o.Concurrency = 1; o.MaxAttempts = 1 })

	if err := im.Enqueue("p", []string{"ok", "bad", "nf", "in/valid", "block"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	be.waitStarted(t, uid("block"))
	// The only worker is busy: this one stays queued.
	if err := im.Enqueue("p", []string{"later"}); err != nil {
		t.Fatal(err)
	}
	// Enqueueing known accessions again changes nothing: imported stays
	// successful and failed stays failed.
	if err := im.Enqueue("p", []string{"ok", "bad"}); err != nil {
		t.Fatal(err)
	}

	cohort := []string{"ok", "bad", "block", "nf", "in/valid", "later", "never", "ok"}
	bd, err := im.Breakdown("p", cohort)
	if err != nil {
		t.Fatal(err)
	}
	want := Breakdown{
		Successful:  []string{"ok"},
		Failed:      []string{"bad"},
		Processing:  []string{"block"},
		Queued:      []string{"later"},
		QueueFailed: []string{"nf", "in/valid", "never"},
	}
	for _, c := range []struct {
		name      string
		got, want []string
	}{
		{"successful", bd.Successful, want.Successful},
		{"failed", bd.Failed, want.Failed},
		{"processing", bd.Processing, want.Processing},
		{"queued", bd.Queued, want.Queued},
		{"queue_failed", bd.QueueFailed, want.QueueFailed},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("%s = %v, want %v", c.name, c.got, c.want)
		}
	}
	counts, err := im.Status("p", cohort)
	if err != nil {
		t.Fatal(err)
	}
	if wantC := (Counts{1, 1, 1, 1, 3}); counts != wantC {
		t.Errorf("Status = %+v, want %+v", counts, wantC)
	}
	if done, total := im.Progress("p"); done != 4 || total != 6 {
		t.Errorf("Progress = %d/%d, want 4/6", done, total)
	}

	close(release)
	waitDone(t, im, "p", 6)
	counts, err = im.Status("p", cohort)
	if err != nil {
		t.Fatal(err)
	}
	if wantC := (Counts{Successful: 3, Failed: 1, QueueFailed: 3}); counts != wantC {
		t.Errorf("final Status = %+v, want %+v", counts, wantC)
	}
}

func TestSelectStudy(t *testing.T) {
	a := Match{StudyUID: "1.1", AccessionNumber: "acc1"}
	b := Match{StudyUID: "1.2", AccessionNumber: "acc1"}
	upper := Match{StudyUID: "1.3", AccessionNumber: "ACC1"}
	noUID := Match{AccessionNumber: "acc1"}
	cases := []struct {
		name    string
		matches []Match
		want    Match
		reason  Reason
	}{
		{"none", nil, Match{}, ReasonNotFound},
		{"one exact", []Match{a}, a, ""},
		{"case differs only", []Match{upper}, Match{}, ReasonNotFound},
		{"exact among loose", []Match{upper, a}, a, ""},
		{"same study twice", []Match{a, a}, a, ""},
		{"two exact", []Match{a, b}, Match{}, ReasonAmbiguous},
		{"two exact and a repeat", []Match{a, b, a}, Match{}, ReasonAmbiguous},
		{"no study uid", []Match{noUID}, Match{}, ReasonNotFound},
		{"prefix is not exact", []Match{{StudyUID: "1.4", AccessionNumber: "acc10"}}, Match{}, ReasonNotFound},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, reason := selectStudy("acc1", c.matches)
			if got != c.want || reason != c.reason {
				t.Fatalf("selectStudy = %+v, %q; want %+v, %q", got, reason, c.want, c.reason)
			}
		})
	}
}

func TestSkippedAccessions(t *testing.T) {
	be := newFake("good")
	be.studies["amb"] = []Match{exact("amb"), {StudyUID: "9.9", AccessionNumber: "amb"}}
	be.studies["case"] = []Match{{StudyUID: uid("CASE"), AccessionNumber: "CASE"}}
	be.studies["mixed"] = []Match{{StudyUID: "7.7", AccessionNumber: "MIXED"}, exact("mixed")}
	im := open(t, be, nil)
	cohort := []string{"good", "nf", "amb", "case", "mixed"}
	if err := im.Enqueue("p", cohort); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", len(cohort))

	cases := []struct {
		acc    string
		state  State
		reason Reason
		moves  int
	}{
		{"good", StateImported, "", 1},
		{"nf", StateQueueFailed, ReasonNotFound, 0},
		{"amb", StateQueueFailed, ReasonAmbiguous, 0},
		{"case", StateQueueFailed, ReasonNotFound, 0},
		{"mixed", StateImported, "", 1},
	}
	for _, c := range cases {
		r := mustRecord(t, im, "p", c.acc)
		if r.State != c.state || r.Reason != c.reason {
			t.Errorf("%s: state %s reason %q, want %s %q", c.acc, r.State, r.Reason, c.state, c.reason)
		}
		if n := be.count(be.moves, uid(c.acc)); n != c.moves {
			t.Errorf("%s: %d moves, want %d", c.acc, n, c.moves)
		}
		if n := be.count(be.finds, c.acc); n != 1 {
			t.Errorf("%s: %d finds, want 1 (skips are not retried)", c.acc, n)
		}
	}
	if r := mustRecord(t, im, "p", "mixed"); r.StudyUID != uid("mixed") {
		t.Errorf("mixed chose %s, want the exact match %s", r.StudyUID, uid("mixed"))
	}
	got, err := im.Status("p", cohort)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{Successful: 2, QueueFailed: 3}); got != want {
		t.Errorf("Status = %+v, want %+v", got, want)
	}
}

func TestTransientFailuresRetried(t *testing.T) {
	be := newFake("f1", "m2", "p3")
	be.findFail["f1"] = 1
	be.moveFail[uid("m2")] = 2
	im := open(t, be, nil)
	if err := im.Enqueue("p", []string{"f1", "m2", "p3"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 3)

	cases := []struct {
		acc          string
		attempts     int
		finds, moves int
	}{
		{"f1", 1, 2, 1},
		{"m2", 2, 1, 3}, // the chosen study is kept: no new lookup on retry
		{"p3", 0, 1, 1},
	}
	for _, c := range cases {
		r := mustRecord(t, im, "p", c.acc)
		if r.State != StateImported || r.Attempts != c.attempts {
			t.Errorf("%s: %s after %d failed attempts, want imported after %d", c.acc, r.State, r.Attempts, c.attempts)
		}
		if n := be.count(be.finds, c.acc); n != c.finds {
			t.Errorf("%s: %d finds, want %d", c.acc, n, c.finds)
		}
		if n := be.count(be.moves, uid(c.acc)); n != c.moves {
			t.Errorf("%s: %d moves, want %d", c.acc, n, c.moves)
		}
	}
}

func TestPersistentFailures(t *testing.T) {
	const minWait = 40 * time.Millisecond
	be := newFake("move", "perm", "find")
	be.moveFail[uid("move")] = -1
	be.permanent[uid("perm")] = true
	be.findFail["find"] = -1
	im := open(t, be, func(o *Options) {
		o.Concurrency = 3
		o.BackoffMin, o.BackoffMax = minWait, 2*minWait
	})
	if err := im.Enqueue("p", []string{"move", "perm", "find"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 3)

	cases := []struct {
		acc      string
		state    State
		reason   Reason
		attempts int
		finds    int
		moves    int
	}{
		{"move", StateFailed, ReasonMove, 3, 1, 3},
		{"perm", StateFailed, ReasonMove, 1, 1, 1},
		// Never identified on the PACS: it never entered the retrieval.
		{"find", StateQueueFailed, ReasonFind, 3, 3, 0},
	}
	for _, c := range cases {
		r := mustRecord(t, im, "p", c.acc)
		if r.State != c.state || r.Reason != c.reason || r.Attempts != c.attempts {
			t.Errorf("%s: %s/%q after %d attempts, want %s/%q after %d",
				c.acc, r.State, r.Reason, r.Attempts, c.state, c.reason, c.attempts)
		}
		if n := be.count(be.finds, c.acc); n != c.finds {
			t.Errorf("%s: %d finds, want %d", c.acc, n, c.finds)
		}
		if n := be.count(be.moves, uid(c.acc)); n != c.moves {
			t.Errorf("%s: %d moves, want %d", c.acc, n, c.moves)
		}
	}
	be.mu.Lock()
	starts := slices.Clone(be.moveStarts[uid("move")])
	be.mu.Unlock()
	for i := 1; i < len(starts); i++ {
		if gap := starts[i].Sub(starts[i-1]); gap < minWait {
			t.Errorf("attempt %d started %v after the previous one, want at least %v", i+1, gap, minWait)
		}
	}
	got, err := im.Status("p", []string{"move", "perm", "find"})
	if err != nil {
		t.Fatal(err)
	}
	if want := (Counts{Failed: 2, QueueFailed: 1}); got != want {
		t.Errorf("Status = %+v, want %+v", got, want)
	}
}

func TestBackoffBounds(t *testing.T) {
	cases := []struct{ lo, hi time.Duration }{
		{time.Millisecond, time.Second},
		{30 * time.Second, 10 * time.Minute},
		{time.Second, time.Second},
		{time.Second, 1500 * time.Millisecond},
		{time.Hour, 1<<63 - 1},
	}
	for _, c := range cases {
		for n := 1; n <= 80; n++ {
			for range 20 {
				d := backoff(n, c.lo, c.hi)
				if d < c.lo || d > c.hi {
					t.Fatalf("backoff(%d, %v, %v) = %v, outside the bounds", n, c.lo, c.hi, d)
				}
			}
		}
	}
	// Growth: the n-th retry waits [min·2^(n-1), 1.5·min·2^(n-1)] below the cap.
	for n, want := range map[int]time.Duration{1: 10, 2: 20, 3: 40, 4: 80} {
		want *= time.Millisecond
		d := backoff(n, 10*time.Millisecond, time.Second)
		if d < want || d > want+want/2 {
			t.Errorf("backoff(%d) = %v, want within [%v, %v]", n, d, want, want+want/2)
		}
	}
	// At the cap the jitter stays below it.
	if d := backoff(20, 10*time.Millisecond, 90*time.Millisecond); d < 60*time.Millisecond {
		t.Errorf("capped backoff = %v, want at least 60ms", d)
	}
}

func TestStallDetection(t *testing.T) {
	cases := []struct {
		name     string
		setup    func(*fakeBackend)
		attempts int // MaxAttempts
		state    State
		reason   Reason
		failures int
		moves    int
	}{
		{"stalls once then succeeds", func(f *fakeBackend) { f.stall[uid("s")] = 1 }, 3, StateImported, "", 1, 2},
		{"stalls every time", func(f *fakeBackend) { f.stall[uid("s")] = -1 }, 2, StateFailed, ReasonStalled, 2, 2},
		// Slow but steady progress is not a stall: 10 reports 20ms apart
		// outlast the 60ms stall timeout several times over.
		{"slow with progress", func(f *fakeBackend) { f.slow[uid("s")] = 20 * time.Millisecond }, 3, StateImported, "", 0, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			be := newFake("s")
			c.setup(be)
			im := open(t, be, func(o *Options) {
				o.StallTimeout = 60 * time.Millisecond
				o.MaxAttempts = c.attempts
			})
			if err := im.Enqueue("p", []string{"s"}); err != nil {
				t.Fatal(err)
			}
			im.Start(context.Background())
			waitDone(t, im, "p", 1)
			r := mustRecord(t, im, "p", "s")
			if r.State != c.state || r.Reason != c.reason || r.Attempts != c.failures {
				t.Errorf("record %s/%q after %d failures, want %s/%q after %d",
					r.State, r.Reason, r.Attempts, c.state, c.reason, c.failures)
			}
			if n := be.count(be.moves, uid("s")); n != c.moves {
				t.Errorf("%d moves, want %d", n, c.moves)
			}
		})
	}
}

func TestConcurrencyBound(t *testing.T) {
	be := newFake()
	be.moveDelay = 15 * time.Millisecond
	im := open(t, be, func(o *Options) { o.Concurrency = 3 })
	for p := range 3 {
		var accs []string
		for i := range 8 {
			a := fmt.Sprintf("p%da%d", p, i)
			be.studies[a] = []Match{exact(a)}
			accs = append(accs, a)
		}
		if err := im.Enqueue(fmt.Sprintf("proj%d", p), accs); err != nil {
			t.Fatal(err)
		}
	}
	im.Start(context.Background())
	for p := range 3 {
		waitDone(t, im, fmt.Sprintf("proj%d", p), 8)
	}
	be.mu.Lock()
	peak := be.maxInflight
	be.mu.Unlock()
	if peak != 3 {
		t.Fatalf("peak of %d moves in flight, want exactly the bound 3", peak)
	}
}

func TestQueueOrderIsFIFO(t *testing.T) {
	be := newFake()
	im := open(t, be, func(o *Options) { o.Concurrency = 1 })
	var order []string
	for _, p := range []string{"b", "a"} {
		for i := range 3 {
			a := fmt.Sprintf("%s%d", p, i)
			be.studies[a] = []Match{exact(a)}
			order = append(order, a)
		}
		if err := im.Enqueue(p, order[len(order)-3:]); err != nil {
			t.Fatal(err)
		}
	}
	im.Start(context.Background())
	var got []string
	for range order {
		select {
		case u := <-be.started:
			got = append(got, strings.TrimPrefix(u, uid("")))
		case <-time.After(5 * time.Second):
			t.Fatalf("moves so far %v, want %v", got, order)
		}
	}
	if !slices.Equal(got, order) {
		t.Fatalf("moves ran in order %v, want enqueue order %v", got, order)
	}
}

func TestRestartWhileMoving(t *testing.T) {
	path := filepath.Join(t.TempDir(), "import.db")
	be := newFake("r1", "r2", "r3")
	be.block[uid("r1")] = make(chan struct{}) // never released
	be.stageEarly[uid("r1")] = true           // the data arrives, then the process stops
	opts := testOptions(path)
	opts.Concurrency = 1

	im1, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := im1.Enqueue("p", []string{"r1", "r2", "r3"}); err != nil {
		t.Fatal(err)
	}
	im1.Start(context.Background())
	be.waitStarted(t, uid("r1"))
	closed := make(chan error, 1)
	go func() { closed <- im1.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not stop the workers")
	}

	im2, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = im2.Close() })
	r := mustRecord(t, im2, "p", "r1")
	if r.State != StateQueued || r.Attempts != 0 || r.StudyUID != uid("r1") {
		t.Fatalf("after shutdown r1 = %+v, want queued, no attempt counted, study kept", r)
	}
	im2.Start(context.Background())
	waitDone(t, im2, "p", 3)
	for _, a := range []string{"r1", "r2", "r3"} {
		if r := mustRecord(t, im2, "p", a); r.State != StateImported {
			t.Errorf("%s: %s, want imported", a, r.State)
		}
		if n := be.count(be.moves, uid(a)); n != 1 {
			t.Errorf("%s moved %d times, want 1 (staging is checked first)", a, n)
		}
	}
	if n := be.count(be.finds, "r1"); n != 1 {
		t.Errorf("r1 looked up %d times, want 1 (the chosen study is kept)", n)
	}
}

// TestRestartAfterCrash resumes records a killed process left moving.
func TestRestartAfterCrash(t *testing.T) {
	path := filepath.Join(t.TempDir(), "import.db")
	be := newFake("c1", "c2")
	opts := testOptions(path)
	im, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("p", []string{"c1", "c2"}); err != nil {
		t.Fatal(err)
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	// What a crash leaves behind: c1 moving with its study chosen and
	// already fully staged, c2 moving before its lookup.
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		for _, a := range []string{"c1", "c2"} {
			k := recordKey("p", a)
			r, _, err := getRecord(b, k)
			if err != nil {
				return err
			}
			r.State = StateMoving
			if a == "c1" {
				r.StudyUID = uid(a)
			}
			if err := putJSON(b, k, r); err != nil {
				return err
			}
		}
		return nil
	})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		t.Fatal(err)
	}
	be.staged["p\x00"+uid("c1")] = true

	im, err = Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = im.Close() })
	if got, err := im.Status("p", []string{"c1", "c2"}); err != nil || got.Processing != 2 {
		t.Fatalf("before Start: %+v, %v; want 2 processing", got, err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 2)
	for a, moves := range map[string]int{"c1": 0, "c2": 1} {
		if r := mustRecord(t, im, "p", a); r.State != StateImported || r.StudyUID != uid(a) {
			t.Errorf("%s = %+v, want imported", a, r)
		}
		if n := be.count(be.moves, uid(a)); n != moves {
			t.Errorf("%s moved %d times, want %d", a, n, moves)
		}
	}
}

func TestRetryDeadlineSurvivesRestart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "import.db")
	be := newFake("d")
	be.moveFail[uid("d")] = 1
	opts := testOptions(path)
	opts.BackoffMin, opts.BackoffMax = 300*time.Millisecond, 300*time.Millisecond
	im, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("p", []string{"d"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitFor(t, "the first attempt to fail", func() bool {
		r, _, _ := im.Lookup("p", "d")
		return r.Attempts == 1
	})
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im, err = Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = im.Close() })
	r := mustRecord(t, im, "p", "d")
	if r.State != StateQueued || r.NotBefore.IsZero() {
		t.Fatalf("after restart %+v, want queued with a retry deadline", r)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 1)
	be.mu.Lock()
	starts := slices.Clone(be.moveStarts[uid("d")])
	be.mu.Unlock()
	if len(starts) != 2 || starts[1].Sub(starts[0]) < 300*time.Millisecond {
		t.Fatalf("move starts %v: want 2, at least 300ms apart across the restart", starts)
	}
}

func TestEnqueueIdempotent(t *testing.T) {
	be := newFake("a", "b", "c", "d")
	im := open(t, be, nil)
	if err := im.Enqueue("p", []string{"a", "b", "a", "c"}); err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("p", []string{"c", "d", "b"}); err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("other", []string{"a"}); err != nil {
		t.Fatal(err)
	}
	recs, err := im.Records("p")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, r := range recs {
		got = append(got, r.Accession)
		if r.State != StateQueued {
			t.Errorf("%s: %s, want queued", r.Accession, r.State)
		}
	}
	if want := []string{"a", "b", "c", "d"}; !slices.Equal(got, want) {
		t.Fatalf("records %v, want %v in first-seen order", got, want)
	}

	im.Start(context.Background())
	waitDone(t, im, "p", 4)
	waitDone(t, im, "other", 1)
	if err := im.Enqueue("p", []string{"a", "b", "c", "d"}); err != nil {
		t.Fatal(err)
	}
	if done, total := im.Progress("p"); done != 4 || total != 4 {
		t.Fatalf("Progress after re-enqueue = %d/%d, want 4/4", done, total)
	}
	time.Sleep(20 * time.Millisecond) // give a wrongly requeued accession time to move again
	for _, a := range []string{"b", "c", "d"} {
		if n := be.count(be.moves, uid(a)); n != 1 {
			t.Errorf("%s moved %d times, want 1", a, n)
		}
	}
	// "a" is moved once per project.
	if n := be.count(be.moves, uid("a")); n != 2 {
		t.Errorf("a moved %d times, want 2 (projects p and other)", n)
	}
}

func TestReimport(t *testing.T) {
	be := newFake("ok", "bad")
	be.moveFail[uid("bad")] = -1
	im := open(t, be, func(o *Options) { o.MaxAttempts = 1 })
	cohort := []string{"ok", "bad", "nf", "in valid"}
	if err := im.Enqueue("p", cohort); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 4)
	if got, _ := im.Status("p", cohort); got != (Counts{Successful: 1, Failed: 1, QueueFailed: 2}) {
		t.Fatalf("first pass: %+v", got)
	}

	// The PACS recovers and the missing study turns up.
	be.set(func() {
		be.moveFail[uid("bad")] = 0
		be.studies["nf"] = []Match{exact("nf")}
	})
	n, err := im.Reimport("p")
	if err != nil {
		t.Fatal(err)
	}
	if n != 2 {
		t.Fatalf("Reimport queued %d, want 2 (failed and not found; the invalid one cannot be retried)", n)
	}
	waitDone(t, im, "p", 4)
	if got, _ := im.Status("p", cohort); got != (Counts{Successful: 3, QueueFailed: 1}) {
		t.Fatalf("after reimport: %+v", got)
	}
	for acc, want := range map[string][3]int{"ok": {1, 1, 0}, "bad": {2, 2, 0}, "nf": {2, 1, 0}} {
		finds, moves := be.count(be.finds, acc), be.count(be.moves, uid(acc))
		if finds != want[0] || moves != want[1] {
			t.Errorf("%s: %d finds, %d moves; want %d, %d", acc, finds, moves, want[0], want[1])
		}
		if r := mustRecord(t, im, "p", acc); r.Attempts != want[2] {
			t.Errorf("%s: %d failed attempts recorded, want %d", acc, r.Attempts, want[2])
		}
	}
	if n, err := im.Reimport("p"); n != 0 || err != nil {
		t.Errorf("second Reimport = %d, %v; want 0, nil", n, err)
	}
	if n, err := im.Reimport("unknown"); n != 0 || err != nil {
		t.Errorf("Reimport of an unknown project = %d, %v; want 0, nil", n, err)
	}
}

func TestDeleteProject(t *testing.T) {
	be := newFake("a1", "a2", "a3", "b1")
	hold := make(chan struct{})
	be.block[uid("a3")] = hold
	im := open(t, be, nil)
	if err := im.Enqueue("A", []string{"a1", "a2", "nf"}); err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("B", []string{"b1"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "A", 3)
	waitDone(t, im, "B", 1)
	if err := im.Enqueue("A", []string{"a3"}); err != nil {
		t.Fatal(err)
	}
	be.waitStarted(t, uid("a3"))

	if err := im.DeleteProject(context.Background(), "A"); err != nil {
		t.Fatal(err)
	}
	if recs, err := im.Records("A"); err != nil || len(recs) != 0 {
		t.Fatalf("records of A after delete: %v, %v", recs, err)
	}
	be.mu.Lock()
	var removed []string
	for _, m := range be.removed {
		if m.Project != "A" {
			t.Errorf("removed %+v, which is not A's", m)
		}
		removed = append(removed, m.StudyUID)
	}
	be.mu.Unlock()
	slices.Sort(removed)
	if want := []string{uid("a1"), uid("a2"), uid("a3")}; !slices.Equal(removed, want) {
		t.Errorf("removed %v, want %v", removed, want)
	}
	if r := mustRecord(t, im, "B", "b1"); r.State != StateImported {
		t.Errorf("B's record: %s, want imported", r.State)
	}
	if got, _ := im.Status("A", []string{"a1"}); got != (Counts{QueueFailed: 1}) {
		t.Errorf("Status of deleted project = %+v", got)
	}

	// A failed removal is kept, blocks re-use of the project, and is
	// retried by the next DeleteProject.
	if err := im.Enqueue("A", []string{"a1"}); err != nil {
		t.Fatal(err)
	}
	waitDone(t, im, "A", 1)
	be.set(func() { be.removeFail = 1 })
	if err := im.DeleteProject(context.Background(), "A"); err == nil {
		t.Fatal("DeleteProject succeeded although Remove failed")
	}
	if err := im.Enqueue("A", []string{"a1"}); !errors.Is(err, ErrRemovalPending) {
		t.Fatalf("Enqueue during unfinished deletion = %v, want ErrRemovalPending", err)
	}
	if err := im.DeleteProject(context.Background(), "A"); err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("A", []string{"a1"}); err != nil {
		t.Fatalf("Enqueue after finished deletion: %v", err)
	}
	waitDone(t, im, "A", 1)
	if n := be.count(be.moves, uid("a1")); n != 3 {
		t.Errorf("a1 moved %d times, want 3 (once per life of project A)", n)
	}
}

func TestRemovalsRetriedOnStart(t *testing.T) {
	path := filepath.Join(t.TempDir(), "import.db")
	be := newFake("x")
	opts := testOptions(path)
	im, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("P", []string{"x"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "P", 1)
	be.set(func() { be.removeFail = 1 })
	if err := im.DeleteProject(context.Background(), "P"); err == nil {
		t.Fatal("DeleteProject succeeded although Remove failed")
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	im, err = Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = im.Close() })
	im.Start(context.Background())
	waitFor(t, "the leftover removal", func() bool {
		be.mu.Lock()
		defer be.mu.Unlock()
		return len(be.removed) == 1
	})
	waitFor(t, "the project to be usable again", func() bool {
		return im.Enqueue("P", []string{"x"}) == nil
	})
}

func TestInvalidInput(t *testing.T) {
	be := newFake()
	im := open(t, be, nil)
	bad := []string{"", ".", "..", "a/b", "a b", "a%2Fb", "ä", "x\x00y", "\xff\xfe",
		strings.Repeat("9", MaxAccessionLen+1), strings.Repeat("z", 1<<20), "../etc", "a?b", "a#b"}
	if err := im.Enqueue("p", bad); err != nil {
		t.Fatal(err)
	}
	recs, err := im.Records("p")
	if err != nil {
		t.Fatal(err)
	}
	if len(recs) != len(bad) {
		t.Fatalf("%d records, want %d", len(recs), len(bad))
	}
	for _, r := range recs {
		if r.State != StateQueueFailed || r.Reason != ReasonInvalid || !strings.HasPrefix(r.Accession, "!") || len(r.Accession) != 65 {
			t.Errorf("record %+v, want queue_failed/invalid under a hashed name", r)
		}
	}
	im.Start(context.Background())
	got, err := im.Status("p", bad)
	if err != nil {
		t.Fatal(err)
	}
	if got != (Counts{QueueFailed: len(bad)}) {
		t.Errorf("Status = %+v", got)
	}
	if n, err := im.Reimport("p"); n != 0 || err != nil {
		t.Errorf("Reimport = %d, %v; want 0, nil", n, err)
	}
	be.mu.Lock()
	finds := len(be.finds)
	be.mu.Unlock()
	if finds != 0 {
		t.Errorf("%d PACS lookups of invalid accessions", finds)
	}

	for _, p := range []string{"", "a\x00b", "\xff", strings.Repeat("p", 300)} {
		if err := im.Enqueue(p, []string{"a"}); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("Enqueue(%q) = %v", p, err)
		}
		if _, err := im.Status(p, []string{"a"}); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("Status(%q) = %v", p, err)
		}
		if _, err := im.Reimport(p); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("Reimport(%q) = %v", p, err)
		}
		if err := im.DeleteProject(context.Background(), p); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("DeleteProject(%q) = %v", p, err)
		}
		if _, err := im.Records(p); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("Records(%q) = %v", p, err)
		}
		if _, _, err := im.Lookup(p, "a"); !errors.Is(err, ErrInvalidProject) {
			t.Errorf("Lookup(%q) = %v", p, err)
		}
		if d, n := im.Progress(p); d != 0 || n != 0 {
			t.Errorf("Progress(%q) = %d/%d", p, d, n)
		}
	}
}

func TestValidAccession(t *testing.T) {
	cases := map[string]bool{
		"ACC123": true, "a.b-c_d~e": true, "...": true, strings.Repeat("1", MaxAccessionLen): true,
		"": false, ".": false, "..": false, "a/b": false, "a b": false, "é": false, "a:b": false,
		"a%20": false, strings.Repeat("1", MaxAccessionLen+1): false, "a\nb": false,
	}
	for s, want := range cases {
		if got := ValidAccession(s); got != want {
			t.Errorf("ValidAccession(%q) = %v, want %v", s, got, want)
		}
	}
}

func TestCancelStopsWithoutFailing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "import.db")
	be := newFake("k")
	be.block[uid("k")] = make(chan struct{})
	opts := testOptions(path)
	opts.MaxAttempts = 1
	im, err := Open(opts, be)
	if err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("p", []string{"k"}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	im.Start(ctx)
	be.waitStarted(t, uid("k"))
	cancel()
	waitFor(t, "the interrupted attempt to be put back", func() bool {
		r, _, _ := im.Lookup("p", "k")
		return r.State == StateQueued
	})
	r := mustRecord(t, im, "p", "k")
	if r.Attempts != 0 || r.Reason != "" {
		t.Errorf("after cancel %+v, want no failed attempt", r)
	}
	start := time.Now()
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if err := im.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := im.Enqueue("p", []string{"k"}); !errors.Is(err, ErrClosed) {
		t.Errorf("Enqueue after Close = %v, want ErrClosed", err)
	}
}

func TestLogsCarryNoAccessions(t *testing.T) {
	accs := []string{"SECRETACC1", "SECRETACC2", "SECRETACC3", "SECRETACC4"}
	be := newFake(accs[0], accs[1])
	be.moveFail[uid(accs[1])] = -1
	be.studies[accs[2]] = []Match{exact(accs[2]), {StudyUID: "5.5", AccessionNumber: accs[2]}}
	var buf syncBuffer
	im := open(t, be, func(o *Options) {
		o.MaxAttempts = 2
		o.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	if err := im.Enqueue("p", append(accs, "BAD/SECRET")); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	waitDone(t, im, "p", 5)
	if err := im.DeleteProject(context.Background(), "p"); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if strings.Contains(out, "SECRET") {
		t.Fatalf("log carries an accession in clear:\n%s", out)
	}
	if !strings.Contains(out, hashAccession(accs[1])) {
		t.Errorf("log lacks the hashed accession of the failing study:\n%s", out)
	}
}

func TestOpenErrors(t *testing.T) {
	if _, err := Open(Options{}, newFake()); err == nil {
		t.Error("Open without a path succeeded")
	}
	if _, err := Open(testOptions(filepath.Join(t.TempDir(), "x.db")), nil); err == nil {
		t.Error("Open without a backend succeeded")
	}
	path := filepath.Join(t.TempDir(), "locked.db")
	im, err := Open(testOptions(path), newFake())
	if err != nil {
		t.Fatal(err)
	}
	defer im.Close()
	opts := testOptions(path)
	opts.LockTimeout = 50 * time.Millisecond
	if _, err := Open(opts, newFake()); err == nil {
		t.Error("a second Open of a file in use succeeded")
	}
}

// TestRequeueWhileFinishing covers a record queued again (by Reimport)
// while the worker of its last attempt has not let go of it yet: the new
// item waits for that worker instead of being lost or run twice at once.
func TestRequeueWhileFinishing(t *testing.T) {
	im := open(t, newFake(), nil)
	ctx := context.Background()
	key := string(recordKey("p", "k")) // no record: run returns at once
	im.sched.push(&item{key: key, project: "p", seq: 1})
	first, fl, actx, ok := im.next(ctx)
	if !ok || first.seq != 1 {
		t.Fatalf("next = %+v, %v", first, ok)
	}
	im.mu.Lock()
	im.sched.push(&item{key: key, project: "p", seq: 2})
	im.signal()
	im.mu.Unlock()

	got := make(chan *item, 1)
	go func() {
		it, fl2, actx2, ok := im.next(ctx)
		if !ok {
			got <- nil
			return
		}
		im.run(ctx, actx2, it, fl2)
		got <- it
	}()
	waitFor(t, "the second item to be parked", func() bool {
		im.mu.Lock()
		defer im.mu.Unlock()
		return im.parked[key] != nil
	})
	select {
	case it := <-got:
		t.Fatalf("second item %+v ran while the first was in flight", it)
	case <-time.After(20 * time.Millisecond):
	}
	im.run(ctx, actx, first, fl)
	select {
	case it := <-got:
		if it == nil || it.seq != 2 {
			t.Fatalf("after the first finished, got %+v; want the item with seq 2", it)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the parked item never ran")
	}
}

func TestHeldElsewhere(t *testing.T) {
	be := newFake("a1")
	im := open(t, be, nil)
	for _, p := range []string{"A", "B"} {
		if err := im.Enqueue(p, []string{"a1"}); err != nil {
			t.Fatal(err)
		}
	}
	im.Start(context.Background())
	waitDone(t, im, "A", 1)
	waitDone(t, im, "B", 1)
	for _, except := range []string{"A", "B"} {
		if held, err := im.HeldElsewhere(uid("a1"), except); err != nil || !held {
			t.Errorf("HeldElsewhere(except %s) = %v, %v; want true", except, held, err)
		}
	}
	if err := im.DeleteProject(context.Background(), "B"); err != nil {
		t.Fatal(err)
	}
	if held, err := im.HeldElsewhere(uid("a1"), "A"); err != nil || held {
		t.Errorf("a deleted project still holds the study: %v %v", held, err)
	}
	if held, _ := im.HeldElsewhere(uid("zz"), ""); held {
		t.Error("an unknown study is held")
	}
}

// TestLookupOverlapsMove checks that while a study moves, the next
// accession is looked up and checked in staging, staying queued until its
// own move begins.
func TestLookupOverlapsMove(t *testing.T) {
	be := newFake("o1", "o2", "o3")
	hold := make(chan struct{})
	be.block[uid("o1")] = hold
	im := open(t, be, func(o *Options) { o.Concurrency = 1 })
	if err := im.Enqueue("p", []string{"o1", "o2", "o3"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	be.waitStarted(t, uid("o1"))
	waitFor(t, "the lookup of o2 during the move of o1", func() bool { return be.count(be.finds, "o2") == 1 })
	waitFor(t, "o2's study to be recorded", func() bool {
		r, _, _ := im.Lookup("p", "o2")
		return r.StudyUID == uid("o2")
	})
	if r := mustRecord(t, im, "p", "o2"); r.State != StateQueued {
		t.Errorf("o2 while o1 moves = %+v, want queued", r)
	}
	if got, _ := im.Status("p", []string{"o1", "o2", "o3"}); got != (Counts{Processing: 1, Queued: 2}) {
		t.Errorf("Status while o1 moves = %+v, want 1 processing and 2 queued", got)
	}
	if n := be.count(be.moves, uid("o2")); n != 0 {
		t.Errorf("o2 moved %d times while o1 moved, want 0 (concurrency 1)", n)
	}
	close(hold)
	waitDone(t, im, "p", 3)
	for _, a := range []string{"o1", "o2", "o3"} {
		if r := mustRecord(t, im, "p", a); r.State != StateImported || r.StudyUID != uid(a) {
			t.Errorf("%s = %+v, want imported", a, r)
		}
		if n, m := be.count(be.finds, a), be.count(be.moves, uid(a)); n != 1 || m != 1 {
			t.Errorf("%s looked up %d and moved %d times, want 1 and 1", a, n, m)
		}
	}
	be.mu.Lock()
	peak := be.maxInflight
	be.mu.Unlock()
	if peak != 1 {
		t.Errorf("peak of %d moves in flight, want 1", peak)
	}
}

// TestDeleteWhileLookedUpAhead deletes a project whose accession was
// looked up ahead and waits for a worker: the deletion does not wait for
// the move in progress, and the accession is never moved.
func TestDeleteWhileLookedUpAhead(t *testing.T) {
	be := newFake("x1", "y1")
	hold := make(chan struct{})
	be.block[uid("x1")] = hold
	im := open(t, be, func(o *Options) { o.Concurrency = 1 })
	if err := im.Enqueue("X", []string{"x1"}); err != nil {
		t.Fatal(err)
	}
	if err := im.Enqueue("Y", []string{"y1"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	be.waitStarted(t, uid("x1"))
	waitFor(t, "the lookup of y1", func() bool { return be.count(be.finds, "y1") == 1 })
	deleted := make(chan error, 1)
	go func() { deleted <- im.DeleteProject(context.Background(), "Y") }()
	select {
	case err := <-deleted:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("DeleteProject waited for another project's move")
	}
	close(hold)
	waitDone(t, im, "X", 1)
	if n := be.count(be.moves, uid("y1")); n != 0 {
		t.Errorf("y1 moved %d times after its project was deleted", n)
	}
	if recs, _ := im.Records("Y"); len(recs) != 0 {
		t.Errorf("records of Y after delete: %v", recs)
	}
}

// Wait returns when the project's last attempt ends, not before, and honours
// its context and Close.
func TestWait(t *testing.T) {
	t.Parallel()
	accs := []string{"w1", "w2", "w3"}
	be := newFake(append(accs, "w4")...)
	gate := make(chan struct{})
	be.block[uid("w3")] = gate
	be.block[uid("w4")] = make(chan struct{}) // never opened
	im := open(t, be, nil)
	if err := im.Enqueue("p", accs); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())

	short, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if done, total, err := im.Wait(short, "p"); !errors.Is(err, context.DeadlineExceeded) || done == total {
		t.Fatalf("Wait while w3 is moving = %d/%d, %v; want the deadline", done, total, err)
	}
	type result struct {
		done, total int
		err         error
	}
	got := make(chan result, 1)
	go func() {
		d, n, err := im.Wait(context.Background(), "p")
		got <- result{d, n, err}
	}()
	select {
	case r := <-got:
		t.Fatalf("Wait returned %+v before the last move ended", r)
	case <-time.After(50 * time.Millisecond):
	}
	close(gate)
	select {
	case r := <-got:
		if r.err != nil || r.done != 3 || r.total != 3 {
			t.Fatalf("Wait = %+v, want 3/3", r)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait did not return once the import ended")
	}
	if c, err := im.Status("p", accs); err != nil || c.Successful != 3 {
		t.Fatalf("Status after Wait = %+v, %v", c, err)
	}

	// A project nobody queued has nothing to wait for.
	if d, n, err := im.Wait(context.Background(), "none"); err != nil || d != 0 || n != 0 {
		t.Fatalf("Wait on an unknown project = %d/%d, %v", d, n, err)
	}
	// A waiter is released by Close.
	if err := im.Enqueue("q", []string{"w4"}); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	go func() { _, _, err := im.Wait(context.Background(), "q"); closed <- err }()
	for u := ""; u != uid("w4"); u = <-be.started {
	}
	if err := im.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-closed:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Wait after Close = %v, want ErrClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not release Wait")
	}
}

// TestHandover checks the commit between two moves of a worker: when the
// next accession is prepared by the time a move ends, the study just moved
// is recorded imported and the next one moving together (one commit, one
// instant), before the next move begins.
func TestHandover(t *testing.T) {
	t.Parallel()
	be := newFake("h1", "h2", "h3")
	hold1, hold2 := make(chan struct{}), make(chan struct{})
	be.block[uid("h1")], be.block[uid("h2")] = hold1, hold2
	im := open(t, be, func(o *Options) { o.Concurrency = 1 })
	if err := im.Enqueue("p", []string{"h1", "h2", "h3"}); err != nil {
		t.Fatal(err)
	}
	im.Start(context.Background())
	be.waitStarted(t, uid("h1"))
	waitFor(t, "h2 to be looked up and checked in staging while h1 moves", func() bool {
		return be.count(be.presents, uid("h2")) == 1
	})
	time.Sleep(10 * time.Millisecond) // for its offer to the workers
	close(hold1)
	be.waitStarted(t, uid("h2"))
	r1, r2 := mustRecord(t, im, "p", "h1"), mustRecord(t, im, "p", "h2")
	if r1.State != StateImported || r2.State != StateMoving {
		t.Fatalf("when h2's move began: h1 %s, h2 %s; want imported and moving", r1.State, r2.State)
	}
	if !r1.UpdatedAt.Equal(r2.UpdatedAt) {
		t.Errorf("h1 imported at %v and h2 moving at %v: not one commit", r1.UpdatedAt, r2.UpdatedAt)
	}
	if r := mustRecord(t, im, "p", "h3"); r.State != StateQueued {
		t.Errorf("h3 while h2 moves: %s, want queued", r.State)
	}
	close(hold2)
	waitDone(t, im, "p", 3)
	if c, _ := im.Status("p", []string{"h1", "h2", "h3"}); c.Successful != 3 {
		t.Errorf("Status = %+v, want 3 successful", c)
	}
	for _, a := range []string{"h1", "h2", "h3"} {
		if n := be.count(be.moves, uid(a)); n != 1 {
			t.Errorf("%s moved %d times, want 1", a, n)
		}
	}
}
