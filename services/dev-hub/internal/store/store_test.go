package store

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/hubapi"
)

var t0 = time.Date(2025, 3, 1, 9, 0, 0, 0, time.UTC)

func openTemp(t *testing.T) (*Store, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "hub.db")
	s, err := Open(path)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, path
}

func addTrust(t *testing.T, s *Store, name string) Trust {
	t.Helper()
	tr, err := s.CreateTrust(NewTrust{Name: name, Code: name, KeyHash: sha256.Sum256([]byte("key-" + name))}, t0)
	if err != nil {
		t.Fatalf("create trust %s: %v", name, err)
	}
	return tr
}

func addTask(t *testing.T, s *Store, trustID string, typ hubapi.TaskType, at time.Time) Task {
	t.Helper()
	task, err := s.CreateTask(NewTask{TrustID: trustID, TaskType: typ, Payload: json.RawMessage(`{ "a" : 1 }`)}, at)
	if err != nil {
		t.Fatalf("create task: %v", err)
	}
	return task
}

func noPrepare(Task) error { return nil }

func TestTrustNamesAreUnique(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	addTrust(t, s, "GSTT")
	_, err := s.CreateTrust(NewTrust{Name: "GSTT"}, t0)
	if !errors.Is(err, ErrTrustExists) {
		t.Fatalf("second GSTT: got %v, want ErrTrustExists", err)
	}
	if n := len(s.Credentials()); n != 1 {
		t.Fatalf("credentials after refused duplicate: %d, want 1", n)
	}
}

func TestClaimPendingOrdersLimitsAndSkipsCancelled(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	b := addTrust(t, s, "B")
	// Enqueue out of creation order to prove ordering is by created_at.
	late := addTask(t, s, a.ID, hubapi.CohortQuery, t0.Add(2*time.Second))
	early := addTask(t, s, a.ID, hubapi.DeleteImaging, t0.Add(1*time.Second))
	cancelled := addTask(t, s, a.ID, hubapi.CohortQuery, t0)
	other := addTask(t, s, b.ID, hubapi.CohortQuery, t0)
	if _, err := s.CancelTask(cancelled.ID, t0); err != nil {
		t.Fatalf("cancel: %v", err)
	}

	now := t0.Add(time.Minute)
	var prepared []string
	got, err := s.ClaimPending(a.ID, 1, now, func(t Task) error { prepared = append(prepared, t.ID); return nil })
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if len(got) != 1 || got[0].ID != early.ID {
		t.Fatalf("first claim = %v, want only %s", ids(got), early.ID)
	}
	if len(prepared) != 1 || prepared[0] != early.ID {
		t.Fatalf("prepare saw %v", prepared)
	}
	if got[0].Status != hubapi.InProgress || !got[0].UpdatedAt.Equal(now) || !got[0].DispatchedAt.Equal(now) || got[0].Dispatches != 1 {
		t.Fatalf("claimed task not stamped: %+v", got[0])
	}
	got, err = s.ClaimPending(a.ID, 50, now, noPrepare)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	if len(got) != 1 || got[0].ID != late.ID {
		t.Fatalf("second claim = %v, want only %s (cancelled never dispatched)", ids(got), late.ID)
	}
	got, _ = s.ClaimPending(a.ID, 50, now, noPrepare)
	if len(got) != 0 {
		t.Fatalf("third claim = %v, want none", ids(got))
	}
	if c, _ := s.Task(cancelled.ID); c.Status != hubapi.Cancelled {
		t.Fatalf("cancelled task status %s", c.Status)
	}
	if o, _ := s.Task(other.ID); o.Status != hubapi.Pending {
		t.Fatalf("other trust's task touched: %s", o.Status)
	}
}

func TestClaimPendingPrepareErrorRollsBack(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	task := addTask(t, s, a.ID, hubapi.CohortQuery, t0)
	boom := errors.New("boom")
	if _, err := s.ClaimPending(a.ID, 50, t0, func(Task) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("claim error = %v, want boom", err)
	}
	got, _ := s.Task(task.ID)
	if got.Status != hubapi.Pending {
		t.Fatalf("status after aborted claim = %s, want PENDING", got.Status)
	}
	claimed, err := s.ClaimPending(a.ID, 50, t0, noPrepare)
	if err != nil || len(claimed) != 1 {
		t.Fatalf("claim after abort = %v, %v", ids(claimed), err)
	}
}

func TestRecordResult(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	b := addTrust(t, s, "B")
	img := addTask(t, s, a.ID, hubapi.CreateImaging, t0)
	q := addTask(t, s, a.ID, hubapi.CohortQuery, t0.Add(time.Second))
	pendingTask := addTask(t, s, a.ID, hubapi.CohortQuery, t0.Add(2*time.Second))
	if _, err := s.ClaimPending(a.ID, 2, t0, noPrepare); err != nil {
		t.Fatalf("claim: %v", err)
	}
	res := `{"ID":"x"}`
	now := t0.Add(time.Hour)

	if _, err := s.RecordResult(img.ID, b.ID, true, &res, now); !errors.Is(err, ErrNotOwner) {
		t.Fatalf("foreign trust: %v", err)
	}
	if _, err := s.RecordResult("00000000-0000-0000-0000-000000000000", a.ID, true, nil, now); !errors.Is(err, ErrTaskNotFound) {
		t.Fatalf("missing task: %v", err)
	}
	done, err := s.RecordResult(img.ID, a.ID, true, &res, now)
	if err != nil {
		t.Fatalf("record: %v", err)
	}
	if done.Status != hubapi.Completed || !done.NeedsPostProcessing || *done.Result != res || !done.CompletedAt.Equal(now) || done.ResultPosts != 1 {
		t.Fatalf("completed create_imaging: %+v", done)
	}
	failed, err := s.RecordResult(q.ID, a.ID, false, nil, now)
	if err != nil {
		t.Fatalf("record failure: %v", err)
	}
	if failed.Status != hubapi.Failed || failed.NeedsPostProcessing || failed.Result != nil {
		t.Fatalf("failed cohort_query: %+v", failed)
	}

	var se *StatusError
	again, err := s.RecordResult(img.ID, a.ID, true, &res, now)
	if !errors.As(err, &se) || se.Status != hubapi.Completed {
		t.Fatalf("second result: %v, want StatusError COMPLETED", err)
	}
	if again.ResultPosts != 1 || again.RefusedPosts != 1 {
		t.Fatalf("after a refused post: result_posts=%d refused_posts=%d, want 1 and 1", again.ResultPosts, again.RefusedPosts)
	}
	if _, err := s.RecordResult(pendingTask.ID, a.ID, true, nil, now); !errors.As(err, &se) || se.Status != hubapi.Pending {
		t.Fatalf("result for PENDING task: %v", err)
	}
}

func TestSweepStale(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	const timeout = 30 * time.Minute
	const maxRetries = 3

	retry := addTask(t, s, a.ID, hubapi.CohortQuery, t0)
	if _, err := s.ClaimPending(a.ID, 50, t0, noPrepare); err != nil {
		t.Fatal(err)
	}
	b := addTrust(t, s, "B")
	fresh := addTask(t, s, b.ID, hubapi.CohortQuery, t0.Add(time.Second))
	if _, err := s.ClaimPending(b.ID, 50, t0.Add(20*time.Minute), noPrepare); err != nil {
		t.Fatal(err)
	}

	now := t0.Add(31 * time.Minute)
	rep, err := s.SweepStale(now, timeout, maxRetries)
	if err != nil {
		t.Fatalf("sweep: %v", err)
	}
	if len(rep.Requeued) != 1 || rep.Requeued[0] != retry.ID || len(rep.Failed) != 0 {
		t.Fatalf("sweep report %+v, want only %s requeued", rep, retry.ID)
	}
	got, _ := s.Task(retry.ID)
	if got.Status != hubapi.Pending || got.RetryCount != 1 || !got.UpdatedAt.Equal(now) {
		t.Fatalf("requeued task: %+v", got)
	}
	if f, _ := s.Task(fresh.ID); f.Status != hubapi.InProgress {
		t.Fatalf("fresh task swept: %s", f.Status)
	}

	// Exhaust the retries: each cycle dispatches and lets the task go stale.
	at := now
	for i := 2; i <= maxRetries; i++ {
		claimed, err := s.ClaimPending(a.ID, 50, at, noPrepare)
		if err != nil || len(claimed) != 1 || claimed[0].ID != retry.ID {
			t.Fatalf("redispatch %d: %v %v", i, ids(claimed), err)
		}
		at = at.Add(timeout + time.Second)
		if _, err := s.SweepStale(at, timeout, maxRetries); err != nil {
			t.Fatal(err)
		}
	}
	got, _ = s.Task(retry.ID)
	if got.RetryCount != maxRetries || got.Status != hubapi.Pending {
		t.Fatalf("after %d sweeps: %+v", maxRetries, got)
	}
	if _, err := s.ClaimPending(a.ID, 50, at, noPrepare); err != nil {
		t.Fatal(err)
	}
	at = at.Add(timeout + time.Second)
	rep, err = s.SweepStale(at, timeout, maxRetries)
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Failed) != 1 || rep.Failed[0] != retry.ID {
		t.Fatalf("final sweep %+v, want %s failed", rep, retry.ID)
	}
	got, _ = s.Task(retry.ID)
	if got.Status != hubapi.Failed || got.Result == nil || *got.Result != `{"error": "Exceeded maximum retries (3)"}` {
		t.Fatalf("exhausted task: status=%s result=%v", got.Status, got.Result)
	}
	// A result that arrives afterwards is refused.
	var se *StatusError
	if _, err := s.RecordResult(retry.ID, a.ID, true, nil, at); !errors.As(err, &se) || se.Status != hubapi.Failed {
		t.Fatalf("late result: %v", err)
	}
}

func TestStateSurvivesRestart(t *testing.T) {
	t.Parallel()
	s, path := openTemp(t)
	a := addTrust(t, s, "A")
	done := addTask(t, s, a.ID, hubapi.CohortQuery, t0)
	waiting := addTask(t, s, a.ID, hubapi.CohortQuery, t0.Add(time.Second))
	if _, err := s.ClaimPending(a.ID, 1, t0, noPrepare); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RecordResult(done.ID, a.ID, true, nil, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(a.ID, json.RawMessage(`{"trust-api":{"status":"healthy","version":null,"response_ms":null}}`), t0); err != nil {
		t.Fatal(err)
	}
	errText := "query_failed: boom"
	if _, err := s.UpsertCohortResult(hubapi.CohortResults{QueryID: "q1", TrustID: a.ID, Error: &errText}, t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2, err := Open(path)
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	defer s2.Close()
	creds := s2.Credentials()
	if len(creds) != 1 || creds[0].TrustID != a.ID || creds[0].KeyHash != sha256.Sum256([]byte("key-A")) {
		t.Fatalf("credentials after restart: %+v", creds)
	}
	tr, err := s2.Trust(a.ID)
	if err != nil || tr.LastHeartbeat == nil || tr.ServicesHealthAt == nil || len(tr.ServicesHealth) == 0 {
		t.Fatalf("trust after restart: %+v %v", tr, err)
	}
	if d, _ := s2.Task(done.ID); d.Status != hubapi.Completed {
		t.Fatalf("completed task after restart: %s", d.Status)
	}
	claimed, err := s2.ClaimPending(a.ID, 50, t0, noPrepare)
	if err != nil || len(claimed) != 1 || claimed[0].ID != waiting.ID {
		t.Fatalf("pending queue after restart: %v %v", ids(claimed), err)
	}
	rows, err := s2.CohortResults("q1")
	if err != nil || len(rows) != 1 || rows[0].Data.Error == nil || *rows[0].Data.Error != errText {
		t.Fatalf("cohort results after restart: %+v %v", rows, err)
	}
}

func TestHeartbeatBodylessKeepsSnapshot(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	a := addTrust(t, s, "A")
	snap := json.RawMessage(`{"omop":{"status":"down","version":null,"response_ms":null}}`)
	if _, err := s.Heartbeat(a.ID, snap, t0); err != nil {
		t.Fatal(err)
	}
	later := t0.Add(time.Minute)
	tr, err := s.Heartbeat(a.ID, nil, later)
	if err != nil {
		t.Fatal(err)
	}
	if !tr.LastHeartbeat.Equal(later) || !tr.ServicesHealthAt.Equal(t0) || string(tr.ServicesHealth) != string(snap) {
		t.Fatalf("bodyless heartbeat: %+v", tr)
	}
	if _, err := s.Heartbeat("00000000-0000-0000-0000-000000000000", nil, t0); !errors.Is(err, ErrTrustNotFound) {
		t.Fatalf("unknown trust: %v", err)
	}
}

func TestUpsertCohortResultCounts(t *testing.T) {
	t.Parallel()
	s, _ := openTemp(t)
	first := hubapi.CohortResults{QueryID: "q", TrustID: "t1", RecordCount: 5}
	if _, err := s.UpsertCohortResult(first, t0); err != nil {
		t.Fatal(err)
	}
	second := hubapi.CohortResults{QueryID: "q", TrustID: "t1", RecordCount: 7, Suppressed: true}
	row, err := s.UpsertCohortResult(second, t0.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if row.ReceivedCount != 2 || row.Data.RecordCount != 7 || !row.Data.Suppressed || !row.FirstReceived.Equal(t0) {
		t.Fatalf("upserted row %+v", row)
	}
	if _, err := s.UpsertCohortResult(hubapi.CohortResults{QueryID: "q", TrustID: "t2"}, t0); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpsertCohortResult(hubapi.CohortResults{QueryID: "q2", TrustID: "t1"}, t0); err != nil {
		t.Fatal(err)
	}
	rows, _ := s.CohortResults("q")
	if len(rows) != 2 {
		t.Fatalf("rows for q: %d, want 2", len(rows))
	}
	all, _ := s.CohortResults("")
	if len(all) != 3 {
		t.Fatalf("all rows: %d, want 3", len(all))
	}
}

func ids(ts []Task) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.ID
	}
	return out
}
