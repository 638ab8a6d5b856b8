package task

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
)

// The FL server, the data services, the job and the filters are stood in
// for here: this test is about the executor's sequencing and its mapping of
// every failure to a result. The end-to-end test runs the real ones.

type server struct {
	mu       sync.Mutex
	uploads  []string
	beats    int
	cancelAt int
}

func (s *server) Download(_ context.Context, id, dst string) (flproto.Manifest, error) {
	if id == "sha256:missing" {
		return flproto.Manifest{}, errors.New("artifact sha256:missing: 404")
	}
	return flproto.Manifest{ID: id}, os.WriteFile(dst, []byte("global"), 0o600)
}

func (s *server) Upload(_ context.Context, path string, _ int64) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.uploads = append(s.uploads, string(b))
	return "sha256:update", nil
}

func (s *server) Heartbeat(context.Context, string) (flproto.Heartbeat, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.beats++
	return flproto.Heartbeat{Cancel: s.cancelAt > 0 && s.beats >= s.cancelAt}, nil
}

type stager struct{ refuse bool }

func (s stager) Dataframe(_ context.Context, _ flproto.DataRef, dst string) (int64, error) {
	if s.refuse {
		return 0, fmt.Errorf("%w: data-access-api answered 403", ErrRefused)
	}
	return 2, os.WriteFile(dst, []byte("a,b\n1,2\n3,4\n"), 0o600)
}

func (stager) Images(context.Context, flproto.DataRef, string, string) (int, error) { return 0, nil }

// job writes what its fields say into the output directory.
type job struct {
	metrics string
	model   bool
	outcome Outcome
	block   bool
}

func (j job) Run(ctx context.Context, t flproto.Task, ws contract.Workspace, _ []string, log io.Writer) (Outcome, error) {
	fmt.Fprintf(log, "training round %d\n", t.Round)
	var body contract.TaskFileBody
	b, err := os.ReadFile(filepath.Join(ws.Input, contract.TaskFile))
	if err != nil || json.Unmarshal(b, &body) != nil || body.Kind != t.Kind {
		return Outcome{}, errors.New("task.json not staged")
	}
	if j.block {
		<-ctx.Done()
		return Outcome{Failure: flproto.FailureError, Detail: "killed"}, nil
	}
	if j.metrics != "" {
		_ = os.WriteFile(filepath.Join(ws.Output, contract.MetricsFile), []byte(j.metrics), 0o600)
	}
	if j.model {
		_ = os.WriteFile(filepath.Join(ws.Output, contract.ModelFile), []byte("local"), 0o600)
	}
	return j.outcome, nil
}

type filters struct{}

func (filters) Metrics(m map[string]float64, n int64) (map[string]float64, []string, error) {
	if n < 10 {
		return nil, nil, fmt.Errorf("%w: sample count below the floor", ErrRefused)
	}
	kept := map[string]float64{}
	var dropped []string
	for k, v := range m {
		if k == "secret_metric" {
			dropped = append(dropped, k)
			continue
		}
		kept[k] = v
	}
	return kept, dropped, nil
}

func (filters) Update(_ context.Context, global, local, out string) error {
	g, _ := os.ReadFile(global)
	l, _ := os.ReadFile(local)
	return os.WriteFile(out, []byte(string(l)+"-"+string(g)), 0o600)
}

func executor(t *testing.T, s *server, st stager, j job) *Executor {
	return &Executor{Server: s, Stager: st, Jobs: j, Filters: filters{}, WorkDir: t.TempDir(),
		Heartbeat: 5 * time.Millisecond, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
}

func task(kind string) flproto.Task {
	return flproto.Task{ID: "t-1", JobID: "j", Kind: kind, Round: 1, Rounds: 1, Model: "sha256:g", Params: json.RawMessage(`{"epochs":1}`)}
}

func TestTrainUploadsTheFilteredUpdate(t *testing.T) {
	t.Parallel()
	s := &server{}
	e := executor(t, s, stager{}, job{metrics: `{"loss":0.5,"sample_count":40,"secret_metric":1}`, model: true})
	res, err := e.Execute(context.Background(), task(flproto.KindTrain))
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != flproto.StatusOK || res.Update != "sha256:update" || res.SampleCount != 40 {
		t.Fatalf("result = %+v", res)
	}
	if _, ok := res.Metrics["secret_metric"]; ok || len(res.Suppressed) != 1 {
		t.Errorf("metrics not filtered: %+v", res)
	}
	if len(s.uploads) != 1 || s.uploads[0] != "local-global" {
		t.Errorf("uploaded %q, want the filter's output", s.uploads)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.WorkDir, "tasks")); len(entries) != 0 {
		t.Errorf("workspace left behind: %v", entries)
	}
}

func TestEvaluateNeverUploads(t *testing.T) {
	t.Parallel()
	s := &server{}
	e := executor(t, s, stager{}, job{metrics: `{"auc":0.7,"sample_count":40}`, model: true})
	res, err := e.Execute(context.Background(), task(flproto.KindEvaluate))
	if err != nil || res.Status != flproto.StatusOK || res.Update != "" {
		t.Fatalf("result = %+v, %v", res, err)
	}
	if len(s.uploads) != 0 {
		t.Errorf("evaluate uploaded %d artifacts", len(s.uploads))
	}
}

func TestFailuresBecomeResults(t *testing.T) {
	t.Parallel()
	cases := map[string]struct {
		st      stager
		j       job
		model   string
		failure string
		text    string
	}{
		"model missing":     {j: job{}, model: "sha256:missing", failure: flproto.FailureError, text: "model:"},
		"data refused":      {st: stager{refuse: true}, failure: flproto.FailureRefused, text: "data:"},
		"job oom":           {j: job{outcome: Outcome{Failure: flproto.FailureOOM, Detail: "CUDA out of memory"}}, failure: flproto.FailureOOM, text: "out of memory"},
		"no metrics":        {j: job{model: true}, failure: flproto.FailureError, text: "no metrics.json"},
		"no sample count":   {j: job{metrics: `{"loss":1}`, model: true}, failure: flproto.FailureError, text: "sample_count"},
		"below floor":       {j: job{metrics: `{"loss":1,"sample_count":3}`, model: true}, failure: flproto.FailureRefused, text: "floor"},
		"train no model":    {j: job{metrics: `{"sample_count":30}`}, failure: flproto.FailureError, text: "model.safetensors"},
		"metrics malformed": {j: job{metrics: `{"loss":"high","sample_count":30}`, model: true}, failure: flproto.FailureError, text: "flat object"},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := &server{}
			tk := task(flproto.KindTrain)
			if c.model != "" {
				tk.Model = c.model
			}
			res, err := executor(t, s, c.st, c.j).Execute(context.Background(), tk)
			if err != nil {
				t.Fatal(err)
			}
			if res.Status != flproto.StatusFailed || res.Failure != c.failure || !strings.Contains(res.Error, c.text) {
				t.Fatalf("result = %+v, want %s mentioning %q", res, c.failure, c.text)
			}
			if len(s.uploads) != 0 {
				t.Error("a failed task uploaded")
			}
		})
	}
}

func TestServerCancelStopsTheJob(t *testing.T) {
	t.Parallel()
	s := &server{cancelAt: 2}
	e := executor(t, s, stager{}, job{block: true})
	done := make(chan error, 1)
	go func() {
		_, err := e.Execute(context.Background(), task(flproto.KindTrain))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrCancelled) {
			t.Fatalf("err = %v, want ErrCancelled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the job kept running after the server cancelled it")
	}
}

func TestJobOutputIsLoggedByLine(t *testing.T) {
	t.Parallel()
	var buf strings.Builder
	var mu sync.Mutex
	w := &logWriter{log: slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))}
	_, _ = w.Write([]byte("epoch 1 loss 0.6\nepoch 2"))
	_, _ = w.Write([]byte(" loss 0.5\npartial"))
	w.flush()
	out := buf.String()
	for _, want := range []string{`line="epoch 1 loss 0.6"`, `line="epoch 2 loss 0.5"`, `line=partial`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %s:\n%s", want, out)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
