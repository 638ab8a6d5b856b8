package journal

import (
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func open(t *testing.T, path string) *Journal {
	t.Helper()
	j, err := Open(path, Options{LockTimeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	return j
}

func strp(s string) *string { return &s }

func TestLifecycleSurvivesReopen(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "journal.db")
	j := open(t, path)
	if _, created, err := j.Claim("t1", "cohort_query", "SEALED"); err != nil || !created {
		t.Fatalf("claim: created=%v err=%v", created, err)
	}
	if _, err := j.MarkRunning("t1"); err != nil {
		t.Fatal(err)
	}
	out := Outcome{Success: true, CohortResults: json.RawMessage(`{"query_id":"q"}`)}
	if _, err := j.Record("t1", out); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}

	j = open(t, path)
	defer j.Close()
	e, err := j.Get("t1")
	if err != nil {
		t.Fatal(err)
	}
	if e.State != Recorded || e.Payload != "SEALED" || e.TaskType != "cohort_query" {
		t.Fatalf("after reopen: %+v", e)
	}
	if e.Outcome == nil || string(e.Outcome.CohortResults) != `{"query_id":"q"}` || e.Outcome.CohortDone {
		t.Fatalf("outcome lost: %+v", e.Outcome)
	}
	if _, err := j.MarkCohortDone("t1"); err != nil {
		t.Fatal(err)
	}
	if e, _ = j.MarkDelivered("t1"); e.State != Delivered || !e.Outcome.CohortDone {
		t.Fatalf("delivered: %+v", e)
	}
}

func TestClaimTwiceKeepsFirst(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if _, _, err := j.Claim("t1", "delete_imaging", "A"); err != nil {
		t.Fatal(err)
	}
	if _, err := j.MarkRunning("t1"); err != nil {
		t.Fatal(err)
	}
	e, created, err := j.Claim("t1", "delete_imaging", "B")
	if err != nil || created {
		t.Fatalf("second claim created=%v err=%v", created, err)
	}
	if e.State != Running || e.Payload != "A" {
		t.Fatalf("second claim changed the entry: %+v", e)
	}
}

func TestTransitions(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	tests := []struct {
		name string
		prep func(id string)
		do   func(id string) error
		ok   bool
	}{
		{"running from claimed", func(string) {}, func(id string) error { _, err := j.MarkRunning(id); return err }, true},
		{"delivered needs recorded", func(string) {}, func(id string) error { _, err := j.MarkDelivered(id); return err }, false},
		{"record twice", func(id string) { j.Record(id, Outcome{}) }, func(id string) error { _, err := j.Record(id, Outcome{}); return err }, false},
		{"redeliver unfinished", func(string) {}, func(id string) error { _, err := j.Redeliver(id); return err }, false},
		{"requeue claimed", func(string) {}, func(id string) error { _, err := j.Requeue(id); return err }, false},
		{"rejected from recorded", func(id string) { j.Record(id, Outcome{}) }, func(id string) error { _, err := j.MarkRejected(id, 409); return err }, true},
	}
	for i, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			id := "id" + strings.Repeat("x", i)
			if _, _, err := j.Claim(id, "cohort_query", "p"); err != nil {
				t.Fatal(err)
			}
			tc.prep(id)
			err := tc.do(id)
			if tc.ok && err != nil {
				t.Fatalf("want ok, got %v", err)
			}
			if !tc.ok && !errors.Is(err, ErrTransition) {
				t.Fatalf("want ErrTransition, got %v", err)
			}
		})
	}
	if _, err := j.MarkRunning("missing"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing id: %v", err)
	}
}

func TestRedeliverAndRejected(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	j.Claim("t", "get_imaging_status", "p")
	j.Record("t", Outcome{Success: true, Result: strp(`{"a":1}`)})
	if e, err := j.MarkRejected("t", 409); err != nil || e.RejectCode != 409 || e.State != Rejected {
		t.Fatalf("rejected: %+v %v", e, err)
	}
	e, err := j.Redeliver("t")
	if err != nil || e.State != Recorded || e.RejectCode != 0 || e.Redeliveries != 1 || *e.Outcome.Result != `{"a":1}` {
		t.Fatalf("redeliver: %+v %v", e, err)
	}
}

func TestListCountsPrune(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 1, 10, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { return now }
	j, err := Open(filepath.Join(t.TempDir(), "j.db"), Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	for _, id := range []string{"old-done", "old-open", "new-done"} {
		j.Claim(id, "cohort_query", "p")
		now = now.Add(time.Minute)
	}
	now = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	j.Record("old-done", Outcome{})
	j.MarkDelivered("old-done")
	j.MarkRunning("old-open")
	now = time.Date(2025, 1, 20, 0, 0, 0, 0, time.UTC)
	j.Record("new-done", Outcome{})
	j.MarkDelivered("new-done")

	c, err := j.Counts()
	if err != nil {
		t.Fatal(err)
	}
	if c[Delivered] != 2 || c[Running] != 1 || c[Claimed] != 0 {
		t.Fatalf("counts %v", c)
	}
	open, _ := j.List(Claimed, Running, Recorded)
	if len(open) != 1 || open[0].ID != "old-open" {
		t.Fatalf("list open: %+v", open)
	}
	all, _ := j.List()
	if len(all) != 3 || all[0].ID != "old-done" || all[2].ID != "new-done" {
		t.Fatalf("list order: %v", all)
	}
	n, err := j.Prune(time.Date(2025, 1, 15, 0, 0, 0, 0, time.UTC))
	if err != nil || n != 1 {
		t.Fatalf("prune n=%d err=%v", n, err)
	}
	if _, err := j.Get("old-done"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("old-done survived prune: %v", err)
	}
	if _, err := j.Get("old-open"); err != nil {
		t.Fatalf("unfinished entry pruned: %v", err)
	}
}

func TestSecondOpenFailsFast(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	defer j.Close()
	start := time.Now()
	if _, err := Open(path, Options{LockTimeout: 100 * time.Millisecond}); err == nil {
		t.Fatal("second open of a locked journal succeeded")
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("second open did not honour the lock timeout")
	}
}
