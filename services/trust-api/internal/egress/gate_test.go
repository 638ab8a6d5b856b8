package egress

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/ledger"
)

type env struct {
	dir   string
	now   time.Time
	mu    sync.Mutex
	ids   int
	led   *ledger.Ledger
	gate  *Gate
	saw   []Item
	clock func() time.Time
}

func newEnv(t *testing.T, policy Policy) *env {
	t.Helper()
	e := &env{dir: t.TempDir(), now: time.Date(2026, 3, 1, 9, 0, 0, 0, time.UTC)}
	e.open(t, policy)
	t.Cleanup(func() { e.close() })
	return e
}

func (e *env) open(t *testing.T, policy Policy) {
	t.Helper()
	led, err := ledger.Open(filepath.Join(e.dir, "audit"), ledger.Options{Now: e.time})
	if err != nil {
		t.Fatal(err)
	}
	g, err := Open(filepath.Join(e.dir, "egress.db"), led, Options{
		Policy: policy, Expiry: time.Hour, Now: e.time,
		NewID: func() string {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.ids++
			return fmt.Sprintf("item-%d", e.ids)
		},
		OnDecision: func(it Item) {
			e.mu.Lock()
			defer e.mu.Unlock()
			e.saw = append(e.saw, it)
		},
	})
	if err != nil {
		_ = led.Close()
		t.Fatal(err)
	}
	e.led, e.gate = led, g
}

// restart closes and reopens everything, as a new trust-api process would.
func (e *env) restart(t *testing.T, policy Policy) {
	t.Helper()
	e.close()
	e.open(t, policy)
}

func (e *env) close() {
	if e.gate != nil {
		_ = e.gate.Close()
		_ = e.led.Close()
		e.gate = nil
	}
}

func (e *env) time() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *env) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

func (e *env) entries(t *testing.T) []ledger.Entry {
	t.Helper()
	if _, err := ledger.Verify(e.led.Dir()); err != nil {
		t.Fatalf("ledger does not verify: %v", err)
	}
	out, err := ledger.Select(e.led.Dir(), ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func req(ch Channel, body string) Request {
	return Request{Channel: ch, TaskID: "task-1", Project: "proj", Content: []byte(body), Rules: []string{"floor:10"}}
}

func TestPolicy(t *testing.T) {
	t.Parallel()
	p, err := ParsePolicy(" cohort_results=hold, fl_weights=refuse ,task_result=release")
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode(CohortResults) != Hold || p.Mode(FLWeights) != Refuse || p.Mode(ImagingStatus) != Release {
		t.Fatalf("policy = %v", p)
	}
	if got := p.Merge(Policy{CohortResults: Refuse, FLMetrics: Hold, FLWeights: Release}).String(); got != "cohort_results=refuse,fl_metrics=hold,fl_weights=refuse" {
		t.Fatalf("merge = %s", got)
	}
	if _, err := ParsePolicy("cohort_result=hold,task_result=maybe,x"); err == nil {
		t.Fatal("bad policy accepted")
	}
}

func TestReleaseIsLedgeredOnce(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	it, err := e.gate.Submit(req(TaskResult, `{"success":true,"result":null}`))
	if err != nil || !it.Leaves() || it.Seq != 1 {
		t.Fatalf("submit = %+v, %v", it, err)
	}
	again, err := e.gate.Submit(req(TaskResult, `{"success":true,"result":null}`))
	if err != nil || again.ID != it.ID || again.Seq != 1 {
		t.Fatalf("resubmit = %+v, %v", again, err)
	}
	got := e.entries(t)
	size, sum := ledger.Digest([]byte(`{"success":true,"result":null}`))
	if len(got) != 1 || got[0].SHA256 != sum || got[0].Size != size || got[0].Item != it.ID || got[0].Project != "proj" {
		t.Fatalf("ledger = %+v", got)
	}
}

func TestHoldApproveReject(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{CohortResults: Hold})
	a, err := e.gate.Submit(req(CohortResults, `{"a":1}`))
	if err != nil || a.State != Held || !a.HasContent {
		t.Fatalf("submit = %+v, %v", a, err)
	}
	if len(e.entries(t)) != 0 {
		t.Fatal("a held item was ledgered")
	}
	if c, err := e.gate.Content(a.ID); err != nil || string(c) != `{"a":1}` {
		t.Fatalf("content = %q, %v", c, err)
	}
	if _, err := e.gate.Approve(a.ID, "", ""); !errors.Is(err, ErrInvalid) {
		t.Fatalf("approve without reviewer = %v", err)
	}
	a, err = e.gate.Approve(a.ID, "dr.who", "counts checked")
	if err != nil || !a.Leaves() || a.Seq != 1 {
		t.Fatalf("approve = %+v, %v", a, err)
	}
	if got := e.entries(t); len(got) != 1 || got[0].ApprovedBy != "dr.who" {
		t.Fatalf("ledger = %+v", got)
	}
	if _, err := e.gate.Reject(a.ID, "x", "y"); !errors.Is(err, ErrDecided) {
		t.Fatalf("reject after approve = %v", err)
	}

	b, _ := e.gate.Submit(req(CohortResults, `{"b":2}`))
	b, err = e.gate.Reject(b.ID, "dr.who", "cell of 11 next to a cell of 0")
	if err != nil || b.State != Rejected || b.Reason != "cell of 11 next to a cell of 0" {
		t.Fatalf("reject = %+v, %v", b, err)
	}
	if len(e.entries(t)) != 1 {
		t.Fatal("a rejected item was ledgered")
	}
	if len(e.saw) != 2 {
		t.Fatalf("OnDecision saw %d items", len(e.saw))
	}
	if _, err := e.gate.Approve("nope", "x", ""); !errors.Is(err, ErrNotFound) {
		t.Fatalf("approve unknown = %v", err)
	}
}

func TestRefuseAndNotice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{TaskResult: Refuse})
	it, err := e.gate.Submit(req(TaskResult, `{"success":true}`))
	if err != nil || it.State != Refused || it.Reason != ReasonRefused {
		t.Fatalf("submit = %+v, %v", it, err)
	}
	n := req(TaskResult, `{"success":false}`)
	n.Notice = true
	if it, err := e.gate.Submit(n); err != nil || !it.Leaves() {
		t.Fatalf("notice = %+v, %v", it, err)
	}
	if got := e.entries(t); len(got) != 1 || got[0].Rules[len(got[0].Rules)-1] != "egress_notice" {
		t.Fatalf("ledger = %+v", got)
	}
}

func TestExpiry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{CohortResults: Hold})
	a, _ := e.gate.Submit(req(CohortResults, `{"a":1}`))
	e.advance(30 * time.Minute)
	b, _ := e.gate.Submit(req(CohortResults, `{"b":1}`))
	e.advance(29 * time.Minute)
	if got, err := e.gate.ExpireDue(); err != nil || len(got) != 0 {
		t.Fatalf("early expiry = %v, %v", got, err)
	}
	e.advance(time.Minute)
	if got, err := e.gate.ExpireDue(); err != nil || len(got) != 1 || got[0].ID != a.ID || got[0].Reason != ReasonExpired {
		t.Fatalf("expiry = %+v, %v", got, err)
	}
	// A late approval expires the item instead of releasing it.
	e.advance(30 * time.Minute)
	if it, err := e.gate.Approve(b.ID, "late", ""); !errors.Is(err, ErrDecided) || it.State != Expired {
		t.Fatalf("late approve = %+v, %v", it, err)
	}
	if len(e.entries(t)) != 0 || len(e.saw) != 2 {
		t.Fatalf("ledger or decisions wrong: saw %d", len(e.saw))
	}
}

var errKilled = errors.New("killed")

// TestRestartAtEveryStep kills the release of an item after each step and
// restarts the gate: the item ends released, ledgered exactly once. A held
// item is stored approved, ledgered, then marked released; an item of a
// channel in mode release is ledgered, then stored released.
func TestRestartAtEveryStep(t *testing.T) {
	t.Parallel()
	steps := map[bool][]string{false: {"ledgered", "none"}, true: {"stored", "ledgered", "none"}}
	for _, held := range []bool{false, true} {
		for _, step := range steps[held] {
			t.Run(fmt.Sprintf("held=%v/after %s", held, step), func(t *testing.T) {
				t.Parallel()
				policy := Policy{}
				if held {
					policy[CohortResults] = Hold
				}
				killAt := func(s string, _ Item) error {
					if s == step {
						return errKilled
					}
					return nil
				}
				e := newEnv(t, policy)
				e.gate.failpoint = killAt
				it, err := e.gate.Submit(req(CohortResults, `{"x":1}`))
				if held {
					if err != nil || it.State != Held {
						t.Fatalf("submit = %+v, %v", it, err)
					}
					e.restart(t, policy) // killed while held
					e.gate.failpoint = killAt
					it, err = e.gate.Approve(it.ID, "rev", "")
				}
				if step != "none" && !errors.Is(err, errKilled) {
					t.Fatalf("release = %+v, %v; want it killed after %s", it, err, step)
				}
				e.restart(t, policy)
				items, err := e.gate.List()
				if err != nil || len(items) != 1 || !items[0].Leaves() || items[0].Seq != 1 {
					t.Fatalf("after restart = %+v, %v", items, err)
				}
				// The caller retries: the same item, no second entry.
				again, err := e.gate.Submit(req(CohortResults, `{"x":1}`))
				if err != nil || again.ID != items[0].ID || !again.Leaves() {
					t.Fatalf("retry = %+v, %v", again, err)
				}
				got := e.entries(t)
				if len(got) != 1 || got[0].Item != items[0].ID {
					t.Fatalf("ledger = %+v", got)
				}
				if held && got[0].ApprovedBy != "rev" {
					t.Fatalf("approved_by = %q", got[0].ApprovedBy)
				}
				if items[0].Project != "proj" || items[0].TaskID != "task-1" || items[0].Kind != string(CohortResults) ||
					len(items[0].Rules) != 1 || items[0].Rules[0] != "floor:10" {
					t.Fatalf("item after restart = %+v", items[0])
				}
			})
		}
	}
}

// A failure notice ledgered just before a kill is restored as a notice,
// with the rules it was submitted with.
func TestRestartRestoresNotice(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Policy{TaskResult: Refuse})
	e.gate.failpoint = func(s string, _ Item) error {
		if s == "ledgered" {
			return errKilled
		}
		return nil
	}
	n := req(TaskResult, `{"success":false}`)
	n.Notice = true
	if _, err := e.gate.Submit(n); !errors.Is(err, errKilled) {
		t.Fatalf("submit = %v", err)
	}
	e.restart(t, Policy{TaskResult: Refuse})
	it, err := e.gate.Submit(n)
	if err != nil || !it.Leaves() || !it.Notice || it.Seq != 1 || len(it.Rules) != 1 || it.Rules[0] != "floor:10" {
		t.Fatalf("after restart = %+v, %v", it, err)
	}
	if got := e.entries(t); len(got) != 1 {
		t.Fatalf("ledger = %+v", got)
	}
}

// Items released at the same time are stored in any order. A kill while an
// earlier entry's item is not stored yet, after a later one's is, must not
// leave the high-water mark past the earlier entry: the restart stores it.
func TestRestartWithEarlierEntryNotStored(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	ledgered := make(chan struct{})
	kill := make(chan struct{})
	e.gate.failpoint = func(s string, it Item) error {
		if s == "ledgered" && it.TaskID == "slow" {
			close(ledgered)
			<-kill
			return errKilled
		}
		return nil
	}
	slow := req(TaskResult, `{"a":1}`)
	slow.TaskID = "slow"
	errs := make(chan error, 1)
	go func() {
		_, err := e.gate.Submit(slow)
		errs <- err
	}()
	<-ledgered // entry 1 written, its item not stored
	fast := req(TaskResult, `{"b":2}`)
	fast.TaskID = "fast"
	if it, err := e.gate.Submit(fast); err != nil || it.Seq != 2 {
		t.Fatalf("fast = %+v, %v", it, err)
	}
	close(kill)
	if err := <-errs; !errors.Is(err, errKilled) {
		t.Fatalf("slow = %v", err)
	}
	e.restart(t, nil)
	it, err := e.gate.Submit(slow)
	if err != nil || !it.Leaves() || it.Seq != 1 {
		t.Fatalf("slow after restart = %+v, %v", it, err)
	}
	if got := e.entries(t); len(got) != 2 {
		t.Fatalf("ledger = %+v", got)
	}
}

// Concurrent submissions: the same item is ledgered once, different items
// each once, and all of them are released.
func TestConcurrentSubmissions(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	const tasks, copies = 16, 4
	var wg sync.WaitGroup
	got := make([][copies]Item, tasks)
	for i := range tasks {
		for c := range copies {
			wg.Go(func() {
				r := req(TaskResult, fmt.Sprintf(`{"n":%d}`, i))
				r.TaskID = fmt.Sprintf("task-%d", i)
				it, err := e.gate.Submit(r)
				if err != nil || !it.Leaves() {
					t.Errorf("submit %d/%d = %+v, %v", i, c, it, err)
				}
				got[i][c] = it
			})
		}
	}
	wg.Wait()
	for i := range tasks {
		for c := 1; c < copies; c++ {
			if got[i][c].ID != got[i][0].ID || got[i][c].Seq != got[i][0].Seq {
				t.Fatalf("task %d: copies differ: %+v vs %+v", i, got[i][c], got[i][0])
			}
		}
	}
	if n := len(e.entries(t)); n != tasks {
		t.Fatalf("%d ledger entries, want %d", n, tasks)
	}
	// Nothing is left for a restart to do: the mark covers every entry.
	var high uint64
	if err := e.gate.db.View(func(tx *bolt.Tx) error { high = readMark(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if high != tasks {
		t.Fatalf("high-water mark %d, want %d", high, tasks)
	}
}

func TestRequestValidation(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	for name, r := range map[string]Request{
		"unknown channel":   {Channel: "email", Content: []byte("x")},
		"no content no sum": {Channel: FLWeights, Size: 10},
		"sum mismatch":      {Channel: FLMetrics, Content: []byte("x"), SHA256: "00"},
	} {
		if _, err := e.gate.Submit(r); !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: %v", name, err)
		}
	}
	_, sum := ledger.Digest(make([]byte, 100))
	if it, err := e.gate.Submit(Request{Channel: FLWeights, TaskID: "job", Size: 100, SHA256: sum}); err != nil || !it.Leaves() || it.HasContent {
		t.Fatalf("metadata-only = %+v, %v", it, err)
	}
}

// Two approved items interrupted at different steps, one before and one
// after its ledger append, are both finished by one restart: each ledgered
// once, and nothing left for the next restart.
func TestRestartFinishesSeveralApprovedItems(t *testing.T) {
	t.Parallel()
	policy := Policy{CohortResults: Hold}
	e := newEnv(t, policy)
	a, _ := e.gate.Submit(req(CohortResults, `{"a":1}`))
	b, _ := e.gate.Submit(req(CohortResults, `{"b":1}`))
	for id, step := range map[string]string{a.ID: "stored", b.ID: "ledgered"} {
		e.gate.failpoint = func(s string, _ Item) error {
			if s == step {
				return errKilled
			}
			return nil
		}
		if _, err := e.gate.Approve(id, "rev", ""); !errors.Is(err, errKilled) {
			t.Fatalf("approve %s = %v", id, err)
		}
	}
	e.restart(t, policy)
	items, err := e.gate.List()
	if err != nil || len(items) != 2 || !items[0].Leaves() || !items[1].Leaves() {
		t.Fatalf("after restart = %+v, %v", items, err)
	}
	got := e.entries(t)
	if len(got) != 2 || got[0].Item != b.ID || got[1].Item != a.ID {
		t.Fatalf("ledger = %+v", got)
	}
	var high uint64
	if err := e.gate.db.View(func(tx *bolt.Tx) error { high = readMark(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if high != 2 {
		t.Fatalf("high-water mark %d, want 2", high)
	}
}

// A release whose store commit fails after its ledger append is stored by
// the next submission of the same item, with the same entry: the item is
// never ledgered twice.
func TestFailedStoreCommitIsRetriedWithoutASecondEntry(t *testing.T) {
	t.Parallel()
	e := newEnv(t, nil)
	errDisk := errors.New("disk full")
	e.gate.failpoint = func(s string, _ Item) error {
		if s == "commit" {
			return errDisk
		}
		return nil
	}
	r := req(TaskResult, `{"success":true}`)
	if _, err := e.gate.Submit(r); !errors.Is(err, errDisk) {
		t.Fatalf("submit = %v, want the store error", err)
	}
	e.gate.failpoint = nil
	it, err := e.gate.Submit(r)
	if err != nil || !it.Leaves() || it.Seq != 1 {
		t.Fatalf("retry = %+v, %v", it, err)
	}
	if again, err := e.gate.Submit(r); err != nil || again.ID != it.ID {
		t.Fatalf("third submit = %+v, %v", again, err)
	}
	if got := e.entries(t); len(got) != 1 || got[0].Item != it.ID {
		t.Fatalf("ledger = %+v", got)
	}
	var high uint64
	if err := e.gate.db.View(func(tx *bolt.Tx) error { high = readMark(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if high != 1 {
		t.Fatalf("high-water mark %d, want 1", high)
	}
}
