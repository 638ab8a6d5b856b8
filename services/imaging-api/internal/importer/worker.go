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

	bolt "go.etcd.io/bbolt"
)

// errStalled cancels an attempt that made no progress within StallTimeout.
var errStalled = errors.New("import attempt stalled")

// task is an item taken from the queue for an attempt: its flight, the
// context the attempt runs under and, once prepare has read it, the record
// and the study chosen for it.
type task struct {
	it   *item
	fl   *flight
	actx context.Context
	rec  Record // the record as read when the attempt began
	m    Match  // the chosen study, once known
	// ahead is the look-ahead that prepared the task, if any.
	ahead *lookahead
	// begun: the record is already committed as moving.
	begun bool
}

// work runs attempts until ctx ends, one move at a time. While a study
// moves, the worker's look-ahead prepares the next queued accession (its
// PACS lookup and staging check), so that the move of that accession can
// start as soon as this one is recorded. When it is ready by the time the
// move ends, one commit records both the study imported and the next one
// moving (see handover).
func (im *Importer) work(ctx context.Context) {
	var (
		t  *task
		la *lookahead // the worker's look-ahead, until it ended
	)
	defer func() {
		if la != nil {
			la.halt()
		}
	}()
	for {
		if t == nil {
			var ok bool
			if t, ok = im.take(ctx, true, true); !ok {
				return
			}
			if t.ahead == nil && !im.prepare(ctx, t) {
				t = nil
				continue
			}
		}
		if la != nil && t.ahead == la {
			<-la.done // it ends once its task is handed over
		}
		if la != nil && la.over() {
			la = nil
		}
		if la == nil {
			la = im.lookAhead(ctx)
		}
		if !t.begun && !im.begin(ctx, t) {
			la.halt()
			t = la.next()
			continue
		}
		out := im.transfer(t)
		la.halt()
		var next *task
		if out.moved {
			next = la.ready()
		}
		switch {
		case next == nil:
			im.conclude(ctx, t, StateMoving, out)
			t = la.next()
		case im.handover(ctx, t, next):
			t = next
		default:
			t = la.next()
		}
	}
}

// lookahead prepares queued accessions while its worker moves a study,
// until one of them is ready to move; it offers that one to the workers
// (im.handoff) and ends.
type lookahead struct {
	handoff chan *task    // the Importer's
	stop    chan struct{} // closed by the worker once its move is recorded
	done    chan struct{} // closed when the look-ahead ended
	once    sync.Once
}

// lookAhead starts a look-ahead.
func (im *Importer) lookAhead(ctx context.Context) *lookahead {
	la := &lookahead{handoff: im.handoff, stop: make(chan struct{}), done: make(chan struct{})}
	im.wg.Go(func() {
		defer close(la.done)
		for {
			select {
			case <-la.stop:
				return
			default:
			}
			t, ok := im.take(ctx, false, false)
			if !ok {
				return
			}
			if !im.prepare(ctx, t) {
				continue
			}
			t.ahead = la
			select {
			case im.handoff <- t:
			case <-t.actx.Done():
				// Deleted or shutting down while it waited: nothing
				// was written for it yet.
				im.conclude(ctx, t, StateQueued, outcome{})
			}
			return
		}
	})
	return la
}

// halt tells the look-ahead to take no more accessions; one it is
// preparing is still finished and offered.
func (la *lookahead) halt() {
	la.once.Do(func() { close(la.stop) })
}

// next returns the next prepared task offered to the workers (by this
// look-ahead or another one), or nil once this look-ahead ended without
// offering one.
func (la *lookahead) next() *task {
	select {
	case t := <-la.handoff:
		return t
	case <-la.done:
		return nil
	}
}

// ready returns a prepared task already offered to the workers (by this
// look-ahead or another one), or nil at once when there is none.
func (la *lookahead) ready() *task {
	select {
	case t := <-la.handoff:
		return t
	default:
		return nil
	}
}

// over reports whether the look-ahead has ended.
func (la *lookahead) over() bool {
	select {
	case <-la.done:
		return true
	default:
		return false
	}
}

// take registers the first due item as in flight and returns it as a task,
// or a task a look-ahead prepared (when handoff is set); with wait it waits
// for one, without it returns false at once when none is due. It returns
// false when ctx ended or the Importer closed.
func (im *Importer) take(ctx context.Context, wait, handoff bool) (*task, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	var offered chan *task
	if handoff {
		offered = im.handoff
	}
	for {
		// A prepared task goes first: it was taken from the queue earlier.
		select {
		case t := <-offered:
			return t, true
		default:
		}
		im.mu.Lock()
		if ctx.Err() != nil || im.closed {
			im.mu.Unlock()
			return nil, false
		}
		it, due := im.sched.pop(im.opts.Now())
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
			return &task{it: it, fl: fl, actx: actx}, true
		}
		changed := im.changed
		im.mu.Unlock()
		if !wait {
			return nil, false
		}

		var dueC <-chan time.Time
		if due >= 0 {
			if timer == nil {
				timer = time.NewTimer(due)
			} else {
				timer.Reset(due)
			}
			dueC = timer.C
		}
		select {
		case <-ctx.Done():
			return nil, false
		case t := <-offered:
			return t, true
		case <-changed:
		case <-dueC:
		}
	}
}

// next waits for the first item that is due and registers it as in flight,
// with a context its attempt runs under; false when ctx ended.
func (im *Importer) next(ctx context.Context) (*item, *flight, context.Context, bool) {
	t, ok := im.take(ctx, true, false)
	if !ok {
		return nil, nil, nil, false
	}
	return t.it, t.fl, t.actx, true
}

// run takes one item through one attempt and records the result.
func (im *Importer) run(ctx, actx context.Context, it *item, fl *flight) {
	t := &task{it: it, fl: fl, actx: actx}
	if im.prepare(ctx, t) {
		im.move(ctx, t)
	}
}

// outcome is how an attempt, or its preparation, ended.
type outcome struct {
	ready    bool   // prepared: the study is chosen and not in staging yet
	imported bool   // the study is complete in staging
	moved    bool   // ... because this attempt moved it
	skip     Reason // never entered the retrieval, for this reason
	step     Reason // the failed step, with err
	err      error
	gone     bool // the record was deleted or requeued meanwhile
}

// prepare begins an attempt on a queued record: it looks the study up
// unless it was chosen before (and records the choice), and checks whether
// staging already holds it, under stall detection; the record stays queued
// meanwhile. It reports whether the study is to be moved (by move); if
// not, the attempt is recorded and finished.
func (im *Importer) prepare(ctx context.Context, t *task) bool {
	var (
		rec   Record
		found bool
	)
	err := im.db.View(func(tx *bolt.Tx) error {
		var err error
		rec, found, err = getRecord(tx.Bucket(bucketRecords), []byte(t.it.key))
		return err
	})
	if err != nil {
		im.conclude(ctx, t, StateQueued, outcome{err: fmt.Errorf("read import record: %w", err)})
		return false
	}
	if !found || rec.Seq != t.it.seq || rec.State != StateQueued {
		im.conclude(ctx, t, StateQueued, outcome{gone: true})
		return false
	}
	t.rec = rec
	out := im.lookup(t)
	if out.ready {
		return true
	}
	im.conclude(ctx, t, StateQueued, out)
	return false
}

// lookup chooses the study and checks staging for it.
func (im *Importer) lookup(t *task) outcome {
	dog := newWatchdog(im.opts.StallTimeout, func() { t.fl.cancel(errStalled) })
	defer dog.stop()
	rec := t.rec
	t.m = Match{StudyUID: rec.StudyUID, AccessionNumber: rec.Accession, Instances: rec.Instances}
	if rec.StudyUID == "" {
		matches, err := im.backend.Find(t.actx, rec.Accession)
		if err != nil {
			return outcome{step: ReasonFind, err: err}
		}
		m, why := selectStudy(rec.Accession, matches)
		if why != "" {
			return outcome{skip: why}
		}
		// The choice is recorded before staging is looked at: from
		// then on the journal says the study is on its way for this
		// project, so that deleting another project keeps it.
		now := im.opts.Now().UTC()
		r, ok, err := im.change([]byte(t.it.key), t.it.seq, StateQueued, func(r *Record) {
			r.StudyUID, r.Instances, r.UpdatedAt = m.StudyUID, m.Instances, now
		})
		if err != nil {
			return outcome{err: err}
		}
		if !ok {
			return outcome{gone: true}
		}
		t.rec, t.m = r, m
		dog.alive()
	}
	t.m.Project = rec.Project
	present, err := im.backend.Present(t.actx, t.m)
	if err != nil {
		return outcome{step: ReasonPresent, err: err}
	}
	if present {
		return outcome{imported: true}
	}
	return outcome{ready: true}
}

// move records the prepared task as moving and moves the study under stall
// detection; then it records the result.
func (im *Importer) move(ctx context.Context, t *task) {
	if im.begin(ctx, t) {
		im.conclude(ctx, t, StateMoving, im.transfer(t))
	}
}

// begin records the prepared task as moving. If it cannot, it concludes
// the attempt and reports false.
func (im *Importer) begin(ctx context.Context, t *task) bool {
	if t.actx.Err() != nil {
		// Cancelled while it waited for a worker.
		im.conclude(ctx, t, StateQueued, outcome{})
		return false
	}
	rec, ok, err := im.change([]byte(t.it.key), t.it.seq, StateQueued, setMoving(im.opts.Now().UTC()))
	if err != nil {
		im.conclude(ctx, t, StateQueued, outcome{err: err})
		return false
	}
	if !ok {
		im.conclude(ctx, t, StateQueued, outcome{gone: true})
		return false
	}
	t.rec, t.begun = rec, true
	return true
}

// setMoving is the change of a record whose move begins at now.
func setMoving(now time.Time) func(*Record) {
	return func(r *Record) {
		r.State, r.UpdatedAt, r.NotBefore = StateMoving, now, time.Time{}
	}
}

// setImported is the change of a record whose study is complete in staging
// at now.
func setImported(now time.Time) func(*Record) {
	return func(r *Record) {
		r.State, r.Reason, r.UpdatedAt, r.NotBefore = StateImported, "", now, time.Time{}
	}
}

// transfer moves the begun task's study under stall detection.
func (im *Importer) transfer(t *task) outcome {
	dog := newWatchdog(im.opts.StallTimeout, func() { t.fl.cancel(errStalled) })
	var high atomic.Int64
	err := im.backend.Move(t.actx, t.m, func(received int) {
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
	dog.stop()
	if err != nil {
		return outcome{step: ReasonMove, err: err}
	}
	return outcome{imported: true, moved: true}
}

// handover records t, whose study has just moved, as imported and the
// prepared task next as moving in one commit: one fsynced write instead of
// two between the end of one move and the start of the next, and no
// weaker, since t's state is still durable before next's move begins and a
// crash leaves either both changes or neither (t then resumes as queued and
// goes through the staging check, as after any crash during a move). It
// lets go of t, and reports whether next's move may begin; if not, next is
// concluded.
func (im *Importer) handover(ctx context.Context, t, next *task) bool {
	if next.actx.Err() != nil || errors.Is(context.Cause(t.actx), errDeleted) {
		im.conclude(ctx, t, StateMoving, outcome{imported: true, moved: true})
		return im.begin(ctx, next)
	}
	now := im.opts.Now().UTC()
	var (
		rec            Record
		staged, moving bool
	)
	err := im.writes.Do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		var err error
		if _, staged, err = changeIn(b, []byte(t.it.key), t.it.seq, StateMoving, setImported(now)); err != nil {
			return err
		}
		rec, moving, err = changeIn(b, []byte(next.it.key), next.it.seq, StateQueued, setMoving(now))
		return err
	})
	log := im.log.With("project", t.it.project, "acc_hash", hashAccession(t.rec.Accession))
	switch {
	case err != nil:
		log.Error("import state not writable", "err", err)
	case staged:
		log.Debug("import study staged", "moved", true, "failed_attempts", t.rec.Attempts)
	}
	im.release(ctx, t, nil)
	switch {
	case err != nil:
		im.conclude(ctx, next, StateQueued, outcome{err: fmt.Errorf("update import record: %w", err)})
		return false
	case !moving:
		im.conclude(ctx, next, StateQueued, outcome{gone: true})
		return false
	}
	next.rec, next.begun = rec, true
	return true
}

// conclude records how the attempt on t ended, the record being in state
// from (queued while it was prepared, moving once its move began), and
// lets go of t: a failed attempt, or one that must be tried again, is put
// back in the queue.
func (im *Importer) conclude(ctx context.Context, t *task, from State, out outcome) {
	var requeue *item
	defer func() { im.release(ctx, t, requeue) }()
	it := t.it
	k := []byte(it.key)
	now := im.opts.Now().UTC()
	cause := context.Cause(t.actx)
	log := im.log.With("project", it.project, "acc_hash", hashAccession(t.rec.Accession))
	switch {
	case out.gone || errors.Is(cause, errDeleted):
		return

	case out.imported:
		im.finish(log, k, it.seq, from, setImported(now))
		log.Debug("import study staged", "moved", out.moved, "failed_attempts", t.rec.Attempts)

	case out.skip != "":
		im.finish(log, k, it.seq, from, func(r *Record) {
			r.State, r.Reason, r.UpdatedAt, r.NotBefore = StateQueueFailed, out.skip, now, time.Time{}
		})
		log.Info("import accession skipped", "reason", out.skip)

	case out.step == "" || ctx.Err() != nil:
		// Shutting down, or the state file failed: not the study's fault,
		// so no attempt is counted. The next Start (or the retry below)
		// checks staging before moving again. A record still queued
		// needs no write.
		wrote := true
		if from == StateMoving {
			wrote = im.finish(log, k, it.seq, from, func(r *Record) {
				r.State, r.UpdatedAt = StateQueued, now
			})
		}
		if ctx.Err() == nil && wrote {
			requeue = &item{key: it.key, project: it.project, seq: it.seq, notBefore: now.Add(im.opts.BackoffMin)}
		}
		if out.err != nil && ctx.Err() == nil {
			log.Error("import state not usable", "err", out.err)
		}

	default:
		reason := out.step
		if errors.Is(cause, errStalled) {
			reason = ReasonStalled
		}
		attempts := t.rec.Attempts + 1
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
		wrote := im.finish(log, k, it.seq, from, func(r *Record) {
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

// release ends t's flight and queues requeue, or the item parked behind
// the flight, unless the project is going or the Importer is stopping.
func (im *Importer) release(ctx context.Context, t *task, requeue *item) {
	im.mu.Lock()
	delete(im.flights, t.it.key)
	if p := im.parked[t.it.key]; p != nil {
		delete(im.parked, t.it.key)
		requeue = p
	}
	if requeue != nil && !errors.Is(context.Cause(t.actx), errDeleted) &&
		!im.deleting[t.it.project] && !im.closed && ctx.Err() == nil {
		im.sched.push(requeue)
		im.signal()
	}
	im.settle()
	im.mu.Unlock()
	t.fl.cancel(nil)
	close(t.fl.done)
}

// finish commits an attempt's result to a record still in state from; it
// reports whether it was written.
func (im *Importer) finish(log *slog.Logger, k []byte, seq uint64, from State, fn func(*Record)) bool {
	_, ok, err := im.change(k, seq, from, fn)
	if err != nil {
		log.Error("import state not writable", "err", err)
		return false
	}
	return ok
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
