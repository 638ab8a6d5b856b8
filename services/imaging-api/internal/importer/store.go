package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"
)

// State is where an accession of a project stands.
type State string

// Accession states. An accession the project never saw has no state.
const (
	// StateQueued: waiting for its move (maybe until NotBefore, after a
	// failed attempt); the PACS lookup and staging check that precede the
	// move may be under way.
	StateQueued State = "queued"
	// StateMoving: the chosen study (recorded) is being moved into staging.
	StateMoving State = "moving"
	// StateImported: the study is complete in staging (terminal).
	StateImported State = "imported"
	// StateFailed: attempts exhausted or a permanent error (terminal until
	// Reimport).
	StateFailed State = "failed"
	// StateQueueFailed: never entered the retrieval — invalid accession, no
	// exact PACS match, ambiguous match, or the lookup kept failing
	// (terminal until Reimport).
	StateQueueFailed State = "queue_failed"
)

// Terminal reports whether no worker will touch an accession in s again
// without a Reimport.
func (s State) Terminal() bool {
	return s == StateImported || s == StateFailed || s == StateQueueFailed
}

// Reason says why an accession is queue_failed, or what its last failed
// attempt failed on. It never carries backend error text.
type Reason string

// Reasons.
const (
	ReasonInvalid   Reason = "invalid_accession" // not an RFC 3986 unreserved segment
	ReasonNotFound  Reason = "not_found"         // no study with exactly this accession
	ReasonAmbiguous Reason = "ambiguous"         // several studies with exactly this accession
	ReasonFind      Reason = "find_error"        // the PACS lookup failed
	ReasonPresent   Reason = "present_error"     // the staging check failed
	ReasonMove      Reason = "move_error"        // the retrieval failed
	ReasonStalled   Reason = "stalled"           // no progress within StallTimeout
)

// Record is the stored state of one accession of one project.
type Record struct {
	Project string `json:"project"`
	// Accession is the accession number; for an invalid one, "!" and the hex
	// sha256 of the input (the input itself is not stored).
	Accession string `json:"accession"`
	State     State  `json:"state"`
	// Attempts counts failed attempts since the accession was last queued
	// by Enqueue or Reimport.
	Attempts int `json:"attempts,omitempty"`
	// Reason is why the accession is queue_failed, or the category of its
	// last failed attempt.
	Reason Reason `json:"reason,omitempty"`
	// StudyUID and Instances describe the study chosen by the lookup.
	StudyUID  string `json:"study_uid,omitempty"`
	Instances int    `json:"instances,omitempty"`
	// Seq orders the queue (first queued, first served) and identifies this
	// queueing: Reimport gives a fresh one.
	Seq        uint64    `json:"seq"`
	EnqueuedAt time.Time `json:"enqueued_at"`
	UpdatedAt  time.Time `json:"updated_at"`
	// NotBefore delays the next attempt after a failed one.
	NotBefore time.Time `json:"not_before,omitzero"`
}

// Counts are FLIP's five import counts, with the field names of the
// import_status object of ProjectRetrieval (GET
// /retrieval/import_status_count) that the hub reads.
type Counts struct {
	Successful  int `json:"successful_count"`
	Failed      int `json:"failed_count"`
	Processing  int `json:"processing_count"`
	Queued      int `json:"queued_count"`
	QueueFailed int `json:"queue_failed_count"`
}

// Breakdown lists a cohort's accessions by FLIP status class, each
// accession once, in cohort order.
type Breakdown struct {
	Successful  []string `json:"successful"`
	Failed      []string `json:"failed"`
	Processing  []string `json:"processing"`
	Queued      []string `json:"queued"`
	QueueFailed []string `json:"queue_failed"`
}

// Counts returns the sizes of the five lists.
func (b Breakdown) Counts() Counts {
	return Counts{
		Successful:  len(b.Successful),
		Failed:      len(b.Failed),
		Processing:  len(b.Processing),
		Queued:      len(b.Queued),
		QueueFailed: len(b.QueueFailed),
	}
}

// Buckets: records holds every Record under project, NUL, accession key;
// removals holds the staged studies of deleted projects still to be removed,
// under project, NUL, study UID.
var (
	bucketRecords  = []byte("records")
	bucketRemovals = []byte("removals")
)

func projectPrefix(project string) []byte {
	return append([]byte(project), 0)
}

func recordKey(project, accession string) []byte {
	return append(projectPrefix(project), accessionKey(accession)...)
}

func putJSON(b *bolt.Bucket, k []byte, v any) error {
	enc, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return b.Put(k, enc)
}

func getRecord(b *bolt.Bucket, k []byte) (Record, bool, error) {
	raw := b.Get(k)
	if raw == nil {
		return Record{}, false, nil
	}
	var r Record
	if err := json.Unmarshal(raw, &r); err != nil {
		return Record{}, false, fmt.Errorf("decode record: %w", err)
	}
	return r, true, nil
}

// forProject calls fn for every record of project, in key order.
func forProject(b *bolt.Bucket, project string, fn func(k []byte, r Record) error) error {
	p := projectPrefix(project)
	c := b.Cursor()
	for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		var r Record
		if err := json.Unmarshal(v, &r); err != nil {
			return fmt.Errorf("decode record: %w", err)
		}
		if err := fn(k, r); err != nil {
			return err
		}
	}
	return nil
}

// Enqueue records a project's cohort accessions: duplicates are dropped
// (first occurrence kept), accessions the project already has keep their
// state, new valid ones are queued in the order given, and invalid ones are
// recorded as queue_failed with ReasonInvalid. The whole batch is committed
// at once. Queued work starts as soon as the Importer is started.
func (im *Importer) Enqueue(project string, accessions []string) error {
	if err := checkProject(project); err != nil {
		return fmt.Errorf("enqueue: %w", err)
	}
	im.admin.Lock()
	defer im.admin.Unlock()
	if im.isClosed() {
		return fmt.Errorf("enqueue: %w", ErrClosed)
	}
	now := im.opts.Now().UTC()
	var added []*item
	invalid := 0
	err := im.writes.Do(func(tx *bolt.Tx) error {
		added, invalid = added[:0], 0
		if hasPrefix(tx.Bucket(bucketRemovals), projectPrefix(project)) {
			return ErrRemovalPending
		}
		b := tx.Bucket(bucketRecords)
		seen := map[string]bool{}
		for _, acc := range accessions {
			key := accessionKey(acc)
			if seen[key] {
				continue
			}
			seen[key] = true
			k := recordKey(project, acc)
			if b.Get(k) != nil {
				continue
			}
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			r := Record{Project: project, Accession: key, State: StateQueued, Seq: seq, EnqueuedAt: now, UpdatedAt: now}
			if key != acc {
				r.State, r.Reason = StateQueueFailed, ReasonInvalid
				invalid++
			}
			if err := putJSON(b, k, r); err != nil {
				return err
			}
			if r.State == StateQueued {
				added = append(added, &item{key: string(k), project: project, seq: seq})
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("enqueue %d accessions for project %s: %w", len(accessions), project, err)
	}
	im.log.Info("import accessions enqueued", "project", project, "given", len(accessions),
		"queued", len(added), "invalid", invalid)
	im.schedule(added)
	return nil
}

func hasPrefix(b *bolt.Bucket, p []byte) bool {
	k, _ := b.Cursor().Seek(p)
	return k != nil && bytes.HasPrefix(k, p)
}

// schedule hands newly queued items to a running Importer (before Start,
// Start picks them up from the file).
func (im *Importer) schedule(items []*item) {
	if len(items) == 0 {
		return
	}
	im.mu.Lock()
	defer im.mu.Unlock()
	if !im.started || im.closed {
		return
	}
	for _, it := range items {
		if !im.deleting[it.project] {
			im.sched.push(it)
		}
	}
	im.signal()
}

// Reimport queues the project's failed and queue_failed accessions again
// with a fresh attempt budget and a fresh PACS lookup, behind the work
// already queued, and returns how many it queued. This follows FLIP, whose
// reimport retries failed and queue_failed accessions. Invalid accessions
// stay queue_failed. Accessions of the cohort the project never saw are not
// known here: Enqueue the cohort first so that they are queued too.
func (im *Importer) Reimport(project string) (int, error) {
	if err := checkProject(project); err != nil {
		return 0, fmt.Errorf("reimport: %w", err)
	}
	im.admin.Lock()
	defer im.admin.Unlock()
	if im.isClosed() {
		return 0, fmt.Errorf("reimport: %w", ErrClosed)
	}
	now := im.opts.Now().UTC()
	var added []*item
	err := im.writes.Do(func(tx *bolt.Tx) error {
		added = added[:0]
		b := tx.Bucket(bucketRecords)
		type requeue struct {
			k []byte
			r Record
		}
		var todo []requeue
		err := forProject(b, project, func(k []byte, r Record) error {
			if (r.State == StateFailed || r.State == StateQueueFailed) && r.Reason != ReasonInvalid {
				todo = append(todo, requeue{slices.Clone(k), r})
			}
			return nil
		})
		if err != nil {
			return err
		}
		// Keep the accessions' relative order.
		slices.SortFunc(todo, func(a, b requeue) int { return cmpUint(a.r.Seq, b.r.Seq) })
		for _, t := range todo {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			r := t.r
			r.State, r.Attempts, r.Reason = StateQueued, 0, ""
			r.StudyUID, r.Instances = "", 0
			r.Seq, r.UpdatedAt, r.NotBefore = seq, now, time.Time{}
			if err := putJSON(b, t.k, r); err != nil {
				return err
			}
			added = append(added, &item{key: string(t.k), project: project, seq: seq})
		}
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("reimport project %s: %w", project, err)
	}
	im.log.Info("import reimport queued", "project", project, "requeued", len(added))
	im.schedule(added)
	return len(added), nil
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Status returns FLIP's five counts over a cohort: each distinct accession
// counts once, by its state in the project (imported → successful, failed →
// failed, moving → processing, queued → queued, queue_failed → queue_failed);
// an accession the project never saw is queue_failed.
//
// FLIP classifies with the precedence successful > failed > processing >
// queued > queue_failed because it merges several sources; here an accession
// has exactly one state per project, so the classes never overlap.
func (im *Importer) Status(project string, accessions []string) (Counts, error) {
	b, err := im.Breakdown(project, accessions)
	if err != nil {
		return Counts{}, err
	}
	return b.Counts(), nil
}

// Breakdown is Status with the accessions themselves, by class.
func (im *Importer) Breakdown(project string, accessions []string) (Breakdown, error) {
	if err := checkProject(project); err != nil {
		return Breakdown{}, fmt.Errorf("import status: %w", err)
	}
	var out Breakdown
	err := im.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketRecords)
		seen := map[string]bool{}
		for _, acc := range accessions {
			if seen[acc] {
				continue
			}
			seen[acc] = true
			r, ok, err := getRecord(b, recordKey(project, acc))
			if err != nil {
				return err
			}
			if !ok {
				out.QueueFailed = append(out.QueueFailed, acc)
				continue
			}
			switch r.State {
			case StateImported:
				out.Successful = append(out.Successful, acc)
			case StateFailed:
				out.Failed = append(out.Failed, acc)
			case StateMoving:
				out.Processing = append(out.Processing, acc)
			case StateQueued:
				out.Queued = append(out.Queued, acc)
			default:
				out.QueueFailed = append(out.QueueFailed, acc)
			}
		}
		return nil
	})
	if err != nil {
		return Breakdown{}, fmt.Errorf("import status of project %s: %w", project, err)
	}
	return out, nil
}

// Progress returns how many of the project's recorded accessions are
// finished (imported, failed or queue_failed) and how many it has. It
// returns 0, 0 when the state cannot be read.
func (im *Importer) Progress(project string) (done, total int) {
	if checkProject(project) != nil {
		return 0, 0
	}
	done, total, err := im.progress(project)
	if err != nil {
		im.log.Warn("import progress unreadable", "project", project, "err", err)
		return 0, 0
	}
	return done, total
}

func (im *Importer) progress(project string) (done, total int, err error) {
	err = im.db.View(func(tx *bolt.Tx) error {
		return forProject(tx.Bucket(bucketRecords), project, func(_ []byte, r Record) error {
			total++
			if r.State.Terminal() {
				done++
			}
			return nil
		})
	})
	return done, total, err
}

// Wait returns once every recorded accession of project is finished
// (imported, failed or queue_failed), with Progress's counts, or with
// ctx's error, or ErrClosed once the Importer is closed. It wakes as
// attempts end rather than polling, so an in-process caller (a tool, a
// test) learns of the end at once and at almost no cost.
func (im *Importer) Wait(ctx context.Context, project string) (done, total int, err error) {
	if err := checkProject(project); err != nil {
		return 0, 0, fmt.Errorf("import wait: %w", err)
	}
	for {
		// Taken before the records are read: an attempt that ends after
		// the read closes it.
		im.mu.Lock()
		settled, closed := im.settled, im.closed
		im.mu.Unlock()
		if closed {
			return 0, 0, fmt.Errorf("import wait: %w", ErrClosed)
		}
		if done, total, err = im.progress(project); err != nil {
			if im.isClosed() {
				err = ErrClosed // closed between the check and the read
			}
			return 0, 0, fmt.Errorf("import wait on project %s: %w", project, err)
		}
		if done == total {
			return done, total, nil
		}
		select {
		case <-settled:
		case <-ctx.Done():
			return done, total, ctx.Err()
		}
	}
}

// Records returns the project's records in queue order.
func (im *Importer) Records(project string) ([]Record, error) {
	if err := checkProject(project); err != nil {
		return nil, fmt.Errorf("import records: %w", err)
	}
	var out []Record
	err := im.db.View(func(tx *bolt.Tx) error {
		return forProject(tx.Bucket(bucketRecords), project, func(_ []byte, r Record) error {
			out = append(out, r)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("import records of project %s: %w", project, err)
	}
	slices.SortFunc(out, func(a, b Record) int { return cmpUint(a.Seq, b.Seq) })
	return out, nil
}

// Lookup returns the record of one accession of a project, and whether
// there is one.
func (im *Importer) Lookup(project, accession string) (Record, bool, error) {
	if err := checkProject(project); err != nil {
		return Record{}, false, fmt.Errorf("import lookup: %w", err)
	}
	var (
		r  Record
		ok bool
	)
	err := im.db.View(func(tx *bolt.Tx) error {
		var err error
		r, ok, err = getRecord(tx.Bucket(bucketRecords), recordKey(project, accession))
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("import lookup in project %s: %w", project, err)
	}
	return r, ok, nil
}

// change applies fn to the record at k if it still belongs to the queueing
// seq and is in state from, committing before it returns; it reports
// whether the record was changed (false: it was deleted or requeued
// meanwhile). fn must only set fields from values computed beforehand.
func (im *Importer) change(k []byte, seq uint64, from State, fn func(*Record)) (Record, bool, error) {
	var (
		out Record
		ok  bool
	)
	err := im.writes.Do(func(tx *bolt.Tx) error {
		var err error
		out, ok, err = changeIn(tx.Bucket(bucketRecords), k, seq, from, fn)
		return err
	})
	if err != nil {
		return Record{}, false, fmt.Errorf("update import record: %w", err)
	}
	return out, ok, nil
}

// changeIn is change within a write transaction on the records bucket b.
func changeIn(b *bolt.Bucket, k []byte, seq uint64, from State, fn func(*Record)) (Record, bool, error) {
	r, found, err := getRecord(b, k)
	if err != nil || !found || r.Seq != seq || r.State != from {
		return Record{}, false, err
	}
	fn(&r)
	if err := putJSON(b, k, r); err != nil {
		return Record{}, false, err
	}
	return r, true, nil
}

// recover puts records left moving back to queued and returns the work to
// schedule and how many records were interrupted.
func (im *Importer) recover() ([]*item, int, error) {
	now := im.opts.Now().UTC()
	var (
		items   []*item
		resumed int
	)
	err := im.writes.Do(func(tx *bolt.Tx) error {
		items, resumed = items[:0], 0
		b := tx.Bucket(bucketRecords)
		type fix struct {
			k []byte
			r Record
		}
		var fixes []fix
		err := b.ForEach(func(k, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode record: %w", err)
			}
			switch r.State {
			case StateMoving:
				r.State, r.UpdatedAt = StateQueued, now
				fixes = append(fixes, fix{slices.Clone(k), r})
			case StateQueued:
			default:
				return nil
			}
			items = append(items, &item{key: string(k), project: r.Project, seq: r.Seq, notBefore: r.NotBefore})
			return nil
		})
		if err != nil {
			return err
		}
		for _, f := range fixes {
			if err := putJSON(b, f.k, f.r); err != nil {
				return err
			}
		}
		resumed = len(fixes)
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("recover import queue: %w", err)
	}
	return items, resumed, nil
}

// errDeleted cancels the attempts of a project being deleted.
var errDeleted = errors.New("project deleted")

// HeldElsewhere reports whether a project other than except has studyUID
// imported, or on its way (queued or moving), in one read of the journal.
func (im *Importer) HeldElsewhere(studyUID, except string) (bool, error) {
	held := false
	err := im.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketRecords).ForEach(func(_, v []byte) error {
			var r Record
			if err := json.Unmarshal(v, &r); err != nil {
				return fmt.Errorf("decode record: %w", err)
			}
			if r.StudyUID == studyUID && r.Project != except && r.State != StateFailed && r.State != StateQueueFailed {
				held = true
				return errStopScan
			}
			return nil
		})
	})
	if errors.Is(err, errStopScan) {
		err = nil
	}
	return held, err
}

var errStopScan = errors.New("stop scan")
