package projects

import (
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

func TestProvisionIsIdempotentOnTheHubProject(t *testing.T) {
	path := filepath.Join(t.TempDir(), "projects.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	hub := "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	var wg sync.WaitGroup
	ids := make(chan string, 8)
	created := make(chan bool, 8)
	for range 8 {
		wg.Go(func() {
			p, c, err := s.Provision(hub, Project{Name: "x", Query: "SELECT 1"})
			if err != nil {
				t.Error(err)
			}
			ids <- p.ID
			created <- c
		})
	}
	wg.Wait()
	close(ids)
	close(created)
	first, news := "", 0
	for id := range ids {
		if first == "" {
			first = id
		} else if id != first {
			t.Errorf("two projects for one hub project: %s and %s", first, id)
		}
	}
	for c := range created {
		if c {
			news++
		}
	}
	if news != 1 {
		t.Errorf("%d provisions reported a new project, want 1", news)
	}
	_ = s.Close()
	// Durable across a restart.
	s, err = Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	p, err := s.ByHub(hub)
	if err != nil || p.ID != first || p.HubProjectID != hub || p.Query != "SELECT 1" {
		t.Fatalf("after reopen: %+v %v", p, err)
	}
	if _, err := s.Create(Project{ID: first}); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate id: %v", err)
	}
	if list, _ := s.List(); len(list) != 1 {
		t.Errorf("list %v", list)
	}
	if _, err := s.Delete(first); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ByHub(hub); !errors.Is(err, ErrNotFound) {
		t.Errorf("deleted project still found by hub id: %v", err)
	}
	if _, err := s.Delete(first); !errors.Is(err, ErrNotFound) {
		t.Errorf("second delete: %v", err)
	}
}

// CohortPending survives a restart until CohortQueued clears it.
func TestCohortPending(t *testing.T) {
	path := filepath.Join(t.TempDir(), "projects.db")
	s, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	hub := "1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f"
	p, _, err := s.Provision(hub, Project{Name: "x", Query: "SELECT 1", CohortPending: true})
	if err != nil {
		t.Fatal(err)
	}
	_ = s.Close()
	if s, err = Open(path); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if got, err := s.Get(p.ID); err != nil || !got.CohortPending {
		t.Fatalf("after reopen: %+v %v", got, err)
	}
	for range 2 { // clearing twice is fine
		if err := s.CohortQueued(p.ID); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := s.ByHub(hub); err != nil || got.CohortPending || got.Query != "SELECT 1" || got.ID != p.ID {
		t.Fatalf("after CohortQueued: %+v %v", got, err)
	}
	if err := s.CohortQueued("no-such-project"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("CohortQueued of a missing project: %v", err)
	}
	if list, _ := s.List(); len(list) != 1 {
		t.Fatalf("%d projects, want 1", len(list))
	}
}
