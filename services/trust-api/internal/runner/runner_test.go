package runner

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/services/trust-api/internal/tasks"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
)

const (
	idA = "00000000-0000-4000-8000-00000000000a"
	idB = "00000000-0000-4000-8000-00000000000b"
	idC = "00000000-0000-4000-8000-00000000000c"
	idD = "00000000-0000-4000-8000-00000000000d"
	idE = "00000000-0000-4000-8000-00000000000e"

	projectUUID = "2b8e4f5c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
)

func setup(t *testing.T) (*standinHub, *service, *service, *envelope.Cipher) {
	t.Helper()
	c, err := envelope.NewFromBase64(aesKey)
	if err != nil {
		t.Fatal(err)
	}
	return newStandinHub(t, c), newService(t, "data-access-api"), newService(t, "imaging-api"), c
}

func finished(h *standinHub, ids ...string) func() bool {
	return func() bool {
		for _, id := range ids {
			if s := h.task(id).status; s != hubapi.Completed && s != hubapi.Failed {
				return false
			}
		}
		return true
	}
}

func errorText(t *testing.T, res hubapi.TaskResult) string {
	t.Helper()
	if res.Result == nil {
		t.Fatal("failure without result text")
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(*res.Result), &body); err != nil {
		t.Fatalf("result %q is not JSON", *res.Result)
	}
	s, _ := body["error"].(string)
	return s
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	h, data, imaging, _ := setup(t)
	h.add(idA, hubapi.CohortQuery, map[string]any{"query_id": "q", "trust_id": testTrust, "query": "SELECT 1", "encrypted_project_id": "E"})
	h.add(idB, hubapi.DeleteImaging, map[string]any{"imaging_project_id": projectUUID})
	h.add(idC, "train_model", map[string]any{})
	n := startNode(t, journalPath(t), h, data, imaging, nodeOpts{})
	m := n.metrics
	eventually(t, "all results", finished(h, idA, idB, idC))

	if a := h.task(idA); a.status != hubapi.Completed || len(a.results) != 1 || a.results[0].Result != nil {
		t.Fatalf("cohort task %+v", a)
	}
	cohort := h.cohortBodies()
	if len(cohort) != 1 || !strings.Contains(string(cohort[0]), `"value":"8532"`) {
		t.Fatalf("cohort results %s", cohort)
	}
	if b := h.task(idB); b.status != hubapi.Completed || imaging.hits("DELETE /projects/"+projectUUID) != 1 {
		t.Fatalf("delete task %+v", b)
	}
	c := h.task(idC)
	if c.status != hubapi.Failed || errorText(t, c.results[0]) != "Unknown task type: train_model" {
		t.Fatalf("unknown type %+v", c)
	}
	eventually(t, "journal settled", func() bool {
		counts, _ := n.j.Counts()
		return counts[journal.Delivered] == 3
	})
	if got := testutil.ToFloat64(m.HubUp); got != 1 {
		t.Fatalf("hub_up = %v", got)
	}
}

// A task that blocks for many heartbeat intervals must not delay heartbeats.
func TestHeartbeatCadenceWhileTaskBlocks(t *testing.T) {
	t.Parallel()
	h, data, imaging, _ := setup(t)
	release := make(chan struct{})
	imaging.setBlock(release)
	h.add(idA, hubapi.DeleteImaging, map[string]any{"imaging_project_id": projectUUID})
	startNode(t, journalPath(t), h, data, imaging, nodeOpts{heartbeat: 50 * time.Millisecond, workers: 1})
	eventually(t, "the task to reach imaging-api", func() bool { return imaging.hits("DELETE /projects/"+projectUUID) == 1 })
	blockedAt := time.Now()
	time.Sleep(600 * time.Millisecond) // 12 heartbeat intervals
	close(release)
	n := 0
	for _, at := range h.heartbeatTimes() {
		if at.After(blockedAt) && at.Before(blockedAt.Add(600*time.Millisecond)) {
			n++
		}
	}
	if n < 8 {
		t.Fatalf("only %d heartbeats while a task blocked for 12 intervals", n)
	}
	eventually(t, "the result", finished(h, idA))
}

// The journal is left mid-state by a crash; a new runner settles it: an
// undelivered result is delivered without running the task, a claimed task
// runs once, a read-only task interrupted while running runs again, and a
// non-read-only one is reported FAILED without running.
func TestCrashRecovery(t *testing.T) {
	t.Parallel()
	h, data, imaging, cipher := setup(t)
	path := journalPath(t)
	seal := func(tt hubapi.TaskType, p any) string {
		raw, _ := json.Marshal(p)
		s, _ := cipher.Seal(raw, envelope.TaskContext(string(tt)))
		return s
	}
	deletePayload := map[string]any{"imaging_project_id": projectUUID}
	createPayload := map[string]any{"project_id": projectUUID, "trust_id": testTrust, "project_name": "P"}
	statusPayload := map[string]any{"imaging_project_id": "P1", "encoded_query": "U0VMRUNU"}
	// The hub has handed all four out already.
	for id, tt := range map[string]hubapi.TaskType{idA: hubapi.DeleteImaging, idB: hubapi.CreateImaging, idC: hubapi.GetImagingStatus, idD: hubapi.ReimportStudies} {
		h.add(id, tt, map[string]any{})
		h.tasks[id].status = hubapi.InProgress
	}

	j, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	j.Claim(idA, string(hubapi.DeleteImaging), seal(hubapi.DeleteImaging, deletePayload))
	j.Claim(idB, string(hubapi.CreateImaging), seal(hubapi.CreateImaging, createPayload))
	j.MarkRunning(idB)
	j.Claim(idC, string(hubapi.GetImagingStatus), seal(hubapi.GetImagingStatus, statusPayload))
	j.MarkRunning(idC)
	j.Claim(idD, string(hubapi.ReimportStudies), "SEALED")
	j.MarkRunning(idD)
	done := `{"done":true}`
	j.Record(idD, journal.Outcome{Success: true, Result: &done})
	if err := j.Close(); err != nil { // the crash
		t.Fatal(err)
	}

	n := startNode(t, path, h, data, imaging, nodeOpts{})
	eventually(t, "every result", finished(h, idA, idB, idC, idD))
	if got := imaging.hits("DELETE /projects/" + projectUUID); got != 1 {
		t.Fatalf("claimed task ran %d times", got)
	}
	if got := imaging.hits("POST /projects/create-project-from-central-hub-project"); got != 0 {
		t.Fatalf("interrupted create_imaging ran again (%d)", got)
	}
	b := h.task(idB)
	if b.status != hubapi.Failed || errorText(t, b.results[0]) != InterruptedError {
		t.Fatalf("interrupted task %+v", b)
	}
	if got := imaging.hits("GET /retrieval/import_status_count/P1"); got != 1 {
		t.Fatalf("read-only task re-ran %d times", got)
	}
	d := h.task(idD)
	if d.status != hubapi.Completed || *d.results[0].Result != done || imaging.hits("PUT /retrieval/reimport_imaging_project_studies/P1") != 0 {
		t.Fatalf("recorded task %+v", d)
	}

	// The hub's stale sweep hands A out again: its recorded result is
	// delivered again and the handler does not run a second time.
	h.reset(idA)
	eventually(t, "re-delivery", func() bool { return len(h.task(idA).results) == 2 })
	if got := imaging.hits("DELETE /projects/" + projectUUID); got != 1 {
		t.Fatalf("re-handed-out task ran %d times", got)
	}
	a := h.task(idA)
	if a.results[1].Success != a.results[0].Success {
		t.Fatalf("re-delivered result differs: %+v", a.results)
	}
	// The hub holds the result a moment before the journal says delivered.
	eventually(t, "the journal to note the re-delivery", func() bool {
		e, _ := n.j.Get(idA)
		return e.State != journal.Recorded
	})
	e, _ := n.j.Get(idA)
	if e.Redeliveries != 1 || e.State != journal.Delivered {
		t.Fatalf("journal entry %+v", e)
	}
}

// The process stops while a non-idempotent handler runs; after a restart it
// is reported interrupted and never executed again.
func TestStopMidHandlerNeverRunsTwice(t *testing.T) {
	t.Parallel()
	h, data, imaging, _ := setup(t)
	path := journalPath(t)
	release := make(chan struct{})
	defer close(release)
	imaging.setBlock(release)
	h.add(idE, hubapi.CreateImaging, map[string]any{"project_id": projectUUID, "trust_id": testTrust, "project_name": "P"})
	n := startNode(t, path, h, data, imaging, nodeOpts{})
	eventually(t, "the handler to start", func() bool {
		return imaging.hits("POST /projects/create-project-from-central-hub-project") == 1
	})
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	e := mustGet(t, path, idE)
	if e.State != journal.Running {
		t.Fatalf("after stop the task is %s", e.State)
	}
	imaging.setBlock(nil)
	startNode(t, path, h, data, imaging, nodeOpts{})
	eventually(t, "the result", finished(h, idE))
	time.Sleep(100 * time.Millisecond)
	if got := imaging.hits("POST /projects/create-project-from-central-hub-project"); got != 1 {
		t.Fatalf("create_imaging ran %d times", got)
	}
	if res := h.task(idE); res.status != hubapi.Failed || errorText(t, res.results[0]) != InterruptedError {
		t.Fatalf("task %+v", res)
	}
}

func mustGet(t *testing.T, path, id string) journal.Entry {
	t.Helper()
	j, err := journal.Open(path, journal.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	e, err := j.Get(id)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// A hub that rejects the key, then accepts it: each change is logged once,
// not once per poll, and hub_up/readiness follow.
func TestHubStateLoggedOncePerChange(t *testing.T) {
	t.Parallel()
	h, data, imaging, _ := setup(t)
	var mu sync.Mutex
	var states []bool
	h.setOverride(func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(401)
		return true
	})
	n := startNode(t, journalPath(t), h, data, imaging, nodeOpts{poll: 5 * time.Millisecond, heartbeat: 5 * time.Millisecond,
		onHubState: func(up bool, _ string) { mu.Lock(); states = append(states, up); mu.Unlock() }})
	m := n.metrics
	eventually(t, "many rejected polls", func() bool { return testutil.ToFloat64(m.Heartbeats.WithLabelValues("error")) >= 20 })
	if got := strings.Count(n.logs.String(), "Unexpected status 401 polling for tasks (the hub rejected this trust's API key"); got != 1 {
		t.Fatalf("401 on poll logged %d times", got)
	}
	if got := strings.Count(n.logs.String(), "Heartbeat rejected by hub: HTTP 401"); got != 1 {
		t.Fatalf("401 on heartbeat logged %d times", got)
	}
	if testutil.ToFloat64(m.HubUp) != 0 {
		t.Fatal("hub_up is 1 while the hub rejects the key")
	}
	h.setOverride(nil)
	eventually(t, "hub up", func() bool { return testutil.ToFloat64(m.HubUp) == 1 })
	time.Sleep(100 * time.Millisecond)
	if got := strings.Count(n.logs.String(), "Hub poll succeeding again"); got != 1 {
		t.Fatalf("recovery logged %d times", got)
	}
	h.setOverride(func(w http.ResponseWriter, _ *http.Request) bool {
		// Unreachable: drop the connection.
		hj, _ := w.(http.Hijacker)
		c, _, _ := hj.Hijack()
		c.Close()
		return true
	})
	eventually(t, "hub down", func() bool { return testutil.ToFloat64(m.HubUp) == 0 })
	time.Sleep(100 * time.Millisecond)
	if got := strings.Count(n.logs.String(), "Hub unreachable on poll"); got != 1 {
		t.Fatalf("unreachable logged %d times", got)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(states) != 3 || states[0] || !states[1] || states[2] {
		t.Fatalf("readiness transitions %v, want [false true false]", states)
	}
}

func TestIdentityMismatchStopsRunner(t *testing.T) {
	t.Parallel()
	h, data, imaging, _ := setup(t)
	h.add(idA, hubapi.DeleteImaging, map[string]any{"imaging_project_id": projectUUID})
	h.trustID = "00000000-0000-4000-8000-000000000001"
	n := startNode(t, journalPath(t), h, data, imaging, nodeOpts{expected: testTrust, poll: time.Hour, heartbeat: time.Hour})
	select {
	case err := <-n.done:
		n.cancel = nil
		_ = n.j.Close()
		var mm *hub.IdentityMismatchError
		if !errors.As(err, &mm) {
			t.Fatalf("Run returned %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("runner kept running for another trust")
	}
	if imaging.hits("DELETE /projects/"+projectUUID) != 0 {
		t.Fatal("a task ran for the wrong trust")
	}
}

func TestResultTooLarge(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("x", hubapi.MaxResultLength+1)
	out := toJournal(tasks.Outcome{Success: true, Result: &big})
	if out.Success || !strings.Contains(*out.Result, "exceeds") {
		t.Fatalf("oversized result kept: success=%v", out.Success)
	}
}
