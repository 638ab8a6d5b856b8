package importer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// errStalled cancels an attempt that made no progress within StallTimeout.
var errStalled = errors.New("import attempt stalled")

// work runs attempts one at a time until ctx ends.
func (im *Importer) work(ctx context.Context) {
	for {
		it, fl, actx, ok := im.next(ctx)
		if !ok {
			return
		}
		im.run(ctx, actx, it, fl)
	}
}

// next waits for the first item that is due and registers it as in flight,
// with a context its attempt runs under; false when ctx ended.
func (im *Importer) next(ctx context.Context) (*item, *flight, context.Context, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		im.mu.Lock()
		if ctx.Err() != nil || im.closed {
			im.mu.Unlock()
			return nil, nil, nil, false
		}
		it, wait := im.sched.pop(im.opts.Now())
		if it != nil {
			if im.deleting[it.project] {
				// The project is going: its records with it.
				im.mu.Unlock()
				continue
			}
			if im.flights[it.key] != nil {
				// The record was requeued while its last attempt is
				// still finishing: it runs once that one is done.
				im.parked[it.key] = it
				im.mu.Unlock()
				continue
			}
			actx, cancel := context.WithCancelCause(ctx)
			fl := &flight{project: it.project, cancel: cancel, done: make(chan struct{})}
			im.flights[it.key] = fl
			im.mu.Unlock()
			return it, fl, actx, true
		}
		changed := im.changed
		im.mu.Unlock()

		var due <-chan time.Time
		if wait >= 0 {
			if timer == nil {
				timer = time.NewTimer(wait)
			} else {
				timer.Reset(wait)
			}
			due = timer.C
		}
		select {
		case <-ctx.Done():
			return nil, nil, nil, false
		case <-changed:
		case <-due:
		}
	}
}

// outcome is how an attempt ended.
type outcome struct {
	rec      Record // the record as last written (with the chosen study)
	imported bool   // the study is complete in staging
	moved    bool   // ... because this attempt moved it
	skip     Reason // never entered the retrieval, for this reason
	step     Reason // the failed step, with err
	err      error
	gone     bool // the record was deleted or requeued meanwhile
}

// run takes one item through one attempt and records the result.
func (im *Importer) run(ctx, actx context.Context, it *item, fl *flight) {
	var requeue *item
	defer func() {
		im.mu.Lock()
		delete(im.flights, it.key)
		if p := im.parked[it.key]; p != nil {
			delete(im.parked, it.key)
			requeue = p
		}
		if requeue != nil && !errors.Is(context.Cause(actx), errDeleted) &&
			!im.deleting[it.project] && !im.closed && ctx.Err() == nil {
			im.sched.push(requeue)
			im.signal()
		}
		im.mu.Unlock()
		fl.cancel(nil)
		close(fl.done)
	}()
	k := []byte(it.key)
	now := im.opts.Now().UTC()
	rec, ok, err := im.change(k, it.seq, StateQueued, func(r *Record) {
		r.State, r.UpdatedAt, r.NotBefore = StateMoving, now, time.Time{}
	})
	if err != nil {
		im.log.Error("import state not writable", "project", it.project, "err", err)
		requeue = &item{key: it.key, project: it.project, seq: it.seq, notBefore: now.Add(im.opts.BackoffMin)}
		return
	}
	if !ok {
		return
	}
	log := im.log.With("project", rec.Project, "acc_hash", hashAccession(rec.Accession))

	out := im.attempt(actx, fl.cancel, k, rec)
	rec = out.rec
	now = im.opts.Now().UTC()
	cause := context.Cause(actx)
	switch {
	case out.gone || errors.Is(cause, errDeleted):
		return

	case out.imported:
		im.finish(log, k, rec, func(r *Record) {
			r.State, r.Reason, r.UpdatedAt = StateImported, "", now
		})
		log.Debug("import study staged", "moved", out.moved, "failed_attempts", rec.Attempts)

	case out.skip != "":
		im.finish(log, k, rec, func(r *Record) {
			r.State, r.Reason, r.UpdatedAt = StateQueueFailed, out.skip, now
		})
		log.Info("import accession skipped", "reason", out.skip)

	case out.step == "" || ctx.Err() != nil:
		// Shutting down, or the state file failed: not the study's fault,
		// so no attempt is counted. The next Start (or the retry below)
		// checks staging before moving again.
		wrote := im.finish(log, k, rec, func(r *Record) {
			r.State, r.UpdatedAt = StateQueued, now
		})
		if ctx.Err() == nil && wrote {
			requeue = &item{key: it.key, project: it.project, seq: it.seq, notBefore: now.Add(im.opts.BackoffMin)}
		}
		if out.err != nil && ctx.Err() == nil {
			log.Error("import state not writable", "err", out.err)
		}

	default:
		reason := out.step
		if errors.Is(cause, errStalled) {
			reason = ReasonStalled
		}
		attempts := rec.Attempts + 1
		final := attempts >= im.opts.MaxAttempts || errors.Is(out.err, ErrPermanent)
		state := StateQueued
		var notBefore time.Time
		if final {
			state = StateFailed
			if out.step == ReasonFind {
				// The study was never identified: it never entered
				// the retrieval.
				state = StateQueueFailed
			}
		} else {
			notBefore = now.Add(backoff(attempts, im.opts.BackoffMin, im.opts.BackoffMax))
		}
		wrote := im.finish(log, k, rec, func(r *Record) {
			r.State, r.Attempts, r.Reason, r.UpdatedAt, r.NotBefore = state, attempts, reason, now, notBefore
		})
		args := []any{"reason", reason, "attempt", attempts, "err_type", fmt.Sprintf("%T", out.err)}
		if final {
			log.Warn("import accession given up", append(args, "state", state)...)
			return
		}
		log.Warn("import attempt failed", append(args, "retry_in", notBefore.Sub(now).Round(time.Millisecond))...)
		if wrote {
			requeue = &item{key: it.key, project: it.project, seq: it.seq, notBefore: notBefore}
		}
	}
}

// finish commits an attempt's result; it reports whether it was written.
func (im *Importer) finish(log *slog.Logger, k []byte, rec Record, fn func(*Record)) bool {
	_, ok, err := im.change(k, rec.Seq, StateMoving, fn)
	if err != nil {
		log.Error("import state not writable", "err", err)
		return false
	}
	return ok
}

// attempt looks the study up if it has not been chosen yet, checks staging
// and moves the study when it is not there, under stall detection.
func (im *Importer) attempt(ctx context.Context, cancel context.CancelCauseFunc, k []byte, rec Record) outcome {
	dog := newWatchdog(im.opts.StallTimeout, func() { cancel(errStalled) })
	defer dog.stop()

	if rec.StudyUID == "" {
		matches, err := im.backend.Find(ctx, rec.Accession)
		if err != nil {
			return outcome{rec: rec, step: ReasonFind, err: err}
		}
		m, why := selectStudy(rec.Accession, matches)
		if why != "" {
			return outcome{rec: rec, skip: why}
		}
		now := im.opts.Now().UTC()
		r, ok, err := im.change(k, rec.Seq, StateMoving, func(r *Record) {
			r.StudyUID, r.Instances, r.UpdatedAt = m.StudyUID, m.Instances, now
		})
		if err != nil {
			return outcome{rec: rec, err: err}
		}
		if !ok {
			return outcome{rec: rec, gone: true}
		}
		rec = r
		dog.alive()
	}

	m := Match{Project: rec.Project, StudyUID: rec.StudyUID, AccessionNumber: rec.Accession, Instances: rec.Instances}
	present, err := im.backend.Present(ctx, m)
	if err != nil {
		return outcome{rec: rec, step: ReasonPresent, err: err}
	}
	if present {
		return outcome{rec: rec, imported: true}
	}
	dog.alive()

	var high atomic.Int64
	err = im.backend.Move(ctx, m, func(received int) {
		for {
			old := high.Load()
			if int64(received) <= old {
				return
			}
			if high.CompareAndSwap(old, int64(received)) {
				dog.alive()
				return
			}
		}
	})
	if err != nil {
		return outcome{rec: rec, step: ReasonMove, err: err}
	}
	return outcome{rec: rec, imported: true, moved: true}
}

// watchdog calls fire when alive has not been called for d; a zero
// watchdog (d <= 0) never fires.
type watchdog struct {
	mu sync.Mutex
	t  *time.Timer
	d  time.Duration
}

func newWatchdog(d time.Duration, fire func()) *watchdog {
	if d <= 0 {
		return &watchdog{}
	}
	return &watchdog{t: time.AfterFunc(d, fire), d: d}
}

// alive restarts the countdown.
func (w *watchdog) alive() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Reset(w.d)
	}
}

// stop disarms the watchdog for good.
func (w *watchdog) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.t != nil {
		w.t.Stop()
		w.t = nil
	}
}

// backoff is the wait before retrying after the n-th failed attempt:
// BackoffMin doubled per earlier failure, capped at BackoffMax, with up to
// half of it added as jitter; at the cap the jitter is taken below it
// instead. The result always lies in [lo, hi] = [min, max].
func backoff(n int, lo, hi time.Duration) time.Duration {
	base := lo
	for i := 1; i < n && base < hi; i++ {
		if base > hi/2 {
			base = hi
			break
		}
		base *= 2
	}
	base = min(base, hi)
	from, to := base, base+base/2
	if to > hi {
		to = hi
		from = max(hi-hi/3, lo)
	}
	if to <= from {
		return from
	}
	return from + rand.N(to-from+1)
}
