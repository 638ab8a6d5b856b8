package store

import (
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/hubapi"
)

// Writes made at the same time share commits, yet every caller gets its own
// answer: refused writes fail alone, every task is created once, claimed
// once and has its result recorded once, and all of it is on disk.
func TestConcurrentWritesEachAnsweredAndDurable(t *testing.T) {
	t.Parallel()
	s, path := openTemp(t)
	a := addTrust(t, s, "A")
	b := addTrust(t, s, "B")
	const n = 60
	created := make([]Task, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			task, err := s.CreateTask(NewTask{TrustID: a.ID, TaskType: hubapi.GetImagingStatus, Payload: json.RawMessage(`{}`)}, t0.Add(time.Duration(i)))
			if err != nil {
				t.Errorf("create %d: %v", i, err)
			}
			created[i] = task
		})
		wg.Go(func() {
			if _, err := s.CreateTask(NewTask{TrustID: "00000000-0000-0000-0000-000000000000", TaskType: hubapi.GetImagingStatus, Payload: json.RawMessage(`{}`)}, t0); !errors.Is(err, ErrTrustNotFound) {
				t.Errorf("task for an unknown trust: %v", err)
			}
		})
	}
	wg.Wait()

	var mu sync.Mutex
	claimedBy := map[string]int{}
	for range 4 {
		wg.Go(func() {
			for {
				got, err := s.ClaimPending(a.ID, 7, t0.Add(time.Minute), noPrepare)
				if err != nil {
					t.Errorf("claim: %v", err)
					return
				}
				if len(got) == 0 {
					return
				}
				mu.Lock()
				for _, task := range got {
					claimedBy[task.ID]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(claimedBy) != n {
		t.Fatalf("%d tasks claimed, want %d", len(claimedBy), n)
	}
	for id, c := range claimedBy {
		if c != 1 {
			t.Fatalf("task %s claimed %d times", id, c)
		}
	}

	for _, task := range created {
		wg.Go(func() {
			if _, err := s.RecordResult(task.ID, b.ID, true, nil, t0.Add(2*time.Minute)); !errors.Is(err, ErrNotOwner) {
				t.Errorf("result from another trust: %v", err)
			}
		})
		wg.Go(func() {
			if _, err := s.RecordResult(task.ID, a.ID, true, nil, t0.Add(2*time.Minute)); err != nil {
				t.Errorf("result: %v", err)
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s2, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	all, err := s2.Tasks(TaskFilter{})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != n {
		t.Fatalf("%d tasks on disk, want %d", len(all), n)
	}
	for _, task := range all {
		if task.Status != hubapi.Completed || task.ResultPosts != 1 || task.Dispatches != 1 {
			t.Fatalf("task %s: status %s, %d results, %d dispatches", task.ID, task.Status, task.ResultPosts, task.Dispatches)
		}
	}
}

// The indexed status filters answer exactly what a full scan would.
func TestTasksByStatusMatchesFullScan(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	b := addTrust(t, s, "B")
	for i := range 12 {
		trust := a.ID
		if i%3 == 0 {
			trust = b.ID
		}
		addTask(t, s, trust, hubapi.GetImagingStatus, t0.Add(time.Duration(i)*time.Second))
	}
	claimedA, _ := s.ClaimPending(a.ID, 4, t0.Add(time.Minute), noPrepare)
	claimedB, _ := s.ClaimPending(b.ID, 1, t0.Add(time.Minute), noPrepare)
	if _, err := s.RecordResult(claimedA[0].ID, a.ID, true, nil, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordResult(claimedB[0].ID, b.ID, false, nil, t0.Add(2*time.Minute)); err != nil {
		t.Fatal(err)
	}
	all, err := s.Tasks(TaskFilter{})
	if err != nil {
		t.Fatal(err)
	}
	for _, st := range []hubapi.Status{hubapi.Pending, hubapi.InProgress} {
		for _, trust := range []string{"", a.ID, b.ID, "00000000-0000-0000-0000-000000000000", "not-a-uuid"} {
			t.Run(string(st)+" "+trust, func(t *testing.T) {
				var want []string
				for _, task := range all {
					if task.Status == st && (trust == "" || task.TrustID == trust) {
						want = append(want, task.ID)
					}
				}
				got, err := s.Tasks(TaskFilter{TrustID: trust, Status: st})
				if err != nil {
					t.Fatal(err)
				}
				if strings.Join(ids(got), ",") != strings.Join(want, ",") {
					t.Fatalf("got %v, want %v", ids(got), want)
				}
			})
		}
	}
}
