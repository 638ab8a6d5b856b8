// Package runner is trust-api's task engine: it sends heartbeats on their own
// timer, polls the hub for tasks, journals every task before it runs,
// executes tasks on a bounded worker pool and hands outcomes to delivery.
// It also recovers the journal after a restart so that nothing runs twice:
// claimed tasks run, read-only tasks interrupted while running run again,
// and any other interrupted task is reported failed.
//
// The hub's reachability is tracked per call kind (heartbeat, poll); each
// change is logged once, and it drives the hub_up gauge and readiness.
package runner

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/services/trust-api/internal/tasks"
	"github.com/flip-trust/node/shared/hubapi"
)

// InterruptedError is the error text of a non-read-only task that was
// running when trust-api stopped.
const InterruptedError = "interrupted by trust-api restart; not re-run to avoid executing twice"

// Hub is the part of the hub client the runner uses. Errors follow the
// hub package: *hub.StatusError, *hub.IdentityMismatchError, transport errors.
type Hub interface {
	Heartbeat(ctx context.Context, snap *hubapi.HealthSnapshot) error
	Pending(ctx context.Context) ([]hubapi.Task, error)
}

// Executor runs one task and never fails: every problem is an Outcome.
type Executor interface {
	Execute(ctx context.Context, id string, t hubapi.TaskType, sealed string) tasks.Outcome
}

// Notifier is told when an outcome is ready for delivery: Recorded hands
// over the id of a task the runner just recorded, Notify says that the
// journal's outbox changed otherwise. Neither may block.
type Notifier interface {
	Notify()
	Recorded(id string)
}

var (
	_ Hub      = (*hub.Client)(nil)
	_ Executor = (*tasks.Executor)(nil)
)

// Options tune a Runner.
type Options struct {
	// PollInterval is the pause between polls (POLL_INTERVAL_SECONDS).
	PollInterval time.Duration
	// HeartbeatInterval is the heartbeat cadence (HEARTBEAT_INTERVAL_SECONDS).
	HeartbeatInterval time.Duration
	// Workers bounds concurrently running tasks (TASK_WORKERS).
	Workers int
	// Snapshot returns the current health snapshot, nil for a bodyless heartbeat.
	Snapshot func() *hubapi.HealthSnapshot
	// OnHubState is called when the hub becomes reachable (up) or not; the
	// reason explains a down state. May be nil.
	OnHubState func(up bool, reason string)
	// Retention prunes delivered and rejected journal entries older than
	// this, hourly; 0 keeps them.
	Retention time.Duration
	// Metrics may be nil.
	Metrics *Metrics
}

// Runner is the task engine. Run it once.
type Runner struct {
	j       *journal.Journal
	hub     Hub
	exec    Executor
	deliver Notifier
	opts    Options
	logger  *slog.Logger
	link    *linkState

	mu       sync.Mutex
	inflight map[string]bool // queued or running in this process

	idle atomic.Int64 // workers waiting for a job
}

// New returns a Runner.
func New(j *journal.Journal, h Hub, exec Executor, deliver Notifier, opts Options, logger *slog.Logger) *Runner {
	if opts.PollInterval <= 0 {
		opts.PollInterval = 5 * time.Second
	}
	if opts.HeartbeatInterval <= 0 {
		opts.HeartbeatInterval = opts.PollInterval
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.Snapshot == nil {
		opts.Snapshot = func() *hubapi.HealthSnapshot { return nil }
	}
	r := &Runner{j: j, hub: h, exec: exec, deliver: deliver, opts: opts, logger: logger, inflight: map[string]bool{}}
	r.link = newLinkState(logger, opts.Metrics, opts.OnHubState)
	return r
}

// Run recovers the journal, then heartbeats, polls and executes until ctx
// ends (it returns nil then) or the hub names another trust than
// EXPECTED_TRUST_ID (it returns the *hub.IdentityMismatchError). Every
// goroutine it starts has ended when it returns.
func (r *Runner) Run(ctx context.Context) error {
	recovered, err := r.recover()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	jobs := make(chan journal.Entry)
	var wg sync.WaitGroup
	for range r.opts.Workers {
		wg.Go(func() { r.worker(ctx, jobs, &wg) })
	}
	wg.Go(func() { r.heartbeatLoop(ctx, cancel) })
	wg.Go(func() { r.pollLoop(ctx, cancel, jobs, recovered) })
	if r.opts.Retention > 0 {
		wg.Go(func() { r.pruneLoop(ctx) })
	}
	wg.Wait()

	var mm *hub.IdentityMismatchError
	if cause := context.Cause(ctx); errors.As(cause, &mm) {
		return cause
	}
	return nil
}

// recover prepares the journal after a start: it returns the claimed
// entries to run and settles the ones interrupted while running.
func (r *Runner) recover() ([]journal.Entry, error) {
	open, err := r.j.List(journal.Claimed, journal.Running)
	if err != nil {
		return nil, fmt.Errorf("recover journal: %w", err)
	}
	var run []journal.Entry
	for _, e := range open {
		if e.State == journal.Claimed {
			run = append(run, e)
			continue
		}
		if tasks.ReadOnly(hubapi.TaskType(e.TaskType)) {
			e, err := r.j.Requeue(e.ID)
			if err != nil {
				return nil, fmt.Errorf("recover journal: %w", err)
			}
			r.logger.Info("Task "+e.ID+" was interrupted by a restart; running it again (read-only)", "task_id", e.ID, "task_type", e.TaskType)
			run = append(run, e)
			continue
		}
		res := hubapi.TaskErrorResult(InterruptedError, nil)
		if _, err := r.j.Record(e.ID, journal.Outcome{Result: &res}); err != nil {
			return nil, fmt.Errorf("recover journal: %w", err)
		}
		r.opts.Metrics.task(e.TaskType, "interrupted")
		r.logger.Warn("Task "+e.ID+" was interrupted by a restart; reporting it failed instead of running it twice", "task_id", e.ID, "task_type", e.TaskType)
	}
	if len(open) > 0 {
		r.deliver.Notify()
	}
	return run, nil
}

func (r *Runner) heartbeatLoop(ctx context.Context, fatal context.CancelCauseFunc) {
	ticker := time.NewTicker(r.opts.HeartbeatInterval)
	defer ticker.Stop()
	for {
		err := r.hub.Heartbeat(ctx, r.opts.Snapshot())
		if ctx.Err() != nil {
			return
		}
		var mm *hub.IdentityMismatchError
		if errors.As(err, &mm) {
			fatal(err)
			return
		}
		r.opts.Metrics.heartbeat(err)
		r.link.observe("heartbeat", err)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

func (r *Runner) pollLoop(ctx context.Context, fatal context.CancelCauseFunc, jobs chan<- journal.Entry, recovered []journal.Entry) {
	for _, e := range recovered {
		if !r.enqueue(ctx, jobs, e) {
			return
		}
	}
	for {
		list, err := r.hub.Pending(ctx)
		if ctx.Err() != nil {
			return
		}
		var mm *hub.IdentityMismatchError
		if errors.As(err, &mm) {
			fatal(err)
			return
		}
		r.link.observe("poll", err)
		// Journal the whole batch first: the hub has marked all of it
		// IN_PROGRESS, so each task must survive a crash from here on.
		run := r.accept(list)
		for i, e := range run {
			if !r.enqueue(ctx, jobs, e) {
				for _, e := range run[i:] {
					r.unstart(e)
				}
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(r.opts.PollInterval):
		}
	}
}

// accept journals a poll batch in one transaction and returns the tasks to
// run. A known id is never run again: a recorded result is (re)delivered.
func (r *Runner) accept(list []hubapi.Task) []journal.Entry {
	// Only this loop sends jobs, so the workers idle now take the first
	// tasks sent at once: those are claimed straight into running, which
	// saves them a commit before their handler starts.
	idle := r.idle.Load()
	batch := make([]journal.Task, 0, len(list))
	for _, t := range list {
		if !hubapi.ValidTaskID(t.ID) {
			r.logger.Warn("Ignoring a task whose id is not a UUID", "task_type", string(t.TaskType))
			continue
		}
		start := int64(len(batch)) < idle
		batch = append(batch, journal.Task{ID: t.ID, TaskType: string(t.TaskType), Payload: t.Payload, Start: start})
	}
	if len(batch) == 0 {
		return nil
	}
	claimed, err := r.j.ClaimAll(batch)
	if err != nil {
		for _, t := range batch {
			r.logger.Error("Cannot journal task "+t.ID+"; leaving it to the hub's stale-task recovery", "task_id", t.ID, "error", err.Error())
		}
		return nil
	}
	var started, run []journal.Entry
	for _, c := range claimed {
		switch {
		case c.Created && c.Entry.State == journal.Running:
			started = append(started, c.Entry)
		case c.Created || r.known(c.Entry):
			run = append(run, c.Entry)
		}
	}
	return append(started, run...)
}

// unstart puts a task claimed straight into running back to claimed when
// shutdown came before a worker took it: its handler never started, so the
// next start runs it.
func (r *Runner) unstart(e journal.Entry) {
	if e.State != journal.Running {
		return
	}
	if _, err := r.j.Requeue(e.ID); err != nil {
		r.logger.Error("Cannot put task "+e.ID+" back to claimed", "task_id", e.ID, "error", err.Error())
	}
}

// known handles a task handed out again and says whether to run it.
func (r *Runner) known(e journal.Entry) bool {
	switch e.State {
	case journal.Claimed:
		r.mu.Lock()
		busy := r.inflight[e.ID]
		r.mu.Unlock()
		return !busy
	case journal.Running:
		r.logger.Debug("Task "+e.ID+" handed out again while it runs; ignoring", "task_id", e.ID)
	case journal.Recorded:
		r.logger.Info("Task "+e.ID+" handed out again; its result is awaiting delivery", "task_id", e.ID)
		r.deliver.Notify()
	case journal.Delivered, journal.Rejected:
		if _, err := r.j.Redeliver(e.ID); err != nil {
			r.logger.Error("Cannot re-deliver task "+e.ID, "task_id", e.ID, "error", err.Error())
			break
		}
		r.logger.Info("Task "+e.ID+" handed out again; re-delivering its recorded result instead of running it again", "task_id", e.ID)
		r.deliver.Notify()
	}
	return false
}

func (r *Runner) enqueue(ctx context.Context, jobs chan<- journal.Entry, e journal.Entry) bool {
	r.mu.Lock()
	r.inflight[e.ID] = true
	r.mu.Unlock()
	select {
	case jobs <- e:
		r.idle.Add(-1) // here, so that the next batch never counts this worker idle
		return true
	case <-ctx.Done():
		return false
	}
}

// worker runs tasks one after another. It is free for the next task as
// soon as a handler returns; the outcome is journaled on a goroutine counted
// in records, which then wakes delivery.
func (r *Runner) worker(ctx context.Context, jobs <-chan journal.Entry, records *sync.WaitGroup) {
	for {
		r.idle.Add(1)
		var e journal.Entry
		select {
		case <-ctx.Done():
			r.idle.Add(-1)
			return
		case e = <-jobs: // the sender took this worker off idle
			r.execute(ctx, e, records)
			r.mu.Lock()
			delete(r.inflight, e.ID)
			r.mu.Unlock()
		}
	}
}

func (r *Runner) execute(ctx context.Context, e journal.Entry, records *sync.WaitGroup) {
	if e.State != journal.Running { // not claimed straight into running
		if _, err := r.j.MarkRunning(e.ID); err != nil {
			r.logger.Error("Cannot start task "+e.ID, "task_id", e.ID, "error", err.Error())
			return
		}
	}
	out := r.exec.Execute(ctx, e.ID, hubapi.TaskType(e.TaskType), e.Payload)
	if !out.Success && ctx.Err() != nil {
		// Stopped mid-task: leave it running; the next start settles it.
		r.logger.Info("Task "+e.ID+" stopped by shutdown", "task_id", e.ID)
		return
	}
	records.Go(func() { r.record(e, out) })
}

// record journals a task's outcome, then hands it to delivery.
func (r *Runner) record(e journal.Entry, out tasks.Outcome) {
	jo := toJournal(out)
	if _, err := r.j.Record(e.ID, jo); err != nil {
		r.logger.Error("Cannot record the outcome of task "+e.ID, "task_id", e.ID, "error", err.Error())
		return
	}
	outcome := "success"
	if !jo.Success {
		outcome = "failed"
		attrs := []any{"task_id", e.ID, "task_type", e.TaskType}
		if out.StatusCode != nil {
			attrs = append(attrs, "status", *out.StatusCode)
		}
		// The error text may quote upstream bodies (SQL errors, addresses);
		// it goes to the hub only.
		r.logger.Warn("Task "+e.ID+" failed", attrs...)
	} else {
		r.logger.Info("Task "+e.ID+" completed", "task_id", e.ID, "task_type", e.TaskType)
	}
	r.opts.Metrics.task(e.TaskType, outcome)
	r.deliver.Recorded(e.ID)
}

// toJournal turns a handler outcome into what the hub will be sent.
func toJournal(out tasks.Outcome) journal.Outcome {
	if out.Success {
		if out.Result != nil && len(*out.Result) > hubapi.MaxResultLength {
			msg := hubapi.TaskErrorResult(fmt.Sprintf("Result exceeds the hub's limit of %d characters", hubapi.MaxResultLength), nil)
			return journal.Outcome{Result: &msg, Project: out.Project}
		}
		return journal.Outcome{Success: true, Result: out.Result, CohortResults: out.CohortResults, Project: out.Project}
	}
	msg := hubapi.TaskErrorResult(out.Err, out.StatusCode)
	return journal.Outcome{Result: &msg, StatusCode: out.StatusCode, CohortResults: out.CohortResults, Project: out.Project}
}

func (r *Runner) pruneLoop(ctx context.Context) {
	ticker := time.NewTicker(time.Hour)
	defer ticker.Stop()
	for {
		if n, err := r.j.Prune(time.Now().Add(-r.opts.Retention)); err != nil {
			r.logger.Error("Cannot prune the journal", "error", err.Error())
		} else if n > 0 {
			r.logger.Info(fmt.Sprintf("Pruned %d finished journal entries", n))
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// linkState logs each change of the hub's reachability once per call kind.
type linkState struct {
	logger  *slog.Logger
	metrics *Metrics
	notify  func(bool, string)

	mu     sync.Mutex
	states map[string]string
	up     *bool
}

func newLinkState(logger *slog.Logger, m *Metrics, notify func(bool, string)) *linkState {
	return &linkState{logger: logger, metrics: m, notify: notify, states: map[string]string{}}
}

// observe records the outcome of one hub call of kind op.
func (l *linkState) observe(op string, err error) {
	state, msg, level := classify(op, err)
	l.mu.Lock()
	defer l.mu.Unlock()
	prev, seen := l.states[op]
	if state != prev {
		l.states[op] = state
		if state != "ok" {
			l.logger.Log(context.Background(), level, msg, "hub_call", op, "hub_state", state)
		} else if seen {
			l.logger.Info("Hub "+op+" succeeding again", "hub_call", op)
		}
	}
	up := l.states["heartbeat"] == "ok" && l.states["poll"] == "ok"
	if l.up == nil || *l.up != up {
		l.up = &up
		l.metrics.hubUp(up)
		if l.notify != nil {
			reason := ""
			if !up {
				reason = "hub not reachable: heartbeat " + orPending(l.states["heartbeat"]) + ", poll " + orPending(l.states["poll"])
			}
			l.notify(up, reason)
		}
	}
}

func orPending(s string) string {
	if s == "" {
		return "pending"
	}
	return s
}

// classify names a hub call outcome ("ok", "unauthorized", "http-500",
// "unreachable") and the line to log when it begins.
func classify(op string, err error) (state, msg string, level slog.Level) {
	if err == nil {
		return "ok", "", slog.LevelInfo
	}
	var se *hub.StatusError
	if errors.As(err, &se) {
		state = fmt.Sprintf("http-%d", se.Code)
		hint := ""
		if se.Code == http.StatusUnauthorized {
			state = "unauthorized"
			hint = " (the hub rejected this trust's API key; check TRUST_API_KEY and TRUST_API_KEY_HEADER)"
			level = slog.LevelError
		} else {
			level = slog.LevelWarn
		}
		if op == "poll" {
			return state, fmt.Sprintf("Unexpected status %d polling for tasks%s", se.Code, hint), level
		}
		return state, fmt.Sprintf("Heartbeat rejected by hub: HTTP %d — %s%s", se.Code, cutString(se.Body, 200), hint), level
	}
	return "unreachable", fmt.Sprintf("Hub unreachable on %s: %v", op, err), slog.LevelWarn
}

// cutString returns at most n bytes of s, on a rune boundary.
func cutString(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
