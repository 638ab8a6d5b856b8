package importer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// errPACS is the fake's transient failure.
var errPACS = errors.New("fake PACS failure")

// uid is the study UID the fake gives an accession's study.
func uid(acc string) string { return "1.2.826.0.1." + acc }

// exact is the PACS answer of one study that carries acc exactly.
func exact(acc string) Match { return Match{StudyUID: uid(acc), AccessionNumber: acc, Instances: 3} }

// fakeBackend is a Backend whose answers, failures, latency and progress the
// tests control. Counters are keyed by accession or study UID.
type fakeBackend struct {
	mu sync.Mutex

	studies    map[string][]Match       // accession -> PACS answer
	findFail   map[string]int           // accession -> failures left (-1: always)
	moveFail   map[string]int           // study UID -> failures left (-1: always)
	permanent  map[string]bool          // study UID -> Move fails with ErrPermanent
	stall      map[string]int           // study UID -> attempts that stall (-1: all)
	block      map[string]chan struct{} // study UID -> Move waits for it to close
	slow       map[string]time.Duration // study UID -> one progress report per period, 10 times
	stageEarly map[string]bool          // study UID -> staged as soon as Move starts
	moveDelay  time.Duration            // every Move takes this long
	removeFail int                      // Remove calls still to fail

	staged      map[string]bool // project NUL study UID
	finds       map[string]int
	presents    map[string]int // study UID -> staging checks
	moves       map[string]int
	moveStarts  map[string][]time.Time
	removed     []Match
	inflight    int
	maxInflight int
	started     chan string // study UID of every Move start, if set
}

func newFake(accessions ...string) *fakeBackend {
	f := &fakeBackend{
		studies: map[string][]Match{}, findFail: map[string]int{}, moveFail: map[string]int{},
		permanent: map[string]bool{}, stall: map[string]int{}, block: map[string]chan struct{}{},
		slow: map[string]time.Duration{}, stageEarly: map[string]bool{},
		staged: map[string]bool{}, finds: map[string]int{}, presents: map[string]int{}, moves: map[string]int{},
		moveStarts: map[string][]time.Time{}, started: make(chan string, 1024),
	}
	for _, a := range accessions {
		f.studies[a] = []Match{exact(a)}
	}
	return f
}

func stageKey(m Match) string { return m.Project + "\x00" + m.StudyUID }

// take consumes one failure from a counter map; f.mu must be held.
func take(m map[string]int, k string) bool {
	switch n := m[k]; {
	case n < 0:
		return true
	case n > 0:
		m[k] = n - 1
		return true
	}
	return false
}

func (f *fakeBackend) Find(ctx context.Context, accession string) ([]Match, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.finds[accession]++
	if take(f.findFail, accession) {
		return nil, errPACS
	}
	return append([]Match(nil), f.studies[accession]...), nil
}

func (f *fakeBackend) Present(ctx context.Context, m Match) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.presents[m.StudyUID]++
	return f.staged[stageKey(m)], nil
}

func (f *fakeBackend) Remove(ctx context.Context, m Match) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.removeFail > 0 {
		f.removeFail--
		return errPACS
	}
	f.removed = append(f.removed, m)
	delete(f.staged, stageKey(m))
	return nil
}

func (f *fakeBackend) Move(ctx context.Context, m Match, progress func(int)) error {
	f.mu.Lock()
	u := m.StudyUID
	f.moves[u]++
	f.moveStarts[u] = append(f.moveStarts[u], time.Now())
	f.inflight++
	f.maxInflight = max(f.maxInflight, f.inflight)
	if f.stageEarly[u] {
		f.staged[stageKey(m)] = true
	}
	stall := take(f.stall, u)
	block, slow, delay := f.block[u], f.slow[u], f.moveDelay
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.inflight--
		f.mu.Unlock()
	}()
	select {
	case f.started <- u:
	default:
	}

	wait := func(d time.Duration) error {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if stall {
		progress(1)
		<-ctx.Done()
		return ctx.Err()
	}
	if block != nil {
		select {
		case <-block:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	if slow > 0 {
		for i := 1; i <= 10; i++ {
			if err := wait(slow); err != nil {
				return err
			}
			progress(i)
		}
	}
	if delay > 0 {
		if err := wait(delay); err != nil {
			return err
		}
	}

	f.mu.Lock()
	defer f.mu.Unlock()
	if f.permanent[u] {
		return errors.Join(ErrPermanent, errPACS)
	}
	if take(f.moveFail, u) {
		return errPACS
	}
	f.staged[stageKey(m)] = true
	progress(m.Instances)
	return nil
}

func (f *fakeBackend) count(m map[string]int, k string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return m[k]
}

func (f *fakeBackend) set(fn func()) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn()
}

// waitStarted waits for Move of the study to start.
func (f *fakeBackend) waitStarted(t *testing.T, studyUID string) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case u := <-f.started:
			if u == studyUID {
				return
			}
		case <-deadline:
			t.Fatalf("Move of %s never started", studyUID)
		}
	}
}

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// testOptions are fast defaults for tests.
func testOptions(path string) Options {
	return Options{
		Path:         path,
		Concurrency:  2,
		MaxAttempts:  3,
		BackoffMin:   2 * time.Millisecond,
		BackoffMax:   10 * time.Millisecond,
		StallTimeout: 5 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	}
}

// open opens an Importer on a fresh file (or opts.Path) and closes it at
// the end of the test.
func open(t *testing.T, be Backend, tweak func(*Options)) *Importer {
	t.Helper()
	opts := testOptions(filepath.Join(t.TempDir(), "import.db"))
	if tweak != nil {
		tweak(&opts)
	}
	im, err := Open(opts, be)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { _ = im.Close() })
	return im
}

// waitFor polls cond until it holds, failing the test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitDone waits until all n recorded accessions of project are finished.
func waitDone(t *testing.T, im *Importer, project string, n int) {
	t.Helper()
	waitFor(t, "project "+project+" to finish", func() bool {
		done, total := im.Progress(project)
		return total == n && done == n
	})
}

// mustRecord returns the record of an accession, failing if there is none.
func mustRecord(t *testing.T, im *Importer, project, acc string) Record {
	t.Helper()
	r, ok, err := im.Lookup(project, acc)
	if err != nil || !ok {
		t.Fatalf("Lookup(%q, %q) = %v, %v", project, acc, ok, err)
	}
	return r
}
