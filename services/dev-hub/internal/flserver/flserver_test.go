package flserver

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/safetensors"
)

// fixture is a server over a temporary directory.
type fixture struct {
	t    *testing.T
	dir  string
	arts *flproto.ArtifactStore
	srv  *Server
	cfg  Config
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	dir := t.TempDir()
	arts, err := flproto.NewArtifactStore(filepath.Join(dir, "artifacts"), flproto.DefaultChunkSize)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, dir: dir, arts: arts, cfg: cfg}
	f.open()
	t.Cleanup(func() { _ = f.srv.Close() })
	return f
}

func (f *fixture) open() {
	f.t.Helper()
	srv, err := Open(filepath.Join(f.dir, "fl.db"), f.arts, f.cfg, nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.srv = srv
}

// restart closes the server and opens it again over the same files.
func (f *fixture) restart() {
	f.t.Helper()
	if err := f.srv.Close(); err != nil {
		f.t.Fatal(err)
	}
	f.open()
}

func (f *fixture) clients(names ...string) {
	f.t.Helper()
	for _, n := range names {
		if _, err := f.srv.RegisterClient(n); err != nil {
			f.t.Fatal(err)
		}
	}
}

// model stores a safetensors file with F32 "weight" and "bias" and an I64
// "step", and returns its id.
func (f *fixture) model(weight []float64, bias float64, step int64) string {
	f.t.Helper()
	w, err := safetensors.FloatTensor("weight", safetensors.F32, []int64{int64(len(weight))}, weight)
	if err != nil {
		f.t.Fatal(err)
	}
	b, err := safetensors.FloatTensor("bias", safetensors.F32, []int64{1}, []float64{bias})
	if err != nil {
		f.t.Fatal(err)
	}
	s := safetensors.Tensor{Name: "step", DType: safetensors.I64, Shape: []int64{1}, Data: binary.LittleEndian.AppendUint64(nil, uint64(step))}
	var buf bytes.Buffer
	if err := safetensors.Encode(&buf, []safetensors.Tensor{w, b, s}, nil); err != nil {
		f.t.Fatal(err)
	}
	m, err := f.arts.Put(context.Background(), &buf)
	if err != nil {
		f.t.Fatal(err)
	}
	return m.ID
}

// weights reads a stored model back.
func (f *fixture) weights(id string) (weight []float64, bias float64, step int64) {
	f.t.Helper()
	file, _, err := f.arts.Open(id)
	if err != nil {
		f.t.Fatal(err)
	}
	name := file.Name()
	file.Close()
	st, err := safetensors.Open(name)
	if err != nil {
		f.t.Fatal(err)
	}
	defer st.Close()
	if weight, err = st.Floats("weight"); err != nil {
		f.t.Fatal(err)
	}
	b, err := st.Floats("bias")
	if err != nil {
		f.t.Fatal(err)
	}
	t, _ := st.Tensor("step")
	raw := make([]byte, 8)
	if _, err := st.Section(t).ReadAt(raw, 0); err != nil {
		f.t.Fatal(err)
	}
	return weight, b[0], int64(binary.LittleEndian.Uint64(raw))
}

func (f *fixture) spec(kind, model string, clients ...string) JobSpec {
	return JobSpec{
		Kind: kind, Clients: clients, Model: model, RoundTimeoutSeconds: 30,
		Job:  flproto.JobRef{Name: flproto.BuiltinLogReg},
		Data: flproto.DataRef{EncryptedProjectID: "sealed-project", Query: "SELECT 1"},
	}
}

func (f *fixture) submit(spec JobSpec) Job {
	f.t.Helper()
	j, err := f.srv.Submit(spec)
	if err != nil {
		f.t.Fatal(err)
	}
	return j
}

// poll long-polls for client's next task and fails the test when none comes.
func (f *fixture) poll(client string) flproto.Task {
	f.t.Helper()
	task, ok, err := f.srv.NextTask(context.Background(), client, 5*time.Second)
	if err != nil || !ok {
		f.t.Fatalf("%s: no task (ok=%v, err=%v)", client, ok, err)
	}
	return task
}

func (f *fixture) noTask(client string) {
	f.t.Helper()
	task, ok, err := f.srv.NextTask(context.Background(), client, 0)
	if err != nil || ok {
		f.t.Fatalf("%s: want no task, got %+v (err %v)", client, task, err)
	}
}

func (f *fixture) result(client, task string, res flproto.Result) {
	f.t.Helper()
	if err := f.srv.Result(client, task, res); err != nil {
		f.t.Fatalf("%s result: %v", client, err)
	}
}

// until waits for the job to satisfy cond.
func (f *fixture) until(id string, what string, cond func(Job) bool) Job {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		j, err := f.srv.Job(id)
		if err != nil {
			f.t.Fatal(err)
		}
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("job %s: %s never happened; state %s round %d error %q", id, what, j.State, j.Round, j.Error)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func near(a, b float64) bool { return math.Abs(a-b) < 1e-6 }

func nearAll(got, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if !near(got[i], want[i]) {
			return false
		}
	}
	return true
}

func TestThreeRoundFedAvgWeightsBySampleCount(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("Trust_1", "Trust_2")
	global := f.model([]float64{1, 2, 3}, 0.5, 7)
	spec := f.spec(flproto.KindTrain, global, "Trust_1", "Trust_2")
	spec.Rounds = 3
	job := f.submit(spec)

	// Trust_1 trained on 1 row, Trust_2 on 3: weights 1/4 and 3/4.
	upd1 := f.model([]float64{4, 0, -4}, 1, 99)
	upd2 := f.model([]float64{0, 4, 8}, -1, 99)
	wantW, wantB := []float64{1, 2, 3}, 0.5
	prev := global
	for round := 1; round <= 3; round++ {
		t1, t2 := f.poll("Trust_1"), f.poll("Trust_2")
		for _, task := range []flproto.Task{t1, t2} {
			if task.Round != round || task.Rounds != 3 || task.Model != prev || task.JobID != job.ID || task.Kind != flproto.KindTrain {
				t.Fatalf("round %d: task %+v, want model %s", round, task, prev)
			}
		}
		f.result("Trust_1", t1.ID, flproto.Result{Status: "ok", Update: upd1, SampleCount: 1, Metrics: map[string]float64{"loss": 0.4, "tp": 2}})
		f.result("Trust_2", t2.ID, flproto.Result{Status: "ok", Update: upd2, SampleCount: 3, Metrics: map[string]float64{"loss": 0.8, "tp": 5}})
		// By hand: global + 1/4·upd1 + 3/4·upd2 = global + [1, 3, 5], bias − 0.5.
		wantW = []float64{wantW[0] + 1, wantW[1] + 3, wantW[2] + 5}
		wantB -= 0.5
		j := f.until(job.ID, "round close", func(j Job) bool { return len(j.Rounds) >= round && j.Rounds[round-1].ClosedAt != nil })
		r := j.Rounds[round-1]
		if r.OK != 2 || r.Returned != 2 || r.SampleCount != 4 {
			t.Fatalf("round %d: ok %d returned %d samples %d", round, r.OK, r.Returned, r.SampleCount)
		}
		if !near(r.Metrics["loss"], 0.7) || r.Metrics["tp"] != 7 {
			t.Fatalf("round %d metrics %v, want loss 0.7 (weighted) and tp 7 (summed)", round, r.Metrics)
		}
		w, b, step := f.weights(r.NewModel)
		if !nearAll(w, wantW) || !near(b, wantB) || step != 7 {
			t.Fatalf("round %d: weight %v bias %v step %d, want %v %v 7", round, w, b, step, wantW, wantB)
		}
		prev = r.NewModel
	}
	j := f.until(job.ID, "completion", func(j Job) bool { return j.State == JobCompleted })
	if j.FinalModel != prev || j.Round != 3 || len(j.Rounds) != 3 || j.FinishedAt == nil {
		t.Fatalf("completed job %+v, want final model %s", j, prev)
	}
	w, b, _ := f.weights(j.FinalModel)
	if !nearAll(w, []float64{4, 11, 18}) || !near(b, -1) {
		t.Fatalf("final weights %v %v", w, b)
	}
}

func TestSilentClientRoundClosesAtDeadlineAndGetsNextRound(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{0, 0}, 0, 0)
	spec := f.spec(flproto.KindTrain, global, "A", "B")
	spec.Rounds, spec.MinClients, spec.RoundTimeoutSeconds = 2, 1, 1
	job := f.submit(spec)

	ta := f.poll("A")
	tb := f.poll("B") // B takes its task and then dies
	upd := f.model([]float64{2, -2}, 1, 0)
	f.result("A", ta.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 10})
	start := time.Now()
	j := f.until(job.ID, "round 2", func(j Job) bool { return j.Round == 2 })
	if waited := time.Since(start); waited < 500*time.Millisecond {
		t.Fatalf("round 1 closed after %s, before its deadline", waited)
	}
	r1 := j.Rounds[0]
	if r1.OK != 1 || r1.Clients[1].Status != StatusMissing || r1.Clients[0].Status != StatusOK {
		t.Fatalf("round 1: %+v", r1)
	}
	if w, b, _ := f.weights(r1.NewModel); !nearAll(w, []float64{2, -2}) || !near(b, 1) {
		t.Fatalf("round 1 model %v %v, want A's update alone", w, b)
	}
	// The late result of the silent client is refused.
	err := f.srv.Result("B", tb.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 5})
	if !errors.Is(err, ErrRoundClosed) {
		t.Fatalf("late result: %v, want ErrRoundClosed", err)
	}
	if hb, err := f.srv.Heartbeat("B", tb.ID); err != nil || !hb.Cancel {
		t.Fatalf("heartbeat of the closed round: %+v %v, want cancel", hb, err)
	}
	// B comes back and gets round 2 on its next poll.
	tb2 := f.poll("B")
	if tb2.Round != 2 || tb2.ID == tb.ID || tb2.Model != r1.NewModel {
		t.Fatalf("B's next task %+v", tb2)
	}
}

func TestTooFewClientsFailsTheJobWithTheReason(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{0}, 0, 0)
	spec := f.spec(flproto.KindTrain, global, "A", "B")
	spec.Rounds = 3
	job := f.submit(spec)
	upd := f.model([]float64{1}, 1, 0)
	for round := 1; round <= 2; round++ {
		ta, tb := f.poll("A"), f.poll("B")
		f.result("A", ta.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 1})
		if round == 1 {
			f.result("B", tb.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 1})
			continue
		}
		f.result("B", tb.ID, flproto.Result{Status: "failed", Failure: "oom", Error: "CUDA out of memory"})
	}
	j := f.until(job.ID, "failure", func(j Job) bool { return j.Terminal() })
	want := "round 2: 1 of 2 clients returned an update, 2 required"
	if j.State != JobFailed || j.Error != want {
		t.Fatalf("job %s %q, want failed %q", j.State, j.Error, want)
	}
	if c := j.Rounds[1].Clients[1]; c.Status != StatusFailed || c.Failure != "oom" {
		t.Fatalf("B in round 2: %+v", c)
	}
	if j.FinalModel != "" || len(j.Rounds) != 2 {
		t.Fatalf("failed job has final model %q and %d rounds", j.FinalModel, len(j.Rounds))
	}
}

func TestEvaluateRejectsUpdatesAndAggregatesMetrics(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{1}, 0, 0)
	job := f.submit(f.spec(flproto.KindEvaluate, global, "A", "B"))
	ta, tb := f.poll("A"), f.poll("B")
	if ta.Kind != flproto.KindEvaluate || ta.Rounds != 1 {
		t.Fatalf("task %+v", ta)
	}
	var ve *ValidationError
	err := f.srv.Result("A", ta.ID, flproto.Result{Status: "ok", Update: global, SampleCount: 1})
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "evaluate task never returns weights") {
		t.Fatalf("update on evaluate: %v", err)
	}
	f.result("A", ta.ID, flproto.Result{Status: "ok", SampleCount: 100, Metrics: map[string]float64{"auc": 0.9, "tp": 30, "fn": 12}})
	f.result("B", tb.ID, flproto.Result{Status: "ok", SampleCount: 300, Metrics: map[string]float64{"auc": 0.7, "tp": 50}, Suppressed: []string{"fn"}})
	j := f.until(job.ID, "completion", func(j Job) bool { return j.Terminal() })
	if j.State != JobCompleted || j.FinalModel != "" || j.Rounds[0].NewModel != "" {
		t.Fatalf("evaluate job %+v", j)
	}
	// auc weighted by samples: (0.9·100 + 0.7·300) / 400 = 0.75; counts summed.
	if m := j.Metrics; !near(m["auc"], 0.75) || m["tp"] != 80 || m["fn"] != 12 || j.Rounds[0].SampleCount != 400 {
		t.Fatalf("metrics %v samples %d", m, j.Rounds[0].SampleCount)
	}
}

func TestInvalidResultsAreRefused(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A")
	global := f.model([]float64{1}, 0, 0)
	f.submit(f.spec(flproto.KindTrain, global, "A"))
	task := f.poll("A")
	for name, res := range map[string]flproto.Result{
		"train ok without update": {Status: "ok", SampleCount: 1},
		"unknown artifact":        {Status: "ok", Update: "sha256:" + strings.Repeat("0", 64), SampleCount: 1},
		"non-finite metric":       {Status: "ok", Update: global, SampleCount: 1, Metrics: map[string]float64{"loss": math.Inf(1)}},
		"negative samples":        {Status: "ok", Update: global, SampleCount: -1},
		"bad status":              {Status: "done", Update: global},
		"bad failure class":       {Status: "failed", Failure: "bored"},
		"failed with update":      {Status: "failed", Update: global},
	} {
		var ve *ValidationError
		if err := f.srv.Result("A", task.ID, res); !errors.As(err, &ve) {
			t.Errorf("%s: %v, want a validation error", name, err)
		}
	}
}

func TestLongPollWaitsThenAnswersPromptly(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A")
	start := time.Now()
	if _, ok, err := f.srv.NextTask(context.Background(), "A", 200*time.Millisecond); ok || err != nil {
		t.Fatalf("empty poll: ok=%v err=%v", ok, err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Fatalf("empty poll returned after %s, before its wait", waited)
	}
	global := f.model([]float64{1}, 0, 0)
	type answer struct {
		task flproto.Task
		ok   bool
		at   time.Time
	}
	got := make(chan answer, 1)
	go func() {
		task, ok, _ := f.srv.NextTask(context.Background(), "A", 10*time.Second)
		got <- answer{task, ok, time.Now()}
	}()
	time.Sleep(100 * time.Millisecond)
	submitted := time.Now()
	job := f.submit(f.spec(flproto.KindTrain, global, "A"))
	a := <-got
	if !a.ok || a.task.JobID != job.ID {
		t.Fatalf("waiting poll got %+v", a)
	}
	if d := a.at.Sub(submitted); d > time.Second {
		t.Fatalf("waiting poll answered %s after the task was created", d)
	}
	if c := f.srv.Clients(); c[0].LastSeen == nil {
		t.Fatal("poll did not record last seen")
	}
	if _, _, err := f.srv.NextTask(context.Background(), "nobody", 0); !errors.Is(err, ErrUnknownClient) {
		t.Fatalf("unknown client: %v", err)
	}
}

func TestUnansweredTaskIsHandedOutAgainWithTheSameID(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{RehandAfter: 150 * time.Millisecond})
	f.clients("A")
	global := f.model([]float64{1}, 0, 0)
	job := f.submit(f.spec(flproto.KindTrain, global, "A"))
	first := f.poll("A")
	f.noTask("A") // handed out and recent: not again
	time.Sleep(100 * time.Millisecond)
	if hb, err := f.srv.Heartbeat("A", first.ID); err != nil || hb.Cancel {
		t.Fatalf("heartbeat %+v %v", hb, err)
	}
	time.Sleep(100 * time.Millisecond)
	f.noTask("A") // the heartbeat 100 ms ago keeps it
	// A restarted client polls: it gets the same task once RehandAfter passes
	// without a heartbeat, even while it is already waiting.
	again := f.poll("A")
	if again.ID != first.ID || again.Round != 1 {
		t.Fatalf("re-handed task %s, want %s", again.ID, first.ID)
	}
	j, _ := f.srv.Job(job.ID)
	if h := j.Rounds[0].Clients[0].Handouts; h != 2 {
		t.Fatalf("handouts %d, want 2", h)
	}
}

func TestResultsAreIdempotentAndPrivate(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{1}, 0, 0)
	spec := f.spec(flproto.KindTrain, global, "A", "B")
	spec.Rounds = 2
	job := f.submit(spec)
	ta, tb := f.poll("A"), f.poll("B")
	res := flproto.Result{Status: "ok", Update: global, SampleCount: 2, Metrics: map[string]float64{"loss": 1}}

	if err := f.srv.Result("B", ta.ID, res); !errors.Is(err, ErrTaskNotFound) {
		t.Fatalf("B posting A's result: %v", err)
	}
	if _, err := f.srv.Heartbeat("B", ta.ID); !errors.Is(err, ErrTaskNotFound) {
		t.Fatalf("B heartbeating A's task: %v", err)
	}
	if err := f.srv.Result("A", "no-such-task", res); !errors.Is(err, ErrTaskNotFound) {
		t.Fatalf("unknown task: %v", err)
	}
	f.result("A", ta.ID, res)
	f.result("A", ta.ID, res) // a repeat is fine
	other := res
	other.SampleCount = 3
	if err := f.srv.Result("A", ta.ID, other); !errors.Is(err, ErrResultConflict) {
		t.Fatalf("different second result: %v", err)
	}
	f.result("B", tb.ID, res)
	f.until(job.ID, "round 2", func(j Job) bool { return j.Round == 2 })
	f.result("A", ta.ID, res) // still fine after the close
	if err := f.srv.Result("A", ta.ID, other); !errors.Is(err, ErrResultConflict) {
		t.Fatalf("different result after close: %v", err)
	}
}

func TestRestartMidRoundResumes(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{1, 1}, 0, 3)
	spec := f.spec(flproto.KindTrain, global, "A", "B")
	spec.Rounds = 2
	job := f.submit(spec)
	ta := f.poll("A")
	upd := f.model([]float64{2, 4}, 0, 0)
	f.result("A", ta.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 1})
	before, _ := f.srv.Job(job.ID)

	f.restart()

	after, err := f.srv.Job(job.ID)
	if err != nil {
		t.Fatal(err)
	}
	if after.State != JobRunning || after.Round != 1 || !after.Rounds[0].Deadline.Equal(before.Rounds[0].Deadline) {
		t.Fatalf("after restart: state %s round %d deadline %v (was %v)", after.State, after.Round, after.Rounds[0].Deadline, before.Rounds[0].Deadline)
	}
	f.result("A", ta.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 1}) // still idempotent
	tb := f.poll("B")
	if tb.Round != 1 {
		t.Fatalf("B got %+v", tb)
	}
	f.result("B", tb.ID, flproto.Result{Status: "ok", Update: upd, SampleCount: 1})
	j := f.until(job.ID, "round 2", func(j Job) bool { return j.Round == 2 })
	if w, _, step := f.weights(j.Rounds[0].NewModel); !nearAll(w, []float64{3, 5}) || step != 3 {
		t.Fatalf("round 1 model after restart: %v step %d", w, step)
	}
}

func TestMismatchedUpdateCountsAsFailedClient(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A", "B")
	global := f.model([]float64{1, 1}, 0, 0)
	spec := f.spec(flproto.KindTrain, global, "A", "B")
	spec.MinClients = 1
	job := f.submit(spec)
	ta, tb := f.poll("A"), f.poll("B")
	good := f.model([]float64{1, -1}, 2, 0)
	wrong := f.model([]float64{5, 5, 5}, 2, 0)
	f.result("A", ta.ID, flproto.Result{Status: "ok", Update: good, SampleCount: 1})
	f.result("B", tb.ID, flproto.Result{Status: "ok", Update: wrong, SampleCount: 1000})
	j := f.until(job.ID, "completion", func(j Job) bool { return j.Terminal() })
	if j.State != JobCompleted {
		t.Fatalf("job %s: %s", j.State, j.Error)
	}
	b := j.Rounds[0].Clients[1]
	if b.Status != StatusFailed || b.Failure != FailureRejected || !strings.Contains(b.Error, `tensor "weight" has shape [3]`) {
		t.Fatalf("B: %+v", b)
	}
	if w, bias, _ := f.weights(j.FinalModel); !nearAll(w, []float64{2, 0}) || !near(bias, 2) {
		t.Fatalf("final %v %v, want A's update alone", w, bias)
	}
	if j.Rounds[0].OK != 1 || j.Rounds[0].SampleCount != 1 {
		t.Fatalf("round %+v", j.Rounds[0])
	}
}

func TestCancelStopsTheRound(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A")
	global := f.model([]float64{1}, 0, 0)
	job := f.submit(f.spec(flproto.KindTrain, global, "A"))
	ta := f.poll("A")
	j, err := f.srv.Cancel(job.ID)
	if err != nil || j.State != JobCancelled || j.Rounds[0].Clients[0].Status != StatusMissing {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	if hb, _ := f.srv.Heartbeat("A", ta.ID); !hb.Cancel {
		t.Fatal("heartbeat after cancel does not say cancel")
	}
	if err := f.srv.Result("A", ta.ID, flproto.Result{Status: "ok", Update: global, SampleCount: 1}); !errors.Is(err, ErrRoundClosed) {
		t.Fatalf("result after cancel: %v", err)
	}
	if _, err := f.srv.Cancel(job.ID); !errors.Is(err, ErrJobFinished) {
		t.Fatalf("second cancel: %v", err)
	}
}

func TestSubmitListsEveryBadField(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	f.clients("A")
	_, err := f.srv.Submit(JobSpec{
		Kind: "evaluate", Clients: []string{"A", "A", "ghost", "bad name"}, MinClients: 9, Rounds: 2,
		RoundTimeoutSeconds: -1, Model: "sha256:" + strings.Repeat("a", 64),
		Job:       flproto.JobRef{Name: "x", Image: "y"},
		Resources: flproto.Resources{GPUs: -1}, Params: []byte(`[1]`),
	})
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("err %v", err)
	}
	for _, path := range []string{"clients[1]", "clients[2]", "clients[3]", "min_clients", "rounds", "round_timeout_seconds", "model", "job:", "data.encrypted_project_id", "data.query", "resources.gpus", "params"} {
		if !slices.ContainsFunc(ve.Problems, func(p string) bool { return strings.HasPrefix(p, path) }) {
			t.Errorf("no problem for %s in %q", path, ve.Problems)
		}
	}
	if len(f.srv.Jobs()) != 0 {
		t.Fatal("an invalid job was recorded")
	}
}

func TestClientsKeepOnlyTheSecretDigest(t *testing.T) {
	t.Parallel()
	f := newFixture(t, Config{})
	secret, err := f.srv.RegisterClient("Trust_1")
	if err != nil || len(secret) != 43 {
		t.Fatalf("secret %q %v", secret, err)
	}
	if _, err := f.srv.RegisterClient("Trust_1"); !errors.Is(err, ErrClientExists) {
		t.Fatalf("duplicate: %v", err)
	}
	if _, err := f.srv.RegisterClient("no spaces"); err == nil {
		t.Fatal("bad name accepted")
	}
	f.restart()
	sum, ok := f.srv.SecretSHA256("Trust_1")
	if !ok || sum != sha256.Sum256([]byte(secret)) {
		t.Fatal("secret digest not kept across a restart")
	}
	raw, err := os.ReadFile(filepath.Join(f.dir, "fl.db"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, []byte(secret)) {
		t.Fatal("the secret itself is stored")
	}
}
