// Package task carries one FL task through its life on the trust side:
// fetch the global model, stage the data, run the job, filter what it
// produced, upload the update — and turns every failure on the way into a
// result the FL server can act on, without data in it.
//
// The phases are:
//
//	model   download the global model (resumable, verified) into the workspace
//	data    the frozen cohort's dataframe and, when asked, its images
//	gpus    lease the GPUs the job asks for
//	run     the job, with a heartbeat to the server; the server may cancel it
//	budget  a train job whose update is noised spends its project's privacy
//	        budget first, before any data is staged (trust-api)
//	filter  the site's metric filter, then for train the clipped, noised update
//	egress  the update and the result are released by the site's egress gate
//	        (trust-api), waiting while a reviewer holds them
//	upload  the update, resumable; the caller submits the result
//
// The workspace is removed when the task ends, whatever the outcome.
package task

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/services/fl-client/internal/gate"
	"github.com/flip-trust/node/shared/flproto"
)

// ErrCancelled means the server closed the task's round or cancelled its job
// while it ran: nothing is to be submitted.
var ErrCancelled = errors.New("the FL server cancelled the task")

// ErrRefused marks a failure that is the trust's decision (data refused,
// job not allowed, cohort below the floor, no GPU free); it is reported as
// flproto.FailureRefused.
var ErrRefused = errors.New("refused by the trust")

// Server is the FL server as a task needs it.
type Server interface {
	Download(ctx context.Context, artifactID, dst string) (flproto.Manifest, error)
	Upload(ctx context.Context, path string, chunkSize int64) (string, error)
	Heartbeat(ctx context.Context, taskID string) (flproto.Heartbeat, error)
}

// Stager puts local data into a workspace.
type Stager interface {
	Dataframe(ctx context.Context, data flproto.DataRef, dst string) (int64, error)
	Images(ctx context.Context, data flproto.DataRef, resource, dstDir string) (int, error)
}

// Outcome is how a job ended: Failure is empty on success, else one of
// flproto's failure classes, with a short Detail.
type Outcome struct {
	Failure string
	Detail  string
}

// Jobs runs a task's job in ws with the leased GPUs; log receives its output.
// An error means the job could not be run at all (wrap ErrRefused when the
// site does not allow it).
type Jobs interface {
	Run(ctx context.Context, t flproto.Task, ws contract.Workspace, gpus []string, log io.Writer) (Outcome, error)
}

// GPUs leases GPUs for a job.
type GPUs interface {
	Acquire(ctx context.Context, n int, memMiB uint64) (uuids []string, release func(), err error)
}

// Filters are the site's privacy filters.
type Filters interface {
	// Metrics keeps the allowlisted metrics; an error wrapping ErrRefused
	// means the sample count is below the floor.
	Metrics(m map[string]float64, sampleCount int64) (kept map[string]float64, suppressed []string, err error)
	// Update writes the filtered update (local − global) to out.
	Update(ctx context.Context, global, local, out string) error
}

// Gate is the site's egress gate (trust-api): Spend spends a job's privacy
// budget, Release returns once an item may leave. Refusals wrap
// gate.ErrRefused.
type Gate interface {
	Spend(ctx context.Context, s gate.Spend) (gate.Receipt, error)
	Release(ctx context.Context, it gate.Item) error
}

// Executor runs tasks. Its fields are set once; it is safe for concurrent
// use when its dependencies are.
type Executor struct {
	Server  Server
	Stager  Stager
	Jobs    Jobs
	GPUs    GPUs
	Filters Filters
	// Gate releases what leaves and spends privacy budgets; nil only when the
	// site turned the gate off for development (EGRESS_GATE=off).
	Gate Gate
	// NoiseMultiplier and ClipNorm are the site's DP filter; a train task
	// with noise spends its project's budget before it runs.
	NoiseMultiplier float64
	ClipNorm        float64
	WorkDir         string
	Heartbeat       time.Duration
	ChunkSize       int64
	Logger          *slog.Logger
}

// Execute runs t and returns the result to submit. It returns ErrCancelled
// (and no result) when the server cancelled the task, or ctx's error when the
// client is shutting down.
func (e *Executor) Execute(ctx context.Context, t flproto.Task) (flproto.Result, error) {
	log := e.Logger.With("task", t.ID, "job", t.JobID, "kind", t.Kind, "round", t.Round)
	root := filepath.Join(e.WorkDir, "tasks", safeName(t.ID))
	_ = os.RemoveAll(root) // a leftover of an earlier attempt of this task
	defer os.RemoveAll(root)
	ws, err := contract.NewWorkspace(root)
	if err != nil {
		return failed(flproto.FailureError, "workspace", err), nil
	}

	// The heartbeat runs for the whole task; a cancel from the server stops it.
	runCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	hbDone := make(chan struct{})
	go func() {
		defer close(hbDone)
		e.heartbeat(runCtx, t.ID, cancel, log)
	}()
	defer func() { cancel(nil); <-hbDone }()

	res, err := e.phases(runCtx, t, ws, log)
	if cause := context.Cause(runCtx); errors.Is(cause, ErrCancelled) {
		log.Info("task cancelled by the FL server")
		return flproto.Result{}, ErrCancelled
	}
	if ctx.Err() != nil {
		return flproto.Result{}, ctx.Err()
	}
	return res, err
}

func (e *Executor) phases(ctx context.Context, t flproto.Task, ws contract.Workspace, log *slog.Logger) (flproto.Result, error) {
	if t.Kind != flproto.KindTrain && t.Kind != flproto.KindEvaluate {
		return failed(flproto.FailureRefused, "task", fmt.Errorf("unknown kind %q", t.Kind)), nil
	}
	// A deadline bounds waiting for the gate (a held item, a slow trust-api).
	gctx := ctx
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		gctx, cancel = context.WithDeadline(ctx, t.Deadline)
		defer cancel()
	}
	if t.Kind == flproto.KindTrain && e.NoiseMultiplier > 0 && e.Gate != nil {
		// One noised update of the whole local training per round: the
		// sampled Gaussian mechanism with q = 1, one step per round.
		rec, err := e.Gate.Spend(gctx, gate.Spend{EncryptedProjectID: t.Data.EncryptedProjectID, JobID: t.JobID,
			NoiseMultiplier: e.NoiseMultiplier, SampleRate: 1, Steps: int64(max(t.Rounds, 1))})
		if err != nil {
			return failed(classify(err), "privacy budget", err), nil
		}
		log.Info("privacy budget spent", "phase", "budget", "epsilon_job", rec.EpsilonJob,
			"epsilon_spent", rec.EpsilonSpent, "epsilon_remaining", rec.EpsilonRemaining, "repeat", rec.Repeat)
	}

	start := time.Now()
	global := filepath.Join(ws.Input, contract.ModelFile)
	if _, err := e.Server.Download(ctx, t.Model, global); err != nil {
		return failed(flproto.FailureError, "model", err), nil
	}
	log.Info("model fetched", "phase", "model", "seconds", since(start))

	params := map[string]any{}
	if len(t.Params) > 0 {
		if err := json.Unmarshal(t.Params, &params); err != nil {
			return failed(flproto.FailureRefused, "task", fmt.Errorf("params are not a JSON object: %w", err)), nil
		}
	}
	body, _ := json.Marshal(contract.TaskFileBody{Kind: t.Kind, Round: t.Round, Rounds: t.Rounds, Params: params})
	if err := os.WriteFile(filepath.Join(ws.Input, contract.TaskFile), body, 0o640); err != nil {
		return failed(flproto.FailureError, "workspace", err), nil
	}

	start = time.Now()
	rows, err := e.Stager.Dataframe(ctx, t.Data, filepath.Join(ws.Input, contract.DataframeFile))
	if err != nil {
		return failed(classify(err), "data", err), nil
	}
	log.Info("dataframe staged", "phase", "data", "rows", rows, "seconds", since(start))
	if t.Data.Images {
		start = time.Now()
		n, err := e.Stager.Images(ctx, t.Data, "", filepath.Join(ws.Input, contract.ImagesDir))
		if err != nil {
			return failed(classify(err), "images", err), nil
		}
		log.Info("images staged", "phase", "data", "accessions", n, "seconds", since(start))
	}

	var uuids []string
	if t.Resources.GPUs > 0 || t.Resources.GPUMemoryMiB > 0 {
		if e.GPUs == nil {
			return failed(flproto.FailureRefused, "gpus", errors.New("the job asks for GPUs and this site has none")), nil
		}
		ids, release, err := e.GPUs.Acquire(ctx, t.Resources.GPUs, uint64(t.Resources.GPUMemoryMiB))
		if err != nil {
			return failed(flproto.FailureRefused, "gpus", err), nil
		}
		defer release()
		uuids = ids
		log.Info("gpus leased", "phase", "gpus", "gpus", ids)
	}

	start = time.Now()
	jobLog := &logWriter{log: log}
	out, err := e.Jobs.Run(ctx, t, ws, uuids, jobLog)
	jobLog.flush()
	if err != nil {
		return failed(classify(err), "run", err), nil
	}
	if out.Failure != "" {
		log.Warn("job failed", "phase", "run", "failure", out.Failure, "detail", out.Detail, "seconds", since(start))
		return flproto.Result{Status: flproto.StatusFailed, Failure: out.Failure, Error: "job: " + out.Detail}, nil
	}
	log.Info("job finished", "phase", "run", "seconds", since(start))

	metrics, err := readMetrics(filepath.Join(ws.Output, contract.MetricsFile))
	if err != nil {
		return failed(flproto.FailureError, "outputs", err), nil
	}
	n, ok := metrics[contract.SampleCount]
	if !ok || n < 0 || n != math.Trunc(n) {
		return failed(flproto.FailureError, "outputs", errors.New("metrics.json has no whole, non-negative sample_count")), nil
	}
	count := int64(n)
	kept, suppressed, err := e.Filters.Metrics(metrics, count)
	if err != nil {
		return failed(classify(err), "filter", err), nil
	}
	res := flproto.Result{Status: flproto.StatusOK, Metrics: kept, Suppressed: suppressed, SampleCount: count}
	if t.Kind == flproto.KindEvaluate {
		// evaluate never uploads weights, whatever the job wrote
		if err := e.releaseResult(gctx, t, res); err != nil {
			return failed(classify(err), "egress", err), nil
		}
		return res, nil
	}

	local := filepath.Join(ws.Output, contract.ModelFile)
	if _, err := os.Stat(local); err != nil {
		return failed(flproto.FailureError, "outputs", errors.New("a train job must write model.safetensors")), nil
	}
	update := filepath.Join(ws.Root, "update.safetensors")
	if err := e.Filters.Update(ctx, global, local, update); err != nil {
		return failed(flproto.FailureError, "filter", err), nil
	}
	want, err := artifactID(update)
	if err != nil {
		return failed(flproto.FailureError, "filter", err), nil
	}
	res.Update = want
	if e.Gate != nil {
		start = time.Now()
		rules := []string{"clip_norm=" + fmt.Sprint(e.ClipNorm), "noise_multiplier=" + fmt.Sprint(e.NoiseMultiplier)}
		if err := e.Gate.Release(gctx, gate.Item{Channel: gate.ChannelWeights, TaskID: t.ID, Kind: "model_update", Rules: rules, Path: update}); err != nil {
			return failed(classify(err), "egress", err), nil
		}
		if err := e.releaseResult(gctx, t, res); err != nil {
			return failed(classify(err), "egress", err), nil
		}
		log.Info("egress released", "phase", "egress", "seconds", since(start))
	}
	start = time.Now()
	id, err := e.Server.Upload(ctx, update, e.ChunkSize)
	if err != nil {
		return failed(flproto.FailureError, "upload", err), nil
	}
	if e.Gate != nil && id != want {
		// The released result names the update by its content; the server
		// must hold exactly those bytes.
		return failed(flproto.FailureError, "upload", fmt.Errorf("the server stored the update as %s, not the released %s", id, want)), nil
	}
	log.Info("update uploaded", "phase", "upload", "artifact", id, "seconds", since(start))
	res.Update = id
	return res, nil
}

// releaseResult asks the gate to release the result as it will be
// submitted (its JSON: metrics, suppressed names, sample count, update id).
func (e *Executor) releaseResult(ctx context.Context, t flproto.Task, res flproto.Result) error {
	if e.Gate == nil {
		return nil
	}
	body, err := json.Marshal(res)
	if err != nil {
		return err
	}
	rules := []string{}
	if len(res.Suppressed) > 0 {
		rules = append(rules, "suppressed="+strings.Join(res.Suppressed, ","))
	}
	return e.Gate.Release(ctx, gate.Item{Channel: gate.ChannelMetrics, TaskID: t.ID, Kind: t.Kind + "_result", Rules: rules, Content: body})
}

// artifactID is the id an artifact of the file at path gets:
// "sha256:<hex of the whole file>".
func artifactID(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("digest the update: %w", err)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}

// heartbeat tells the server the task is alive until ctx ends, and cancels
// the task (cause ErrCancelled) when the server says so.
func (e *Executor) heartbeat(ctx context.Context, id string, cancel context.CancelCauseFunc, log *slog.Logger) {
	every := e.Heartbeat
	if every <= 0 {
		every = 10 * time.Second
	}
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		hctx, done := context.WithTimeout(ctx, every)
		hb, err := e.Server.Heartbeat(hctx, id)
		done()
		switch {
		case err != nil && ctx.Err() == nil:
			log.Warn("heartbeat failed", "error", err.Error())
		case err == nil && hb.Cancel:
			cancel(ErrCancelled)
			return
		}
	}
}

// readMetrics reads a job's metrics.json: a flat object of finite numbers.
func readMetrics(path string) (map[string]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("the job wrote no metrics.json")
	}
	defer f.Close()
	var m map[string]float64
	dec := json.NewDecoder(io.LimitReader(f, contract.MetricsLimit))
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("metrics.json is not a flat object of numbers")
	}
	return m, nil
}

func classify(err error) string {
	if errors.Is(err, ErrRefused) || errors.Is(err, gate.ErrRefused) {
		return flproto.FailureRefused
	}
	return flproto.FailureError
}

// failed builds a failed result; the text names the phase and the error,
// which by construction carries no data (only statuses, counts and names).
func failed(failure, phase string, err error) flproto.Result {
	msg := phase + ": " + err.Error()
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return flproto.Result{Status: flproto.StatusFailed, Failure: failure, Error: msg}
}

func since(t time.Time) float64 { return math.Round(time.Since(t).Seconds()*100) / 100 }

// safeName keeps a task id usable as one path segment.
func safeName(id string) string {
	b := []byte(id)
	for i, c := range b {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			b[i] = '_'
		}
	}
	if len(b) == 0 || len(b) > 128 {
		return "task"
	}
	return string(b)
}

// logWriter turns a job's output into log lines tagged with the task.
type logWriter struct {
	log *slog.Logger
	mu  sync.Mutex
	buf []byte
}

func (w *logWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	for {
		i := bytes.IndexByte(w.buf, '\n')
		if i < 0 {
			break
		}
		w.log.Info("job output", "line", string(w.buf[:i]))
		w.buf = w.buf[i+1:]
	}
	if len(w.buf) > 16<<10 { // a very long line: emit it in pieces
		w.flushLocked()
	}
	return len(p), nil
}

func (w *logWriter) flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.flushLocked()
}

func (w *logWriter) flushLocked() {
	if len(w.buf) > 0 {
		w.log.Info("job output", "line", string(w.buf))
		w.buf = w.buf[:0]
	}
}
