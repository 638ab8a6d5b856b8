package flserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/google/uuid"

	"github.com/flip-trust/node/shared/flproto"
)

// engineRetry is how soon the engine tries again after a failed write.
const engineRetry = time.Second

// NextTask returns a task due for client: one not yet handed out, or one
// handed out to it that has gone RehandAfter without a heartbeat (same id).
// When none is due it waits up to wait for one, and reports false when the
// wait runs out. Every call records that the client was seen.
func (s *Server) NextTask(ctx context.Context, client string, wait time.Duration) (flproto.Task, bool, error) {
	end := time.Now().Add(wait)
	for {
		s.mu.Lock()
		c, ok := s.clients[client]
		if !ok {
			s.mu.Unlock()
			return flproto.Task{}, false, fmt.Errorf("%w: %s", ErrUnknownClient, client)
		}
		now := s.cfg.Now()
		s.seen(c, now)
		task, found, eligible, err := s.handOut(client, now)
		if err != nil || found {
			s.mu.Unlock()
			return task, found, err
		}
		ch := s.waiter(client)
		s.mu.Unlock()

		d := time.Until(end)
		if d <= 0 {
			return flproto.Task{}, false, nil
		}
		if !eligible.IsZero() {
			d = min(d, max(eligible.Sub(now), time.Millisecond))
		}
		timer := time.NewTimer(d)
		select {
		case <-ctx.Done():
			timer.Stop()
			return flproto.Task{}, false, ctx.Err()
		case <-s.ctx.Done():
			timer.Stop()
			return flproto.Task{}, false, ErrClosed
		case <-ch:
		case <-timer.C:
		}
		timer.Stop()
	}
}

// handOut finds and hands out client's next due task; otherwise it returns
// when a running task of client becomes eligible again (zero if never). The
// caller holds s.mu.
func (s *Server) handOut(client string, now time.Time) (flproto.Task, bool, time.Time, error) {
	var eligible time.Time
	for _, id := range s.order {
		j := s.jobs[id]
		r := j.current()
		if j.State != JobRunning || s.closing[id] || r == nil || r.ClosedAt != nil || !now.Before(r.Deadline) {
			continue
		}
		for ci := range r.Clients {
			cr := &r.Clients[ci]
			if cr.Client != client {
				continue
			}
			due := cr.Status == StatusAssigned
			if cr.Status == StatusRunning {
				at := s.lastBeat[cr.Task].Add(s.cfg.RehandAfter)
				if !now.Before(at) {
					due = true
				} else if eligible.IsZero() || at.Before(eligible) {
					eligible = at
				}
			}
			if !due {
				continue
			}
			ri, t := j.Round-1, now.UTC()
			if err := s.update(j, func(j *Job) {
				cr := &j.Rounds[ri].Clients[ci]
				cr.Status, cr.HandedOutAt = StatusRunning, &t
				cr.Handouts++
			}); err != nil {
				return flproto.Task{}, false, time.Time{}, err
			}
			s.lastBeat[cr.Task] = now
			r = j.current()
			cr = &r.Clients[ci]
			s.logger.Info("fl task handed out", "job_id", j.ID, "round", r.Number, "client", client, "task_id", cr.Task, "handouts", cr.Handouts)
			return taskFor(j, r, cr), true, time.Time{}, nil
		}
	}
	return flproto.Task{}, false, eligible, nil
}

func taskFor(j *Job, r *Round, cr *ClientRound) flproto.Task {
	return flproto.Task{
		ID: cr.Task, JobID: j.ID, Kind: j.Spec.Kind, Round: r.Number, Rounds: j.Spec.Rounds, Model: r.Model,
		Job: j.Spec.Job, Data: j.Spec.Data, Resources: j.Spec.Resources, Params: j.Spec.Params, Deadline: r.Deadline,
	}
}

// lookup finds client's task; the caller holds s.mu.
func (s *Server) lookup(client, task string) (taskRef, *Job, error) {
	ref, ok := s.tasks[task]
	if !ok {
		return taskRef{}, nil, fmt.Errorf("%w: %s", ErrTaskNotFound, task)
	}
	j := s.jobs[ref.job]
	if j.Rounds[ref.round-1].Clients[ref.client].Client != client {
		return taskRef{}, nil, fmt.Errorf("%w: %s", ErrTaskNotFound, task)
	}
	return ref, j, nil
}

// roundOpen reports whether the round of ref still takes results; the
// caller holds s.mu.
func (s *Server) roundOpen(j *Job, ref taskRef, now time.Time) bool {
	r := &j.Rounds[ref.round-1]
	return j.State == JobRunning && j.Round == ref.round && !s.closing[j.ID] && r.ClosedAt == nil && now.Before(r.Deadline)
}

// Heartbeat records that client is working on task and says whether it
// should stop: its round closed or its job ended.
func (s *Server) Heartbeat(client, task string) (flproto.Heartbeat, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, j, err := s.lookup(client, task)
	if err != nil {
		return flproto.Heartbeat{}, err
	}
	now := s.cfg.Now()
	if c := s.clients[client]; c != nil {
		s.seen(c, now)
	}
	cr := j.Rounds[ref.round-1].Clients[ref.client]
	if cr.Status == StatusRunning {
		s.lastBeat[task] = now
	}
	return flproto.Heartbeat{Cancel: !s.roundOpen(j, ref, now) || cr.Status == StatusMissing}, nil
}

// Result records client's result for task. A repeat of the accepted result
// is accepted again; a different one is ErrResultConflict. A result for a
// closed round is ErrRoundClosed, another client's or an unknown task
// ErrTaskNotFound, and an invalid one a *ValidationError.
func (s *Server) Result(client, task string, res flproto.Result) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	ref, j, err := s.lookup(client, task)
	if err != nil {
		return err
	}
	cr := j.Rounds[ref.round-1].Clients[ref.client]
	if cr.Result != nil {
		if sameResult(*cr.Result, res) {
			return nil
		}
		return fmt.Errorf("%w: task %s", ErrResultConflict, task)
	}
	now := s.cfg.Now()
	if !s.roundOpen(j, ref, now) {
		return fmt.Errorf("%w: task %s (job %s round %d)", ErrRoundClosed, task, j.ID, ref.round)
	}
	if err := s.checkResult(j.Spec.Kind, res); err != nil {
		return err
	}
	t := now.UTC()
	if err := s.update(j, func(j *Job) {
		r := &j.Rounds[ref.round-1]
		cr := &r.Clients[ref.client]
		stored := res
		cr.Result, cr.ResultAt, cr.Status = &stored, &t, res.Status
		if res.Status == StatusFailed {
			cr.Failure, cr.Error = res.Failure, res.Error
			if cr.Failure == "" {
				cr.Failure = flproto.FailureError
			}
		}
		r.Returned++
	}); err != nil {
		return err
	}
	delete(s.lastBeat, task)
	s.logger.Info("fl result accepted", "job_id", j.ID, "round", ref.round, "client", client, "task_id", task, "status", res.Status)
	if allAnswered(j.current()) {
		s.wake()
	}
	return nil
}

func sameResult(a, b flproto.Result) bool {
	ja, errA := json.Marshal(a)
	jb, errB := json.Marshal(b)
	return errA == nil && errB == nil && string(ja) == string(jb)
}

var failureClasses = map[string]bool{
	"": true, flproto.FailureOOM: true, flproto.FailureTimeout: true, flproto.FailureRefused: true, flproto.FailureError: true,
}

// checkResult validates res for a task of kind; the caller holds s.mu.
func (s *Server) checkResult(kind string, res flproto.Result) error {
	var p []string
	add := func(format string, args ...any) { p = append(p, fmt.Sprintf(format, args...)) }
	switch res.Status {
	case StatusOK:
		if res.Failure != "" {
			add("failure: only a failed result has a failure class")
		}
	case StatusFailed:
		if !failureClasses[res.Failure] {
			add("failure: must be one of oom, timeout, refused, error")
		}
	default:
		add("status: must be %q or %q", StatusOK, StatusFailed)
	}
	switch {
	case res.Update != "" && kind == flproto.KindEvaluate:
		add("update: an evaluate task never returns weights")
	case res.Update != "" && res.Status != StatusOK:
		add("update: only an ok result carries an update")
	case res.Update != "" && (!flproto.IsArtifactID(res.Update) || !s.arts.Has(res.Update)):
		add("update: unknown artifact %q", res.Update)
	case res.Update == "" && kind == flproto.KindTrain && res.Status == StatusOK:
		add("update: an ok train result needs the artifact id of its update")
	}
	for k, v := range res.Metrics {
		if k == "" {
			add("metrics: a metric name must not be empty")
		}
		if math.IsNaN(v) || math.IsInf(v, 0) {
			add("metrics.%s: must be a finite number", k)
		}
	}
	if res.SampleCount < 0 {
		add("sample_count: must not be negative")
	}
	if len(p) > 0 {
		return &ValidationError{Problems: p}
	}
	return nil
}

func allAnswered(r *Round) bool {
	if r == nil {
		return false
	}
	for _, cr := range r.Clients {
		if cr.Status != StatusOK && cr.Status != StatusFailed {
			return false
		}
	}
	return true
}

// engine is the Server's one goroutine: it starts pending jobs and closes
// due rounds until Close.
func (s *Server) engine() {
	defer s.wg.Done()
	ctx := s.ctx
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		next := s.step(ctx)
		d := time.Hour
		if !next.IsZero() {
			d = max(next.Sub(s.cfg.Now()), 0)
		}
		timer.Reset(d)
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-timer.C:
		}
	}
}

// closeInput is a snapshot of a round being closed.
type closeInput struct {
	job, kind, model string
	round, min       int
	ok               []okResult
}

type okResult struct {
	client, update string
	n              int64
	metrics        map[string]float64
}

// closeOutput is what closing a round produced.
type closeOutput struct {
	rejected    map[string]string // client -> why its update was refused
	ok          int
	sampleCount int64
	metrics     map[string]float64
	newModel    string
	err         error // the job fails
}

// step starts pending jobs and closes every due round; it returns when the
// engine should look again (zero: only when kicked).
func (s *Server) step(ctx context.Context) time.Time {
	for ctx.Err() == nil {
		in, next := s.nextClose()
		if in == nil {
			return next
		}
		out := s.closeRound(ctx, *in)
		if ctx.Err() != nil {
			return time.Time{} // closing; the round is closed again after a restart
		}
		if err := s.finish(*in, out); err != nil {
			s.logger.Error("fl round close", "job_id", in.job, "round", in.round, "err", err)
			return s.cfg.Now().Add(engineRetry)
		}
	}
	return time.Time{}
}

// nextClose starts pending jobs and picks one due round, marking it closing.
// With none due it returns the earliest deadline.
func (s *Server) nextClose() (*closeInput, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	var next time.Time
	later := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	for _, id := range s.order {
		j := s.jobs[id]
		if j.State != JobPending {
			continue
		}
		if err := s.start(j, now); err != nil {
			s.logger.Error("fl job start", "job_id", id, "err", err)
			later(now.Add(engineRetry))
		}
	}
	for _, id := range s.order {
		j := s.jobs[id]
		r := j.current()
		if j.State != JobRunning || s.closing[id] || r == nil || r.ClosedAt != nil {
			continue
		}
		if !allAnswered(r) && now.Before(r.Deadline) {
			later(r.Deadline)
			continue
		}
		s.closing[id] = true
		in := &closeInput{job: id, kind: j.Spec.Kind, model: r.Model, round: r.Number, min: j.Spec.MinClients}
		for _, cr := range r.Clients {
			if cr.Status == StatusOK && cr.Result != nil {
				in.ok = append(in.ok, okResult{client: cr.Client, update: cr.Result.Update, n: cr.Result.SampleCount, metrics: cr.Result.Metrics})
			}
		}
		return in, time.Time{}
	}
	return nil, next
}

// start opens round 1 of a pending job; the caller holds s.mu.
func (s *Server) start(j *Job, now time.Time) error {
	t := now.UTC()
	if err := s.update(j, func(j *Job) {
		j.State, j.StartedAt = JobRunning, &t
		openRound(j, now)
	}); err != nil {
		return err
	}
	s.opened(j)
	return nil
}

// openRound appends the next round to j with one task per client.
func openRound(j *Job, now time.Time) {
	n := len(j.Rounds) + 1
	r := Round{
		Number: n, Model: j.Model, OpenedAt: now.UTC(),
		Deadline: now.UTC().Add(time.Duration(j.Spec.RoundTimeoutSeconds) * time.Second),
	}
	for _, c := range j.Spec.Clients {
		r.Clients = append(r.Clients, ClientRound{Client: c, Task: uuid.NewString(), Status: StatusAssigned})
	}
	j.Rounds = append(j.Rounds, r)
	j.Round = n
}

// opened indexes the tasks of j's new round and wakes its clients; the
// caller holds s.mu.
func (s *Server) opened(j *Job) {
	r := j.current()
	for ci, cr := range r.Clients {
		s.tasks[cr.Task] = taskRef{job: j.ID, round: r.Number, client: ci}
		s.notify(cr.Client)
	}
	s.logger.Info("fl round opened", "job_id", j.ID, "round", r.Number, "rounds", j.Spec.Rounds, "deadline", r.Deadline)
}

// closeRound checks and aggregates the ok results of a round, outside the
// lock.
func (s *Server) closeRound(ctx context.Context, in closeInput) closeOutput {
	out := closeOutput{rejected: map[string]string{}}
	accepted := in.ok
	if in.kind == flproto.KindTrain && len(in.ok) > 0 {
		var err error
		accepted, out.rejected, err = s.checkUpdates(in.model, in.ok)
		if err != nil {
			out.err = err
			return out
		}
	}
	out.ok = len(accepted)
	if out.ok < in.min {
		return out
	}
	out.metrics, out.sampleCount = roundMetrics(accepted)
	if in.kind != flproto.KindTrain {
		return out
	}
	if out.sampleCount <= 0 {
		out.err = errors.New("the clients that returned an update reported no samples")
		return out
	}
	id, err := s.fedAvg(ctx, in.model, accepted, out.sampleCount)
	if err != nil {
		out.err = fmt.Errorf("aggregate: %w", err)
		return out
	}
	out.newModel = id
	return out
}

// roundMetrics is the sample-weighted mean of each metric over the clients
// that returned it (the plain mean where their samples sum to zero), the sum
// for count metrics, and the total sample count.
func roundMetrics(oks []okResult) (map[string]float64, int64) {
	var total int64
	sum, weighted, weight, plain, count := map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}, map[string]float64{}
	for _, o := range oks {
		total += o.n
		for k, v := range o.metrics {
			if countMetrics[k] {
				sum[k] += v
				continue
			}
			weighted[k] += float64(o.n) * v
			weight[k] += float64(o.n)
			plain[k] += v
			count[k]++
		}
	}
	out := make(map[string]float64, len(sum)+len(count))
	for k, v := range sum {
		out[k] = v
	}
	for k := range count {
		if weight[k] > 0 {
			out[k] = weighted[k] / weight[k]
		} else {
			out[k] = plain[k] / count[k]
		}
	}
	return out, total
}

// finish records a closed round and opens the next one, completes the job
// or fails it.
func (s *Server) finish(in closeInput, out closeOutput) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.closing, in.job)
	j := s.jobs[in.job]
	if j.State != JobRunning || j.Round != in.round {
		return nil // cancelled meanwhile
	}
	now := s.cfg.Now()
	t := now.UTC()
	var reason string
	err := s.update(j, func(j *Job) {
		r := &j.Rounds[in.round-1]
		for i := range r.Clients {
			cr := &r.Clients[i]
			if why, ok := out.rejected[cr.Client]; ok {
				cr.Status, cr.Failure, cr.Error = StatusFailed, FailureRejected, why
			}
		}
		closeClients(r, t)
		r.OK, r.SampleCount, r.Metrics, r.NewModel = out.ok, out.sampleCount, out.metrics, out.newModel
		switch {
		case out.err != nil:
			reason = fmt.Sprintf("round %d: %v", in.round, out.err)
		case out.ok < in.min:
			what := "a result"
			if in.kind == flproto.KindTrain {
				what = "an update"
			}
			reason = fmt.Sprintf("round %d: %d of %d clients returned %s, %d required", in.round, out.ok, len(r.Clients), what, in.min)
		}
		if reason != "" {
			j.State, j.Error, j.FinishedAt = JobFailed, reason, &t
			return
		}
		j.Metrics = out.metrics
		if in.kind == flproto.KindTrain {
			j.Model = out.newModel
		}
		if in.round < j.Spec.Rounds {
			openRound(j, now)
			return
		}
		j.State, j.FinishedAt = JobCompleted, &t
		if in.kind == flproto.KindTrain {
			j.FinalModel = j.Model
		}
	})
	if err != nil {
		return err
	}
	r := j.Rounds[in.round-1]
	s.logger.Info("fl round closed", "job_id", j.ID, "round", in.round, "ok", out.ok, "returned", r.Returned, "clients", len(r.Clients), "new_model", out.newModel)
	switch j.State {
	case JobRunning:
		s.opened(j)
	case JobFailed:
		s.logger.Warn("fl job failed", "job_id", j.ID, "reason", reason)
	case JobCompleted:
		s.logger.Info("fl job completed", "job_id", j.ID, "final_model", j.FinalModel)
	}
	return nil
}
