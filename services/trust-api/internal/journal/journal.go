// Package journal is trust-api's durable task journal: a bbolt file that
// records every task the hub hands out and every step of its life, so that a
// task is executed at most once and its outcome is delivered to the hub even
// across hub outages and trust-api restarts.
//
// A task moves through these states, each transition committed (and fsynced)
// before the step it guards is taken:
//
//	claimed   -> running   -> recorded -> delivered
//	   \___________________/      \----> rejected
//
// claimed is written before the handler runs and keeps only the still-sealed
// payload envelope; plaintext never reaches the disk. A task whose handler
// starts at once (an idle worker is waiting for it) is claimed straight into
// running, in the same transaction. recorded stores the
// outcome (and any cohort-results body still to post) before delivery starts.
// delivered and rejected are terminal; rejected keeps the hub's HTTP status.
//
// Entries in state recorded are also listed in an outbox index, kept in the
// same transactions as the state changes, so delivery finds its backlog
// without reading finished entries.
//
// A Journal is safe for concurrent use. Writes made at the same time by
// different goroutines share one transaction and one commit (group commit);
// each call still returns only once its own change is durable. Every method
// returns an error wrapping ErrNotFound or ErrTransition for the domain
// conditions, and the storage error otherwise.
package journal

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/boltgroup"
)

// State is where a task stands in the journal.
type State string

// Journal states.
const (
	Claimed   State = "claimed"
	Running   State = "running"
	Recorded  State = "recorded"
	Delivered State = "delivered"
	Rejected  State = "rejected"
)

// States lists every state, in lifecycle order.
var States = []State{Claimed, Running, Recorded, Delivered, Rejected}

// Terminal reports whether nothing more is to be done for a task in s.
func (s State) Terminal() bool { return s == Delivered || s == Rejected }

// ErrNotFound is returned for a task id the journal does not hold.
var ErrNotFound = errors.New("task not in journal")

// ErrTransition is returned when a task is asked to move to a state it
// cannot reach from its current one.
var ErrTransition = errors.New("invalid journal transition")

// Outcome is what a task produced, as it will be reported to the hub.
type Outcome struct {
	// Success is the "success" field of the result post.
	Success bool `json:"success"`
	// Result is the exact "result" field of the result post (for a failure,
	// the JSON error text), nil for JSON null.
	Result *string `json:"result"`
	// StatusCode is the upstream HTTP status a failure carried, if any.
	StatusCode *int `json:"status_code,omitempty"`
	// CohortResults is a body for POST /cohort/results that must be accepted
	// by the hub before the result itself is posted; nil when there is none.
	CohortResults json.RawMessage `json:"cohort_results,omitempty"`
	// CohortDone is set once CohortResults was accepted (or given up on).
	CohortDone bool `json:"cohort_done,omitempty"`
	// Project is the task's project id where the payload names one, for
	// the audit ledger.
	Project string `json:"project,omitempty"`
	// EgressNotice marks an outcome the egress gate put in place of one it
	// did not let leave (rejected, expired or refused): it reports the
	// failure to the hub and is itself released without review.
	EgressNotice bool `json:"egress_notice,omitempty"`
}

// Entry is one task's journal record.
type Entry struct {
	ID       string `json:"id"`
	TaskType string `json:"task_type"`
	// Payload is the sealed envelope exactly as the hub sent it.
	Payload string `json:"payload"`
	State   State  `json:"state"`
	// Outcome is set from recorded on.
	Outcome *Outcome `json:"outcome,omitempty"`
	// RejectCode is the hub's HTTP status for a rejected task.
	RejectCode int `json:"reject_code,omitempty"`
	// Attempts counts result-delivery attempts that failed.
	Attempts int `json:"attempts,omitempty"`
	// Redeliveries counts how often the hub handed the task out again.
	Redeliveries int       `json:"redeliveries,omitempty"`
	ClaimedAt    time.Time `json:"claimed_at"`
	UpdatedAt    time.Time `json:"updated_at"`
}

// Buckets: tasks holds every entry by id; outbox indexes the entries in
// state recorded by claim time, then id, with empty values.
var (
	bucketTasks  = []byte("tasks")
	bucketOutbox = []byte("outbox")
)

// Options tune a Journal; the zero value is usable.
type Options struct {
	// LockTimeout bounds the wait for the file lock held by another process
	// (default 5 s), so a second trust-api on the same volume fails fast.
	LockTimeout time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Journal is the bbolt-backed task journal.
type Journal struct {
	db     *bolt.DB
	writes *boltgroup.Committer
	now    func() time.Time
}

// Open opens (creating if needed) the journal file at path.
func Open(path string, opts Options) (*Journal, error) {
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open journal %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketTasks, bucketOutbox} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init journal %s: %w", path, err)
	}
	return &Journal{db: db, writes: boltgroup.New(db), now: opts.Now}, nil
}

// Close closes the file. Further calls fail.
func (j *Journal) Close() error {
	if err := j.db.Close(); err != nil {
		return fmt.Errorf("close journal: %w", err)
	}
	return nil
}

// Claim records a task the hub handed out. If the id is new it is stored as
// claimed and created is true. If the id is already known, the existing entry
// is returned unchanged with created false; the caller decides what a repeat
// hand-out means (see Redeliver).
func (j *Journal) Claim(id, taskType, payload string) (Entry, bool, error) {
	res, err := j.ClaimAll([]Task{{ID: id, TaskType: taskType, Payload: payload}})
	if err != nil {
		return Entry{}, false, err
	}
	return res[0].Entry, res[0].Created, nil
}

// Task is a task as the hub handed it out, to be claimed.
type Task struct {
	ID       string
	TaskType string
	Payload  string
	// Start claims a new task straight into running: the caller hands it
	// to its handler as soon as the claim returns. A known id ignores it.
	Start bool
}

// ClaimResult is the answer to claiming one task: the entry, and whether the
// claim created it (false: the id was already known and is unchanged).
type ClaimResult struct {
	Entry   Entry
	Created bool
}

// ClaimAll claims a whole poll batch in one transaction, as Claim does for
// each task, and answers in the order given. Either every task is journaled
// or, on error, none is.
func (j *Journal) ClaimAll(batch []Task) ([]ClaimResult, error) {
	out := make([]ClaimResult, len(batch))
	err := j.writes.Do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		now := j.now().UTC()
		for i, t := range batch {
			if raw := b.Get([]byte(t.ID)); raw != nil {
				var e Entry
				if err := json.Unmarshal(raw, &e); err != nil {
					return err
				}
				out[i] = ClaimResult{Entry: e}
				continue
			}
			e := Entry{ID: t.ID, TaskType: t.TaskType, Payload: t.Payload, State: Claimed, ClaimedAt: now, UpdatedAt: now}
			if t.Start {
				e.State = Running
			}
			if err := put(b, e); err != nil {
				return err
			}
			out[i] = ClaimResult{Entry: e, Created: true}
		}
		return nil
	})
	if err != nil {
		if len(batch) == 1 {
			return nil, fmt.Errorf("claim task %s: %w", batch[0].ID, err)
		}
		return nil, fmt.Errorf("claim %d tasks: %w", len(batch), err)
	}
	return out, nil
}

// Get returns the entry for id.
func (j *Journal) Get(id string) (Entry, error) {
	var out Entry
	err := j.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketTasks).Get([]byte(id))
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, &out)
	})
	if err != nil {
		return Entry{}, fmt.Errorf("get task %s: %w", id, err)
	}
	return out, nil
}

// MarkRunning moves a claimed task to running, just before its handler starts.
func (j *Journal) MarkRunning(id string) (Entry, error) {
	return j.update(id, "mark running", func(e *Entry) error {
		if e.State != Claimed {
			return transition(e.State, Running)
		}
		e.State = Running
		return nil
	})
}

// Requeue moves a running task back to claimed so that it runs again. Only
// recovery uses it, for read-only task types interrupted by a restart.
func (j *Journal) Requeue(id string) (Entry, error) {
	return j.update(id, "requeue", func(e *Entry) error {
		if e.State != Running {
			return transition(e.State, Claimed)
		}
		e.State = Claimed
		return nil
	})
}

// Record stores a task's outcome; the task must be claimed or running.
func (j *Journal) Record(id string, o Outcome) (Entry, error) {
	return j.update(id, "record outcome", func(e *Entry) error {
		if e.State != Claimed && e.State != Running {
			return transition(e.State, Recorded)
		}
		e.State = Recorded
		e.Outcome = &o
		return nil
	})
}

// ReplaceOutcome swaps the outcome of a recorded, not yet delivered task.
// Delivery uses it when the hub refuses a cohort-results body for good and
// the task must be reported as failed instead.
func (j *Journal) ReplaceOutcome(id string, o Outcome) (Entry, error) {
	return j.update(id, "replace outcome", func(e *Entry) error {
		if e.State != Recorded {
			return transition(e.State, Recorded)
		}
		e.Outcome = &o
		return nil
	})
}

// MarkCohortDone notes that the cohort-results body was accepted by the hub
// (or given up on), so a retry posts only the result.
func (j *Journal) MarkCohortDone(id string) (Entry, error) {
	return j.update(id, "mark cohort results done", func(e *Entry) error {
		if e.State != Recorded || e.Outcome == nil {
			return transition(e.State, Recorded)
		}
		e.Outcome.CohortDone = true
		return nil
	})
}

// NoteAttempt counts one failed delivery attempt.
func (j *Journal) NoteAttempt(id string) (Entry, error) {
	return j.update(id, "note delivery attempt", func(e *Entry) error {
		e.Attempts++
		return nil
	})
}

// MarkDelivered records that the hub accepted the result.
func (j *Journal) MarkDelivered(id string) (Entry, error) {
	return j.update(id, "mark delivered", func(e *Entry) error {
		if e.State != Recorded {
			return transition(e.State, Delivered)
		}
		e.State = Delivered
		return nil
	})
}

// MarkRejected records a terminal refusal of the result by the hub.
func (j *Journal) MarkRejected(id string, code int) (Entry, error) {
	return j.update(id, "mark rejected", func(e *Entry) error {
		if e.State != Recorded {
			return transition(e.State, Rejected)
		}
		e.State = Rejected
		e.RejectCode = code
		return nil
	})
}

// Redeliver handles a task the hub handed out again although its result was
// already delivered or rejected: the recorded outcome goes back to recorded
// so that it is posted once more. The cohort-results body, already accepted,
// is not posted again. It is an ErrTransition for a task without an outcome.
func (j *Journal) Redeliver(id string) (Entry, error) {
	return j.update(id, "redeliver", func(e *Entry) error {
		if !e.State.Terminal() || e.Outcome == nil {
			return transition(e.State, Recorded)
		}
		e.State = Recorded
		e.RejectCode = 0
		e.Redeliveries++
		return nil
	})
}

// List returns the entries in any of the given states (all entries when none
// is given), oldest claim first.
func (j *Journal) List(states ...State) ([]Entry, error) {
	var out []Entry
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).ForEach(func(_, raw []byte) error {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			if len(states) == 0 || slices.Contains(states, e.State) {
				out = append(out, e)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list journal: %w", err)
	}
	slices.SortStableFunc(out, func(a, b Entry) int { return a.ClaimedAt.Compare(b.ClaimedAt) })
	return out, nil
}

// Outbox returns the ids of the entries in state recorded, oldest claim
// first. It reads only the outbox index, so its cost follows the delivery
// backlog, not the size of the journal.
func (j *Journal) Outbox() ([]string, error) {
	var out []string
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketOutbox).ForEach(func(k, _ []byte) error {
			if len(k) <= 8 {
				return fmt.Errorf("malformed outbox key %x", k)
			}
			out = append(out, string(k[8:]))
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list outbox: %w", err)
	}
	return out, nil
}

// Counts returns how many entries are in each state.
func (j *Journal) Counts() (map[State]int, error) {
	out := make(map[State]int, len(States))
	for _, s := range States {
		out[s] = 0
	}
	err := j.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTasks).ForEach(func(_, raw []byte) error {
			var e struct {
				State State `json:"state"`
			}
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			out[e.State]++
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("count journal: %w", err)
	}
	return out, nil
}

// Prune deletes delivered and rejected entries last updated before cutoff and
// returns how many it removed. Unfinished entries are never pruned.
func (j *Journal) Prune(cutoff time.Time) (int, error) {
	n := 0
	err := j.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		var doomed [][]byte
		err := b.ForEach(func(k, raw []byte) error {
			var e Entry
			if err := json.Unmarshal(raw, &e); err != nil {
				return err
			}
			if e.State.Terminal() && e.UpdatedAt.Before(cutoff) {
				doomed = append(doomed, slices.Clone(k))
			}
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range doomed {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		n = len(doomed)
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("prune journal: %w", err)
	}
	return n, nil
}

func (j *Journal) update(id, what string, fn func(*Entry) error) (Entry, error) {
	var out Entry
	err := j.writes.Do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTasks)
		raw := b.Get([]byte(id))
		if raw == nil {
			return ErrNotFound
		}
		out = Entry{}
		if err := json.Unmarshal(raw, &out); err != nil {
			return err
		}
		prev := out.State
		if err := fn(&out); err != nil {
			return err
		}
		out.UpdatedAt = j.now().UTC()
		if err := put(b, out); err != nil {
			return err
		}
		switch {
		case prev != Recorded && out.State == Recorded:
			return tx.Bucket(bucketOutbox).Put(outboxKey(out), nil)
		case prev == Recorded && out.State != Recorded:
			return tx.Bucket(bucketOutbox).Delete(outboxKey(out))
		}
		return nil
	})
	if err != nil {
		return Entry{}, fmt.Errorf("%s %s: %w", what, id, err)
	}
	return out, nil
}

// outboxKey orders the outbox by claim time, then id.
func outboxKey(e Entry) []byte {
	k := make([]byte, 8, 8+len(e.ID))
	n := e.ClaimedAt.UnixNano()
	if n < 0 {
		n = 0
	}
	binary.BigEndian.PutUint64(k, uint64(n))
	return append(k, e.ID...)
}

func put(b *bolt.Bucket, e Entry) error {
	raw, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return b.Put([]byte(e.ID), raw)
}

func transition(from, to State) error {
	return fmt.Errorf("%w: %s -> %s", ErrTransition, from, to)
}
