// Package app is fl-client's composition root: it builds the FL server
// client, the data stager, the runners, the GPU allocator and the site's
// filters from the configuration, serves /health, /gpus and /metrics inside
// the trust, and runs the task loop: long-poll the FL server, execute each
// task, submit its result.
package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/fl-client/internal/config"
	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/services/fl-client/internal/gate"
	"github.com/flip-trust/node/services/fl-client/internal/gpu"
	"github.com/flip-trust/node/services/fl-client/internal/logreg"
	"github.com/flip-trust/node/services/fl-client/internal/privacy"
	"github.com/flip-trust/node/services/fl-client/internal/runner"
	"github.com/flip-trust/node/services/fl-client/internal/stage"
	"github.com/flip-trust/node/services/fl-client/internal/task"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
)

// Service is fl-client's mesh name.
const Service = "fl-client"

// App is a built fl-client.
type App struct {
	cfg    config.Config
	logger *slog.Logger
	server *httpx.Server
	client *flproto.Client
	exec   *task.Executor
	docker *runner.Docker
	gpus   gpu.Inventory
	closer io.Closer

	connected    atomic.Bool
	lastProgress atomic.Int64
	tasksOK      prometheus.Counter
	tasksFail    *prometheus.CounterVec
}

// New builds fl-client from cfg.
func New(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (*App, error) {
	for _, d := range []string{cfg.WorkDir, filepath.Join(cfg.WorkDir, "tasks")} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("FL_WORK_DIR: %w", err)
		}
	}
	hc, err := flproto.NewHTTPClient(flproto.TLSOptions{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile})
	if err != nil {
		return nil, fmt.Errorf("FL server TLS: %w", err)
	}
	a := &App{cfg: cfg, logger: logger}
	a.client = flproto.NewClient(cfg.ServerURL, cfg.ClientName, cfg.ClientSecret, hc)
	a.client.Progress = a.progress

	nv := gpu.NewNVML()
	a.gpus, a.closer = nv, nv

	jobs := &jobs{cfg: cfg, process: runner.NewProcess(runner.ProcessConfig{})}
	if cfg.Runner == config.RunnerDocker {
		engine, err := runner.ConnectEngine(context.Background(), cfg.DockerHost)
		if err != nil {
			return nil, fmt.Errorf("docker runner: %w (set FL_RUNNER=process or none on hosts without Docker)", err)
		}
		a.docker, err = runner.NewDocker(engine, runner.DockerConfig{Allowlist: cfg.AllowedImages, User: cfg.JobUser, Instance: cfg.ClientName}, logger)
		if err != nil {
			return nil, fmt.Errorf("docker runner: %w", err)
		}
		jobs.docker = a.docker
	}

	filterCfg := privacy.Config{ClipNorm: cfg.ClipNorm, NoiseMultiplier: cfg.NoiseMultiplier,
		AllowMetrics: cfg.AllowMetrics, CountMetrics: cfg.CountMetrics, MinCount: cfg.MinCount}
	if err := filterCfg.Validate(); err != nil {
		return nil, fmt.Errorf("privacy filters: %w", err)
	}
	a.exec = &task.Executor{
		Server: a.client,
		Stager: stager{&stage.Stager{
			DataAccessURL: cfg.DataAccessURL, ImagingURL: cfg.ImagingURL, ImagesDir: cfg.ImagesDir, NetID: cfg.NetID,
			Signer: mesh.NewSigner(Service, []byte(cfg.InternalKey)), Mode: cfg.MeshMode, KeyHeader: cfg.KeyHeader,
			HTTP: httpx.NewClient(30 * time.Minute),
		}},
		Jobs:    jobs,
		GPUs:    allocator{gpu.NewAllocator(a.gpus)},
		Filters: filters{filterCfg},
		Gate:    egressGate(cfg, logger),
		WorkDir: cfg.WorkDir,
		Logger:  logger,

		NoiseMultiplier: cfg.NoiseMultiplier, ClipNorm: cfg.ClipNorm,
	}

	a.tasksOK = prometheus.NewCounter(prometheus.CounterOpts{Name: "fl_client_tasks_ok_total", Help: "Tasks that returned a result."})
	a.tasksFail = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "fl_client_tasks_failed_total", Help: "Tasks that failed, by failure class."}, []string{"failure"})
	reg.MustRegister(a.tasksOK, a.tasksFail)

	version := cfg.Version(build)
	health := func(ctx context.Context) (int, any) {
		status := "ok"
		if !a.connected.Load() {
			status = "degraded"
		}
		g := gpu.Report(ctx, a.gpus)
		return http.StatusOK, map[string]any{"status": status, "version": version, "fl_server": connState(a.connected.Load()),
			"client": cfg.ClientName, "runner": cfg.Runner, "gpus": map[string]any{"available": g.Available, "count": len(g.Devices), "reason": g.Reason}}
	}
	a.server = httpx.NewServer(httpx.DefaultConfig(cfg.Addr), logger, reg, health)
	a.server.Router().Get("/gpus", httpx.Handle(func(r *http.Request) (gpu.Summary, error) {
		return gpu.Report(r.Context(), a.gpus), nil
	}))
	return a, nil
}

// egressGate is trust-api's egress gate; without TRUST_API_URL a gate that
// refuses everything (fail closed), or none at all when the site turned it
// off for development.
func egressGate(cfg config.Config, logger *slog.Logger) task.Gate {
	switch {
	case cfg.EgressGate == "off":
		logger.Warn("EGRESS_GATE=off: results and updates leave without trust-api's egress gate, and DP jobs spend no privacy budget (development only)")
		return nil
	case cfg.TrustAPIURL == "":
		logger.Error("TRUST_API_URL is not set: every task fails as refused until it is (or EGRESS_GATE=off in development)")
		return closedGate{}
	}
	logger.Info("egress gate", "url", cfg.TrustAPIURL)
	return &gate.Client{
		BaseURL: cfg.TrustAPIURL, Signer: mesh.NewSigner(Service, []byte(cfg.InternalKey)), Mode: cfg.MeshMode,
		KeyHeader: cfg.KeyHeader, HTTP: httpx.NewClient(time.Minute), Logger: logger,
	}
}

// closedGate refuses everything: no gate is configured.
type closedGate struct{}

var errNoGate = fmt.Errorf("%w: no egress gate configured (TRUST_API_URL)", gate.ErrRefused)

func (closedGate) Spend(context.Context, gate.Spend) (gate.Receipt, error) {
	return gate.Receipt{}, errNoGate
}
func (closedGate) Release(context.Context, gate.Item) error { return errNoGate }

func connState(ok bool) string {
	if ok {
		return "connected"
	}
	return "unreachable"
}

// Listen binds the health listener.
func (a *App) Listen() (net.Addr, error) { return a.server.Listen() }

// Run serves health and runs the task loop until ctx ends.
func (a *App) Run(ctx context.Context) error {
	if a.docker != nil {
		if n, err := a.docker.Cleanup(ctx); err != nil {
			a.logger.Warn("removing job containers left by an earlier run failed", "error", err.Error())
		} else if n > 0 {
			a.logger.Info("removed job containers left by an earlier run", "containers", n)
		}
	}
	if err := os.RemoveAll(filepath.Join(a.cfg.WorkDir, "tasks")); err == nil {
		_ = os.MkdirAll(filepath.Join(a.cfg.WorkDir, "tasks"), 0o750)
	}
	g := gpu.Report(ctx, a.gpus)
	if g.Available {
		a.logger.Info("gpus", "count", len(g.Devices))
	} else {
		a.logger.Info("no GPU: CPU jobs only", "reason", g.Reason)
	}

	loopCtx, stop := context.WithCancel(ctx)
	loopDone := make(chan struct{})
	go func() {
		defer close(loopDone)
		a.loop(loopCtx)
	}()
	err := a.server.Run(ctx)
	stop()
	<-loopDone
	if a.closer != nil {
		_ = a.closer.Close()
	}
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return err
}

// loop long-polls for tasks and executes them one at a time; after any
// failed poll it backs off (1 s doubling to 60 s, with jitter).
func (a *App) loop(ctx context.Context) {
	backoff := time.Second
	for ctx.Err() == nil {
		t, err := a.client.NextTask(ctx, a.cfg.PollWait)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			if a.connected.Swap(false) {
				a.logger.Warn("FL server unreachable; retrying", "error", err.Error())
			} else {
				a.logger.Debug("FL server still unreachable", "error", err.Error())
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			backoff = min(backoff*2, time.Minute)
			select {
			case <-ctx.Done():
				return
			case <-time.After(wait):
			}
			continue
		}
		backoff = time.Second
		if !a.connected.Swap(true) {
			a.logger.Info("connected to the FL server", "url", a.cfg.ServerURL, "client", a.cfg.ClientName)
		}
		if t == nil {
			continue
		}
		a.run(ctx, *t)
	}
}

// run executes one task and submits its result, retrying the submission
// until the round's deadline.
func (a *App) run(ctx context.Context, t flproto.Task) {
	log := a.logger.With("task", t.ID, "job", t.JobID, "kind", t.Kind, "round", t.Round)
	log.Info("task received", "rounds", t.Rounds, "deadline", t.Deadline)
	res, err := a.exec.Execute(ctx, t)
	switch {
	case errors.Is(err, task.ErrCancelled):
		a.tasksFail.WithLabelValues("cancelled").Inc()
		return
	case err != nil:
		log.Warn("task interrupted", "error", err.Error())
		return
	}
	if res.Status == flproto.StatusOK {
		a.tasksOK.Inc()
	} else {
		a.tasksFail.WithLabelValues(res.Failure).Inc()
		log.Warn("task failed", "failure", res.Failure, "error", res.Error)
	}
	sctx := ctx
	if !t.Deadline.IsZero() {
		var cancel context.CancelFunc
		sctx, cancel = context.WithDeadline(ctx, t.Deadline.Add(time.Minute))
		defer cancel()
	}
	if err := a.client.SubmitResult(sctx, t.ID, res); err != nil {
		var he *flproto.HTTPError
		if errors.As(err, &he) && he.Status == http.StatusConflict {
			log.Warn("result too late: the round closed without it")
			return
		}
		log.Error("result not delivered", "error", err.Error())
		return
	}
	log.Info("result submitted", "status", res.Status, "samples", res.SampleCount, "update", res.Update != "")
}

// progress logs long transfers every few seconds.
func (a *App) progress(done, total int64) {
	now := time.Now().UnixNano()
	last := a.lastProgress.Load()
	if done < total && now-last < int64(5*time.Second) {
		return
	}
	if a.lastProgress.CompareAndSwap(last, now) && total > 0 {
		a.logger.Info("transfer", "done_bytes", done, "total_bytes", total, "percent", done*100/total)
	}
}

// jobs chooses how a task's job runs: the built-in job in process, an image
// through the docker runner, a named command through the process runner.
type jobs struct {
	cfg     config.Config
	docker  *runner.Docker
	process *runner.Process
}

func (j *jobs) Run(ctx context.Context, t flproto.Task, ws contract.Workspace, gpus []string, log io.Writer) (task.Outcome, error) {
	timeout := j.cfg.JobTimeout
	if s := t.Resources.TimeoutSeconds; s > 0 && time.Duration(s)*time.Second < timeout {
		timeout = time.Duration(s) * time.Second
	}
	switch {
	case t.Job.Image == "" && t.Job.Name == flproto.BuiltinLogReg:
		jctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		err := logreg.Run(jctx, ws)
		switch {
		case err == nil:
			return task.Outcome{}, nil
		case errors.Is(jctx.Err(), context.DeadlineExceeded) && ctx.Err() == nil:
			return task.Outcome{Failure: flproto.FailureTimeout, Detail: "built-in job ran past its time limit"}, nil
		case ctx.Err() != nil:
			return task.Outcome{}, ctx.Err()
		}
		return task.Outcome{Failure: flproto.FailureError, Detail: err.Error()}, nil
	case t.Job.Image != "":
		if j.docker == nil {
			return task.Outcome{}, fmt.Errorf("%w: container jobs need FL_RUNNER=docker", task.ErrRefused)
		}
		return j.runSpec(ctx, j.docker, t, ws, gpus, log, timeout, nil)
	default:
		argv, ok := j.cfg.ProcessJobs[t.Job.Name]
		if !ok || j.cfg.Runner != config.RunnerProcess {
			return task.Outcome{}, fmt.Errorf("%w: job %q is not allowed at this site", task.ErrRefused, t.Job.Name)
		}
		return j.runSpec(ctx, j.process, t, ws, gpus, log, timeout, argv)
	}
}

func (j *jobs) runSpec(ctx context.Context, r runner.Runner, t flproto.Task, ws contract.Workspace, gpus []string, log io.Writer, timeout time.Duration, argv []string) (task.Outcome, error) {
	spec := runner.NewSpec(t, ws, gpus)
	spec.Image, spec.Command, spec.Log, spec.Timeout = t.Job.Image, argv, log, timeout
	spec.MemoryBytes = j.cfg.JobMemory
	if m := int64(t.Resources.MemoryMiB) << 20; m > 0 && m < spec.MemoryBytes {
		spec.MemoryBytes = m
	}
	cpus := j.cfg.JobCPUs
	if c := float64(t.Resources.CPUs); c > 0 && c < cpus {
		cpus = c
	}
	spec.NanoCPUs = int64(cpus * 1e9)
	out, err := r.Run(ctx, spec)
	if errors.Is(err, runner.ErrImageNotAllowed) || errors.Is(err, runner.ErrImageNotFound) {
		return task.Outcome{}, fmt.Errorf("%w: %w", task.ErrRefused, err)
	}
	if err != nil {
		return task.Outcome{}, err
	}
	return task.Outcome{Failure: out.Failure, Detail: out.Detail}, nil
}

// stager maps the data services' refusals to task.ErrRefused.
type stager struct{ s *stage.Stager }

func (s stager) Dataframe(ctx context.Context, data flproto.DataRef, dst string) (int64, error) {
	n, err := s.s.Dataframe(ctx, data, dst)
	return n, refused(err, stage.ErrRefused)
}

func (s stager) Images(ctx context.Context, data flproto.DataRef, resource, dstDir string) (int, error) {
	n, err := s.s.Images(ctx, data, resource, dstDir)
	return n, refused(err, stage.ErrRefused)
}

func refused(err, sentinel error) error {
	if err != nil && errors.Is(err, sentinel) {
		return fmt.Errorf("%w: %w", task.ErrRefused, err)
	}
	return err
}

// filters applies the site's privacy filters.
type filters struct{ cfg privacy.Config }

func (f filters) Metrics(m map[string]float64, n int64) (map[string]float64, []string, error) {
	kept, suppressed, err := privacy.Metrics(f.cfg, m, n)
	return kept, suppressed, refused(err, privacy.ErrBelowFloor)
}

func (f filters) Update(ctx context.Context, global, local, out string) error {
	_, err := privacy.Update(ctx, f.cfg, global, local, out)
	return err
}

// allocator leases GPUs for a job.
type allocator struct{ a *gpu.Allocator }

func (g allocator) Acquire(ctx context.Context, n int, memMiB uint64) ([]string, func(), error) {
	l, err := g.a.Acquire(ctx, n, memMiB)
	if err != nil {
		return nil, nil, err
	}
	return l.UUIDs(), l.Release, nil
}
