package journal

import (
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

// recordedIDs lists the recorded entries by a full scan, the reference the
// outbox index must agree with.
func recordedIDs(t *testing.T, j *Journal) []string {
	t.Helper()
	entries, err := j.List(Recorded)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range entries {
		ids = append(ids, e.ID)
	}
	return ids
}

func outbox(t *testing.T, j *Journal) []string {
	t.Helper()
	ids, err := j.Outbox()
	if err != nil {
		t.Fatal(err)
	}
	return ids
}

func TestOutboxFollowsStateAndSurvivesReopen(t *testing.T) {
	t.Parallel()
	now := time.Date(2025, 3, 1, 0, 0, 0, 0, time.UTC)
	clock := func() time.Time { now = now.Add(time.Second); return now }
	path := filepath.Join(t.TempDir(), "j.db")
	j, err := Open(path, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"a", "b", "c", "d", "e"} {
		if _, _, err := j.Claim(id, "get_imaging_status", "p"); err != nil {
			t.Fatal(err)
		}
	}
	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"record out of claim order", func() error {
			for _, id := range []string{"d", "b", "a", "e"} {
				if _, err := j.Record(id, Outcome{}); err != nil {
					return err
				}
			}
			return nil
		}, []string{"a", "b", "d", "e"}},
		{"delivered leaves", func() error { _, err := j.MarkDelivered("b"); return err }, []string{"a", "d", "e"}},
		{"rejected leaves", func() error { _, err := j.MarkRejected("d", 409); return err }, []string{"a", "e"}},
		{"attempts and cohort marks stay", func() error {
			if _, err := j.NoteAttempt("a"); err != nil {
				return err
			}
			_, err := j.ReplaceOutcome("e", Outcome{Success: true})
			return err
		}, []string{"a", "e"}},
		{"redelivery comes back", func() error { _, err := j.Redeliver("b"); return err }, []string{"a", "b", "e"}},
		{"failed transition changes nothing", func() error {
			if _, err := j.MarkDelivered("c"); !errors.Is(err, ErrTransition) {
				return fmt.Errorf("want ErrTransition, got %v", err)
			}
			return nil
		}, []string{"a", "b", "e"}},
	}
	for _, st := range steps {
		if err := st.do(); err != nil {
			t.Fatalf("%s: %v", st.name, err)
		}
		if got := outbox(t, j); !slices.Equal(got, st.want) {
			t.Fatalf("%s: outbox %v, want %v", st.name, got, st.want)
		}
		if got := recordedIDs(t, j); !slices.Equal(got, st.want) {
			t.Fatalf("%s: recorded entries %v, want %v", st.name, got, st.want)
		}
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j, err = Open(path, Options{Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if got, want := outbox(t, j), recordedIDs(t, j); !slices.Equal(got, want) || len(got) != 3 {
		t.Fatalf("after reopen: outbox %v, recorded entries %v", got, want)
	}
}

func TestClaimAllIsOneBatch(t *testing.T) {
	t.Parallel()
	j := open(t, filepath.Join(t.TempDir(), "j.db"))
	defer j.Close()
	if _, _, err := j.Claim("known", "delete_imaging", "OLD"); err != nil {
		t.Fatal(err)
	}
	res, err := j.ClaimAll([]Task{
		{ID: "n1", TaskType: "get_imaging_status", Payload: "P1", Start: true},
		{ID: "known", TaskType: "delete_imaging", Payload: "NEW", Start: true},
		{ID: "n2", TaskType: "cohort_query", Payload: "P2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		i       int
		id      string
		created bool
		payload string
		state   State
	}{{0, "n1", true, "P1", Running}, {1, "known", false, "OLD", Claimed}, {2, "n2", true, "P2", Claimed}}
	for _, tc := range tests {
		t.Run(tc.id, func(t *testing.T) {
			r := res[tc.i]
			if r.Entry.ID != tc.id || r.Created != tc.created || r.Entry.Payload != tc.payload || r.Entry.State != tc.state {
				t.Fatalf("answer %d: %+v", tc.i, r)
			}
			e, err := j.Get(tc.id)
			if err != nil || e.Payload != tc.payload || e.State != tc.state {
				t.Fatalf("stored: %+v %v", e, err)
			}
		})
	}
}

// Concurrent writers share commits, yet each sees only its own answer: a
// refused transition fails alone and the others are all stored.
func TestConcurrentWritesEachDurable(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "j.db")
	j := open(t, path)
	const n = 64
	for i := range n {
		if _, _, err := j.Claim(fmt.Sprintf("t%02d", i), "get_imaging_status", "p"); err != nil {
			t.Fatal(err)
		}
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			id := fmt.Sprintf("t%02d", i)
			if i%8 == 0 {
				_, errs[i] = j.MarkDelivered(id) // not recorded: refused
				return
			}
			if _, err := j.MarkRunning(id); err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = j.Record(id, Outcome{Success: true})
		})
	}
	wg.Wait()
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	j = open(t, path)
	defer j.Close()
	for i := range n {
		id := fmt.Sprintf("t%02d", i)
		e, err := j.Get(id)
		if err != nil {
			t.Fatal(err)
		}
		if i%8 == 0 {
			if !errors.Is(errs[i], ErrTransition) || e.State != Claimed {
				t.Fatalf("%s: refused write answered %v, state %s", id, errs[i], e.State)
			}
			continue
		}
		if errs[i] != nil || e.State != Recorded {
			t.Fatalf("%s: answered %v, state %s", id, errs[i], e.State)
		}
	}
	if got := outbox(t, j); len(got) != n-n/8 {
		t.Fatalf("outbox holds %d ids, want %d", len(got), n-n/8)
	}
}
