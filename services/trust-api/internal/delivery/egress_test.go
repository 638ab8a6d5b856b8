package delivery

import (
	"context"
	"encoding/json"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/egress"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/shared/ledger"
)

const (
	taskA = "3c9f5a6d-2e3b-4d4c-8f9a-1b2c3d4e5f60"
	taskB = "4d0a6b7e-3f4c-4e5d-9a0b-2c3d4e5f6071"
)

// gated starts a Deliverer behind a real egress gate with policy.
func (r *rig) gated(t *testing.T, policy egress.Policy) (*egress.Gate, string) {
	t.Helper()
	dir := t.TempDir()
	led, err := ledger.Open(filepath.Join(dir, "audit"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var d *Deliverer
	g, err := egress.Open(filepath.Join(dir, "egress.db"), led, egress.Options{
		Policy: policy, OnDecision: func(it egress.Item) { d.Resume(it.TaskID) },
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = g.Close(); _ = led.Close() })
	c := hub.New(hub.Options{BaseURL: r.srv.URL + "/api", Key: "k", Timeout: time.Second}, slog.New(slog.DiscardHandler))
	d = New(r.j, c, Options{BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond, Gate: g, HeldRecheck: time.Hour},
		slog.New(slog.DiscardHandler))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = d.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return g, led.Dir()
}

func stats(queryID string) json.RawMessage {
	return json.RawMessage(`{"query_id":"` + queryID + `","trust_id":"t1","created":"2026-03-01","record_count":40,"data":[{"name":"gender","results":[{"value":"F","count":25}]}]}`)
}

func heldItem(t *testing.T, g *egress.Gate, task string) egress.Item {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		items, _ := g.List(egress.Held)
		for _, it := range items {
			if it.TaskID == task {
				return it
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("no held item for %s", task)
	return egress.Item{}
}

func TestHeldCohortResultsApprovedThenRejected(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.record(t, taskA, journal.Outcome{Success: true, CohortResults: stats("q-a"), Project: "p1"})
	r.record(t, taskB, journal.Outcome{Success: true, CohortResults: stats("q-b"), Project: "p1"})
	g, dir := r.gated(t, egress.Policy{egress.CohortResults: egress.Hold})

	a := heldItem(t, g, taskA)
	b := heldItem(t, g, taskB)
	time.Sleep(50 * time.Millisecond)
	if n := len(r.hub.all()); n != 0 {
		t.Fatalf("%d posts while held", n)
	}
	if e, _ := r.j.Get(taskA); e.Attempts != 0 {
		t.Fatalf("a held entry counted %d failed attempts", e.Attempts)
	}

	if _, err := g.Approve(a.ID, "reviewer-1", "ok"); err != nil {
		t.Fatal(err)
	}
	r.waitState(t, taskA, journal.Delivered)
	if _, err := g.Reject(b.ID, "reviewer-1", "small cells"); err != nil {
		t.Fatal(err)
	}
	eb := r.waitState(t, taskB, journal.Delivered)
	if eb.Outcome.Success || !strings.Contains(*eb.Outcome.Result, "rejected by egress review: small cells") {
		t.Fatalf("rejected outcome = %+v", eb.Outcome)
	}

	byPath := map[string][]string{}
	for _, p := range r.hub.all() {
		byPath[p.path] = append(byPath[p.path], p.body)
	}
	cohort := byPath["/api/cohort/results"]
	if len(cohort) != 2 || cohort[0] != string(stats("q-a")) {
		t.Fatalf("cohort posts = %q", cohort)
	}
	if !strings.Contains(cohort[1], `"query_id":"q-b"`) || !strings.Contains(cohort[1], `"error":"rejected by egress review: small cells"`) {
		t.Fatalf("error envelope = %s", cohort[1])
	}
	if got := byPath["/api/tasks/"+taskB+"/result"]; len(got) != 1 || !strings.Contains(got[0], `"success":false`) {
		t.Fatalf("result of B = %q", got)
	}

	// Everything posted is in the ledger, byte for byte, once.
	entries, err := ledger.Select(dir, ledger.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	posted := map[string]int{}
	for _, p := range r.hub.all() {
		_, sum := ledger.Digest([]byte(p.body))
		posted[sum]++
	}
	if len(entries) != len(posted) || len(entries) != 4 {
		t.Fatalf("%d ledger entries for %d distinct posts", len(entries), len(posted))
	}
	for _, e := range entries {
		if posted[e.SHA256] != 1 {
			t.Errorf("ledger entry %d (%s) matches %d posts", e.Seq, e.Kind, posted[e.SHA256])
		}
	}
	if entries[0].ApprovedBy != "reviewer-1" || entries[0].Project != "p1" {
		t.Fatalf("first entry = %+v", entries[0])
	}
}

func TestRefusedResultFailsAtOnce(t *testing.T) {
	t.Parallel()
	r := newRig(t)
	r.record(t, taskA, journal.Outcome{Success: true, Result: strp(`{"ID":"x"}`)})
	r.gated(t, egress.Policy{egress.TaskResult: egress.Refuse})
	e := r.waitState(t, taskA, journal.Delivered)
	if e.Outcome.Success || !strings.Contains(*e.Outcome.Result, egress.ReasonRefused) {
		t.Fatalf("outcome = %+v", e.Outcome)
	}
	posts := r.hub.all()
	if len(posts) != 1 || strings.Contains(posts[0].body, `"ID"`) {
		t.Fatalf("posts = %+v", posts)
	}
}
