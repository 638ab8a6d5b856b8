// Package delivery posts recorded task outcomes to the hub until the hub
// acknowledges them. For each journal entry in state recorded it first posts
// the cohort-results body (if any), then POST /tasks/{id}/result. Failures
// are retried with exponential backoff and full jitter between a minimum
// and a maximum delay, across hub outages of any length; Retry-After is
// honoured on 429 and 503. Up to Options.Concurrency entries are posted to
// the hub at once, each by one goroutine that posts its cohort results before
// its result; an entry is never in flight twice, and stays in flight until
// the journal holds the hub's answer. A failure that concerns the
// hub as a whole (unreachable, 5xx, 429, 401) holds back every entry not
// yet in flight until its retry is due. Only a terminal answer (403, 404, 409 for a
// result) ends an entry without acknowledgement, and it is recorded as
// rejected with its code. All state lives in the journal, so a restart
// resumes where delivery stopped.
//
// Before any body is posted it passes the egress gate (Options.Gate): a
// released body has been written to the audit ledger and is posted byte for
// byte as ledgered; a held body waits, without counting as a failed
// attempt, until the gate reports a decision (Resume) or a periodic
// re-check; a body that will never leave (rejected by a reviewer, expired,
// refused by policy) is replaced by a failure notice that carries the
// gate's reason to the hub, with FLIP's cohort error envelope for a cohort
// query.
//
// The loop finds its work in the journal's outbox. An outcome just recorded
// is also handed to it by id (Recorded), and while nothing else may be
// waiting (no Notify, no retry due, nothing left behind for want of a slot)
// it starts those entries without listing the outbox again, so a backlog is
// not read once per recorded outcome.
package delivery

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/trust-api/internal/egress"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/ledger"
)

// Poster is the part of the hub client delivery uses. Implementations must
// be safe for concurrent use and return *hub.StatusError for HTTP answers
// outside 2xx.
type Poster interface {
	PostResultBody(ctx context.Context, taskID string, body []byte) error
	PostCohortResults(ctx context.Context, body json.RawMessage) error
}

// Gate is the egress gate every body passes before it is posted. Submit
// must be safe for concurrent use and idempotent for the same bytes.
type Gate interface {
	Submit(r egress.Request) (egress.Item, error)
}

var (
	_ Poster = (*hub.Client)(nil)
	_ Gate   = (*egress.Gate)(nil)
)

// errHeld ends an attempt whose body waits for a reviewer.
var errHeld = errors.New("held for egress review")

// Options tune a Deliverer.
type Options struct {
	// BackoffMin and BackoffMax bound the delay between attempts (1 s, 60 s).
	BackoffMin time.Duration
	BackoffMax time.Duration
	// MaxRetryAfter caps a Retry-After the hub asks for (1 h).
	MaxRetryAfter time.Duration
	// Concurrency bounds the entries being delivered at once (8).
	Concurrency int
	// Retries counts failed delivery attempts; may be nil.
	Retries prometheus.Counter
	// Gate is the egress gate; nil posts without one (tests only).
	Gate Gate
	// HeldRecheck is how often an entry waiting for review is looked at
	// again without a Resume (1 min).
	HeldRecheck time.Duration
	// Now and Jitter replace time.Now and rand.Float64 in tests.
	Now    func() time.Time
	Jitter func() float64
}

// Deliverer is the delivery loop. Run must be called from one goroutine;
// Notify may be called from any.
type Deliverer struct {
	j      *journal.Journal
	hub    Poster
	opts   Options
	logger *slog.Logger
	wake   chan struct{}

	resumeMu sync.Mutex
	resumed  map[string]bool // entries whose held body was decided
	fresh    []string        // handed over by Recorded, not started yet
	relist   bool            // Notify: the outbox may hold entries not handed over

	// owned by the Run goroutine
	retry     map[string]*retryState
	holdUntil time.Time
	inflight  map[string]bool
	// stale is set when the outbox may hold entries that no hand-over
	// will bring: retries come due, entries left behind for want of a slot.
	stale bool
}

// attempt is the end of one delivery attempt, reported to the Run goroutine.
type attempt struct {
	id  string
	err error
}

type retryState struct {
	attempts int
	next     time.Time
	held     bool // waiting for egress review, not for the hub
}

// New returns a Deliverer.
func New(j *journal.Journal, p Poster, opts Options, logger *slog.Logger) *Deliverer {
	if opts.BackoffMin <= 0 {
		opts.BackoffMin = time.Second
	}
	if opts.BackoffMax < opts.BackoffMin {
		opts.BackoffMax = max(opts.BackoffMin, 60*time.Second)
	}
	if opts.MaxRetryAfter <= 0 {
		opts.MaxRetryAfter = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Jitter == nil {
		opts.Jitter = rand.Float64
	}
	if opts.Concurrency <= 0 {
		opts.Concurrency = 8
	}
	if opts.HeldRecheck <= 0 {
		opts.HeldRecheck = time.Minute
	}
	return &Deliverer{j: j, hub: p, opts: opts, logger: logger, wake: make(chan struct{}, 1),
		retry: map[string]*retryState{}, inflight: map[string]bool{}, resumed: map[string]bool{}, stale: true}
}

// Resume tells the loop that the held body of task id was decided, so its
// entry is attempted now; it never blocks.
func (d *Deliverer) Resume(id string) {
	d.resumeMu.Lock()
	d.resumed[id] = true
	d.resumeMu.Unlock()
	d.Notify()
}

// Notify tells the loop that the journal's outbox changed (an outcome was
// recorded, or put back to be delivered again); it never blocks.
func (d *Deliverer) Notify() {
	d.resumeMu.Lock()
	d.relist = true
	d.resumeMu.Unlock()
	d.kick()
}

// Recorded hands the loop the id of an entry whose outcome was just
// recorded; it never blocks.
func (d *Deliverer) Recorded(id string) {
	d.resumeMu.Lock()
	d.fresh = append(d.fresh, id)
	d.resumeMu.Unlock()
	d.kick()
}

// kick wakes the loop.
func (d *Deliverer) kick() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Run delivers until ctx ends; it returns nil then, once every attempt in
// flight has ended. Journal errors are logged and retried, never fatal.
func (d *Deliverer) Run(ctx context.Context) error {
	done := make(chan attempt)
	slots := make(chan struct{}, d.opts.Concurrency) // held while the hub is called
	var wg sync.WaitGroup
	defer func() {
		go func() { wg.Wait(); close(done) }()
		for range done { // let every attempt end
		}
	}()
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
			d.stale = true // a retry is due, or a hub-wide hold ended
		case <-d.wake:
		case a := <-done:
			d.settle(ctx, a)
		}
		for settled := false; !settled; {
			select {
			case a := <-done:
				d.settle(ctx, a)
			default:
				settled = true
			}
		}
		next := d.round(ctx, &wg, slots, done)
		if ctx.Err() != nil {
			return nil
		}
		timer.Stop()
		select {
		case <-timer.C:
		default:
		}
		if !next.IsZero() {
			timer.Reset(max(time.Until(next), 0))
		}
	}
}

// round starts an attempt for every due entry not in flight, as far as a
// slot is free, and returns when the next retry is due (zero when nothing
// waits on a timer; a freed slot and an ending attempt wake the loop).
func (d *Deliverer) round(ctx context.Context, wg *sync.WaitGroup, slots chan struct{}, done chan<- attempt) time.Time {
	now := d.opts.Now()
	d.resumeMu.Lock()
	for id := range d.resumed {
		if st := d.retry[id]; st != nil && st.held {
			delete(d.retry, id)
		}
	}
	clear(d.resumed)
	fresh := d.fresh
	d.fresh = nil
	if d.relist {
		d.relist, d.stale = false, true
	}
	d.resumeMu.Unlock()
	if now.Before(d.holdUntil) || len(slots) == cap(slots) {
		if len(fresh) > 0 {
			d.stale = true // they wait in the outbox
		}
		if now.Before(d.holdUntil) {
			return d.holdUntil
		}
		return time.Time{}
	}
	ids := fresh
	if d.stale {
		d.stale = false
		var err error
		if ids, err = d.j.Outbox(); err != nil {
			d.stale = true
			d.logger.Error("delivery cannot read the journal", "error", err.Error())
			return now.Add(d.opts.BackoffMin)
		}
		live := make(map[string]bool, len(ids))
		for _, id := range ids {
			live[id] = true
		}
		for id := range d.retry {
			if !live[id] && !d.inflight[id] {
				delete(d.retry, id)
			}
		}
	}
	for _, id := range ids {
		if ctx.Err() != nil || len(slots) == cap(slots) {
			d.stale = true // left behind; the outbox holds them
			break
		}
		if d.inflight[id] {
			continue
		}
		if st := d.retry[id]; st != nil && now.Before(st.next) {
			continue
		}
		d.inflight[id] = true
		slots <- struct{}{}
		var once sync.Once
		free := func() { once.Do(func() { <-slots }) }
		release := func() { free(); d.kick() } // the hub accepted or refused for good
		wg.Go(func() {
			defer free()
			err := d.attempt(ctx, id, release)
			// A failure keeps its slot until the loop has taken it in, so
			// that a hub-wide hold applies before anything else starts.
			free()
			done <- attempt{id: id, err: err}
		})
	}
	var earliest time.Time // the next retry due, whichever entries this round looked at
	for id, st := range d.retry {
		if !d.inflight[id] && (earliest.IsZero() || st.next.Before(earliest)) {
			earliest = st.next
		}
	}
	return earliest
}

// attempt makes one delivery attempt for the entry id, on its own
// goroutine, and calls release once the hub accepted or refused the result
// for good (the entry stays in flight until the journal holds that). nil means nothing
// is left to do for it.
func (d *Deliverer) attempt(ctx context.Context, id string, release func()) error {
	e, err := d.j.Get(id)
	if err != nil {
		return err
	}
	if e.State != journal.Recorded {
		return nil // settled meanwhile
	}
	err = d.deliver(ctx, e, release)
	if err != nil && ctx.Err() == nil && !errors.Is(err, errHeld) {
		if _, jerr := d.j.NoteAttempt(id); jerr != nil {
			d.logger.Error("delivery cannot update the journal", "task_id", id, "error", jerr.Error())
		}
	}
	return err
}

// settle takes the end of an attempt into the retry state; on the Run
// goroutine.
func (d *Deliverer) settle(ctx context.Context, a attempt) {
	delete(d.inflight, a.id)
	st := d.retry[a.id]
	if a.err == nil {
		if st != nil {
			d.logger.Info("Result for task "+a.id+" delivered after retries", "task_id", a.id, "attempts", st.attempts+1)
		}
		delete(d.retry, a.id)
		return
	}
	if ctx.Err() != nil {
		return
	}
	if errors.Is(a.err, errHeld) {
		if st == nil || !st.held {
			d.logger.Info("Result for task "+a.id+" held for egress review", "task_id", a.id)
		}
		d.retry[a.id] = &retryState{held: true, next: d.opts.Now().Add(d.opts.HeldRecheck)}
		return
	}
	if st == nil || st.held {
		st = &retryState{}
		d.retry[a.id] = st
	}
	st.attempts++
	delay, hubWide := d.delay(a.err, st.attempts)
	st.next = d.opts.Now().Add(delay)
	if d.opts.Retries != nil {
		d.opts.Retries.Inc()
	}
	level := slog.LevelDebug
	if st.attempts == 1 {
		level = slog.LevelWarn
	}
	d.logger.Log(ctx, level, "Result for task "+a.id+" not delivered yet; retrying", "task_id", a.id,
		"attempt", st.attempts, "retry_in", delay.String(), "error", a.err.Error())
	if hubWide && st.next.After(d.holdUntil) {
		// The hub is down or throttling: hold every entry back rather
		// than hammer it with the rest of the backlog.
		d.holdUntil = st.next
	}
}

// delay is the wait before the next attempt and whether the failure is
// about the hub as a whole (transport error, 5xx, 429, 401).
func (d *Deliverer) delay(err error, attempts int) (time.Duration, bool) {
	var se *hub.StatusError
	if errors.As(err, &se) && (se.Code == http.StatusTooManyRequests || se.Code == http.StatusServiceUnavailable) {
		if ra, ok := se.RetryAfter(d.opts.Now()); ok {
			return min(max(ra, d.opts.BackoffMin), d.opts.MaxRetryAfter), true
		}
	}
	hubWide := true
	if errors.As(err, &se) && se.Code >= 400 && se.Code < 500 && se.Code != http.StatusTooManyRequests && se.Code != http.StatusUnauthorized {
		hubWide = false
	}
	return d.backoff(attempts), hubWide
}

// backoff is a full-jitter exponential delay in [min, min(max, min*2^(n-1))].
func (d *Deliverer) backoff(attempts int) time.Duration {
	ceiling := d.opts.BackoffMin
	for i := 1; i < attempts && ceiling < d.opts.BackoffMax; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, d.opts.BackoffMax)
	return d.opts.BackoffMin + time.Duration(d.opts.Jitter()*float64(ceiling-d.opts.BackoffMin))
}

// resultTerminal lists the hub answers to a result post that end delivery:
// 404 unknown task, 403 another trust's task, 409 the hub already holds a
// result (or the task is no longer in progress).
func resultTerminal(code int) bool {
	return code == http.StatusNotFound || code == http.StatusForbidden || code == http.StatusConflict
}

// cohortTerminal lists the hub answers to a cohort-results post that no
// retry can change.
func cohortTerminal(code int) bool {
	switch code {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusConflict,
		http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return true
	}
	return false
}

// deliver makes one attempt for e and calls release once the hub accepted
// or refused the result for good. nil means nothing is left to do for it.
func (d *Deliverer) deliver(ctx context.Context, e journal.Entry, release func()) error {
	if e.Outcome == nil {
		return fmt.Errorf("journal entry %s has no outcome", e.ID)
	}
	if len(e.Outcome.CohortResults) > 0 && !e.Outcome.CohortDone {
		it, err := d.clear(e, egress.CohortResults, ledger.KindCohortResults, e.Outcome.CohortResults)
		switch {
		case err != nil:
			return err
		case it.Final():
			if e, err = d.stopped(e, it); err != nil {
				return err
			}
			return d.deliver(ctx, e, release)
		case !it.Leaves():
			return errHeld
		}
		err = d.hub.PostCohortResults(ctx, e.Outcome.CohortResults)
		var se *hub.StatusError
		switch {
		case err == nil:
			if e, err = d.j.MarkCohortDone(e.ID); err != nil {
				return err
			}
		case errors.As(err, &se) && cohortTerminal(se.Code):
			if e, err = d.cohortRefused(e, se); err != nil {
				return err
			}
			if len(e.Outcome.CohortResults) > 0 && !e.Outcome.CohortDone {
				return d.deliver(ctx, e, release) // post the error envelope that replaced the statistics
			}
		default:
			return err
		}
	}
	body, err := json.Marshal(hubapi.TaskResult{Success: e.Outcome.Success, Result: e.Outcome.Result})
	if err != nil {
		return fmt.Errorf("encode result: %w", err)
	}
	it, err := d.clear(e, resultChannel(e.TaskType), e.TaskType, body)
	switch {
	case err != nil:
		return err
	case it.Final():
		if e, err = d.stopped(e, it); err != nil {
			return err
		}
		return d.deliver(ctx, e, release)
	case !it.Leaves():
		return errHeld
	}
	err = d.hub.PostResultBody(ctx, e.ID, body)
	var se *hub.StatusError
	switch {
	case err == nil:
		release()
		if _, err := d.j.MarkDelivered(e.ID); err != nil {
			return err
		}
		d.logger.Info("Result for task "+e.ID+" delivered", "task_id", e.ID, "task_type", e.TaskType, "success", e.Outcome.Success)
		return nil
	case errors.As(err, &se) && resultTerminal(se.Code):
		release()
		if _, err := d.j.MarkRejected(e.ID, se.Code); err != nil {
			return err
		}
		d.logger.Warn(fmt.Sprintf("Hub refused the result for task %s (HTTP %d); not retrying", e.ID, se.Code),
			"task_id", e.ID, "status", se.Code)
		return nil
	}
	return err
}

// cohortRefused handles a cohort-results body the hub refused for good. A
// statistics body is replaced by FLIP's error envelope and the task is
// reported as failed; a refused error envelope is given up on.
func (d *Deliverer) cohortRefused(e journal.Entry, se *hub.StatusError) (journal.Entry, error) {
	msg := fmt.Sprintf("%d: %s", se.Code, se.Body)
	d.logger.Warn(fmt.Sprintf("Hub refused the cohort results for task %s (HTTP %d)", e.ID, se.Code), "task_id", e.ID, "status", se.Code)
	var body struct {
		QueryID string  `json:"query_id"`
		TrustID string  `json:"trust_id"`
		Created string  `json:"created"`
		Error   *string `json:"error"`
	}
	_ = json.Unmarshal(e.Outcome.CohortResults, &body)
	failed := hubapi.TaskErrorResult(msg, nil)
	out := *e.Outcome
	if body.Error == nil && body.QueryID != "" && body.TrustID != "" {
		created := body.Created
		if created == "" {
			created = d.opts.Now().UTC().Format("2006-01-02")
		}
		envelope, _ := json.Marshal(hubapi.CohortResults{
			QueryID: body.QueryID, TrustID: body.TrustID, Created: created,
			Data: []hubapi.CohortStat{}, Error: &msg,
		})
		return d.j.ReplaceOutcome(e.ID, journal.Outcome{Result: &failed, CohortResults: envelope})
	}
	if out.Success {
		out.Success = false
		out.Result = &failed
	}
	out.CohortDone = true
	return d.j.ReplaceOutcome(e.ID, out)
}

// resultChannel is the egress channel of a task type's result post.
func resultChannel(taskType string) egress.Channel {
	if taskType == string(hubapi.GetImagingStatus) {
		return egress.ImagingStatus
	}
	return egress.TaskResult
}

// clear submits body to the gate; without a gate everything leaves.
func (d *Deliverer) clear(e journal.Entry, ch egress.Channel, kind string, body []byte) (egress.Item, error) {
	if d.opts.Gate == nil {
		return egress.Item{State: egress.Released}, nil
	}
	it, err := d.opts.Gate.Submit(egress.Request{
		Channel: ch, TaskID: e.ID, Project: e.Outcome.Project, Kind: kind, Content: body,
		Notice: e.Outcome.EgressNotice,
	})
	if err != nil {
		return egress.Item{}, fmt.Errorf("egress gate: %w", err)
	}
	return it, nil
}

// stopped replaces the outcome of an entry whose body will not leave with
// a failure notice carrying the gate's reason; a pending cohort-results body
// becomes FLIP's cohort error envelope with the same reason.
func (d *Deliverer) stopped(e journal.Entry, it egress.Item) (journal.Entry, error) {
	reason := it.Reason
	if it.State == egress.Rejected {
		reason = "rejected by egress review: " + it.Reason
	}
	d.logger.Warn(fmt.Sprintf("Egress of task %s stopped: %s", e.ID, it.State), "task_id", e.ID,
		"channel", string(it.Channel), "egress_item", it.ID, "egress_state", string(it.State))
	failed := hubapi.TaskErrorResult(reason, nil)
	out := journal.Outcome{Result: &failed, Project: e.Outcome.Project, EgressNotice: true, CohortDone: e.Outcome.CohortDone}
	if len(e.Outcome.CohortResults) > 0 && !e.Outcome.CohortDone {
		var body struct {
			QueryID string `json:"query_id"`
			TrustID string `json:"trust_id"`
			Created string `json:"created"`
		}
		_ = json.Unmarshal(e.Outcome.CohortResults, &body)
		if body.QueryID != "" && body.TrustID != "" {
			created := body.Created
			if created == "" {
				created = d.opts.Now().UTC().Format("2006-01-02")
			}
			out.CohortResults, _ = json.Marshal(hubapi.CohortResults{
				QueryID: body.QueryID, TrustID: body.TrustID, Created: created,
				Data: []hubapi.CohortStat{}, Error: &reason,
			})
		} else {
			out.CohortDone = true
		}
	}
	return d.j.ReplaceOutcome(e.ID, out)
}
