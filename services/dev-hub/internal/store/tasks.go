package store

import (
	"bytes"
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/hubapi"
)

// NewTask describes a task to enqueue. Payload must be a JSON document; it is
// stored compacted, in plaintext, as the FLIP hub stores it. SealedPayload,
// when set, replaces Payload and is dispatched verbatim.
type NewTask struct {
	TrustID       string
	TaskType      hubapi.TaskType
	Payload       json.RawMessage
	SealedPayload string
	QueryID       *string
}

// CreateTask enqueues a PENDING task for an existing trust.
func (s *Store) CreateTask(in NewTask, now time.Time) (Task, error) {
	var compact bytes.Buffer
	if in.SealedPayload == "" || len(in.Payload) > 0 {
		if err := json.Compact(&compact, in.Payload); err != nil {
			return Task{}, fmt.Errorf("create task: payload: %w", err)
		}
	}
	trustKey, err := uuidBytes(in.TrustID)
	if err != nil {
		return Task{}, fmt.Errorf("create task: %w", ErrTrustNotFound)
	}
	t := Task{
		ID:            uuid.NewString(),
		TrustID:       in.TrustID,
		TaskType:      in.TaskType,
		Payload:       compact.Bytes(),
		SealedPayload: in.SealedPayload,
		QueryID:       in.QueryID,
		Status:        hubapi.Pending,
		CreatedAt:     now.UTC(),
	}
	err = s.writes.Do(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketTrusts).Get([]byte(in.TrustID)) == nil {
			return ErrTrustNotFound
		}
		tasks := tx.Bucket(bucketTasks)
		seq, err := tasks.NextSequence()
		if err != nil {
			return err
		}
		t.Seq = seq
		if err := putJSON(tasks, []byte(t.ID), t); err != nil {
			return err
		}
		return tx.Bucket(bucketPending).Put(pendingKey(trustKey, t), []byte(t.ID))
	})
	if err != nil {
		return Task{}, fmt.Errorf("create task: %w", err)
	}
	return t, nil
}

// pendingKey orders a trust's pending tasks by creation time, then by
// enqueue sequence.
func pendingKey(trustKey []byte, t Task) []byte {
	return concat(trustKey, timeKey(t.CreatedAt), u64(t.Seq))
}

// inProgressKey orders dispatched tasks by dispatch time for the stale sweep.
func inProgressKey(t Task) ([]byte, error) {
	id, err := uuidBytes(t.ID)
	if err != nil {
		return nil, err
	}
	if t.DispatchedAt == nil {
		return nil, fmt.Errorf("task %s has no dispatch time", t.ID)
	}
	return concat(timeKey(*t.DispatchedAt), id), nil
}

// Task returns the task with the given id.
func (s *Store) Task(id string) (Task, error) {
	var t Task
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketTasks), []byte(id), &t, ErrTaskNotFound)
	})
	return t, err
}

// TaskFilter selects tasks; empty fields match everything.
type TaskFilter struct {
	TrustID string
	Status  hubapi.Status
}

// Tasks returns the tasks matching f in enqueue order. PENDING and
// IN_PROGRESS are read through their indexes, so waiting for a queue to drain
// does not decode every task the hub ever held.
func (s *Store) Tasks(f TaskFilter) ([]Task, error) {
	var out []Task
	keep := func(v []byte) error {
		var t Task
		if err := json.Unmarshal(v, &t); err != nil {
			return fmt.Errorf("decode task: %w", err)
		}
		if (f.TrustID == "" || t.TrustID == f.TrustID) && (f.Status == "" || t.Status == f.Status) {
			out = append(out, t)
		}
		return nil
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		tasks := tx.Bucket(bucketTasks)
		byID := func(id []byte) error {
			v := tasks.Get(id)
			if v == nil {
				return fmt.Errorf("index names task %s: %w", id, ErrTaskNotFound)
			}
			return keep(v)
		}
		switch f.Status {
		case hubapi.Pending:
			var prefix []byte
			if f.TrustID != "" {
				var err error
				if prefix, err = uuidBytes(f.TrustID); err != nil {
					return nil // no such trust, no tasks
				}
			}
			c := tx.Bucket(bucketPending).Cursor()
			for k, v := c.Seek(prefix); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
				if err := byID(v); err != nil {
					return err
				}
			}
			return nil
		case hubapi.InProgress:
			return tx.Bucket(bucketInProgress).ForEach(func(k, _ []byte) error {
				id, err := uuid.FromBytes(k[8:])
				if err != nil {
					return fmt.Errorf("in-progress index key: %w", err)
				}
				return byID([]byte(id.String()))
			})
		}
		return tasks.ForEach(func(_, v []byte) error { return keep(v) })
	})
	if err != nil {
		return nil, fmt.Errorf("list tasks: %w", err)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].Seq < out[j].Seq
	})
	return out, nil
}

// CancelTask moves a PENDING task to CANCELLED; it is kept for audit and never
// dispatched. Any other state yields a *StatusError.
func (s *Store) CancelTask(id string, now time.Time) (Task, error) {
	var t Task
	now = now.UTC()
	err := s.db.Update(func(tx *bolt.Tx) error {
		tasks := tx.Bucket(bucketTasks)
		if err := getJSON(tasks, []byte(id), &t, ErrTaskNotFound); err != nil {
			return err
		}
		if t.Status != hubapi.Pending {
			return &StatusError{Status: t.Status}
		}
		trustKey, err := uuidBytes(t.TrustID)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketPending).Delete(pendingKey(trustKey, t)); err != nil {
			return err
		}
		t.Status = hubapi.Cancelled
		t.UpdatedAt = &now
		return putJSON(tasks, []byte(id), t)
	})
	if err != nil {
		return Task{}, fmt.Errorf("cancel task: %w", err)
	}
	return t, nil
}

// ClaimPending dispatches up to limit of the trust's PENDING tasks, oldest
// first: each becomes IN_PROGRESS with updated_at and dispatched_at set to now.
// prepare is called for every claimed task inside the transaction (the hub
// seals payloads there); an error from it aborts the whole claim, leaving
// every task PENDING. The claim is one transaction; it may be run again when
// it shares a commit with a write that fails, so prepare can see a task more
// than once and the returned slice is what was claimed.
func (s *Store) ClaimPending(trustID string, limit int, now time.Time, prepare func(Task) error) ([]Task, error) {
	trustKey, err := uuidBytes(trustID)
	if err != nil {
		return nil, fmt.Errorf("claim pending: %w", ErrTrustNotFound)
	}
	now = now.UTC()
	var claimed []Task
	err = s.writes.Do(func(tx *bolt.Tx) error {
		claimed = claimed[:0]
		pending := tx.Bucket(bucketPending)
		tasks := tx.Bucket(bucketTasks)
		inProgress := tx.Bucket(bucketInProgress)

		type entry struct{ key, id []byte }
		var entries []entry
		c := pending.Cursor()
		for k, v := c.Seek(trustKey); k != nil && bytes.HasPrefix(k, trustKey) && len(entries) < limit; k, v = c.Next() {
			entries = append(entries, entry{key: bytes.Clone(k), id: bytes.Clone(v)})
		}
		for _, e := range entries {
			if err := pending.Delete(e.key); err != nil {
				return err
			}
			var t Task
			if err := getJSON(tasks, e.id, &t, ErrTaskNotFound); err != nil {
				return fmt.Errorf("pending index names task %s: %w", e.id, err)
			}
			if t.Status != hubapi.Pending {
				continue // a stale index entry; the row is authoritative
			}
			t.Status = hubapi.InProgress
			t.UpdatedAt = &now
			t.DispatchedAt = &now
			t.Dispatches++
			if err := prepare(t); err != nil {
				return err
			}
			key, err := inProgressKey(t)
			if err != nil {
				return err
			}
			if err := inProgress.Put(key, nil); err != nil {
				return err
			}
			if err := putJSON(tasks, []byte(t.ID), t); err != nil {
				return err
			}
			claimed = append(claimed, t)
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("claim pending: %w", err)
	}
	return claimed, nil
}

// RecordResult stores a trust's result for an IN_PROGRESS task: COMPLETED on
// success, FAILED otherwise, with needs_post_processing set for a successful
// create_imaging, and counts it in result_posts. A task of another trust
// yields ErrNotOwner; a task in any other state yields a *StatusError, and
// that refused post is counted in refused_posts as evidence of a duplicate
// delivery.
func (s *Store) RecordResult(taskID, trustID string, success bool, result *string, now time.Time) (Task, error) {
	var t Task
	var refused error
	now = now.UTC()
	err := s.writes.Do(func(tx *bolt.Tx) error {
		t, refused = Task{}, nil
		tasks := tx.Bucket(bucketTasks)
		if err := getJSON(tasks, []byte(taskID), &t, ErrTaskNotFound); err != nil {
			return err
		}
		if t.TrustID != trustID {
			return ErrNotOwner
		}
		if t.Status != hubapi.InProgress {
			refused = &StatusError{Status: t.Status}
			t.RefusedPosts++
			return putJSON(tasks, []byte(taskID), t)
		}
		t.ResultPosts++
		key, err := inProgressKey(t)
		if err != nil {
			return err
		}
		if err := tx.Bucket(bucketInProgress).Delete(key); err != nil {
			return err
		}
		t.Status = hubapi.Failed
		if success {
			t.Status = hubapi.Completed
		}
		t.Result = result
		t.UpdatedAt = &now
		t.CompletedAt = &now
		t.NeedsPostProcessing = success && t.TaskType == hubapi.CreateImaging
		return putJSON(tasks, []byte(taskID), t)
	})
	if err != nil {
		return Task{}, fmt.Errorf("record result: %w", err)
	}
	if refused != nil {
		return t, fmt.Errorf("record result: %w", refused)
	}
	return t, nil
}

// SweepReport lists the tasks a stale sweep touched.
type SweepReport struct {
	Requeued []string `json:"requeued"`
	Failed   []string `json:"failed"`
}

// SweepStale recovers IN_PROGRESS tasks dispatched before now-timeout: a task
// with fewer than maxRetries retries goes back to PENDING with retry_count+1;
// any other fails with FLIP's "Exceeded maximum retries (N)" result.
func (s *Store) SweepStale(now time.Time, timeout time.Duration, maxRetries int) (SweepReport, error) {
	now = now.UTC()
	cutoff := timeKey(now.Add(-timeout))
	exceeded := `{"error": ` + strconv.Quote("Exceeded maximum retries ("+strconv.Itoa(maxRetries)+")") + `}`
	var rep SweepReport
	err := s.db.Update(func(tx *bolt.Tx) error {
		rep = SweepReport{}
		inProgress := tx.Bucket(bucketInProgress)
		tasks := tx.Bucket(bucketTasks)
		pending := tx.Bucket(bucketPending)

		var keys [][]byte
		c := inProgress.Cursor()
		for k, _ := c.First(); k != nil && bytes.Compare(k[:8], cutoff) < 0; k, _ = c.Next() {
			keys = append(keys, bytes.Clone(k))
		}
		for _, k := range keys {
			if err := inProgress.Delete(k); err != nil {
				return err
			}
			id, err := uuid.FromBytes(k[8:])
			if err != nil {
				return fmt.Errorf("in-progress index key: %w", err)
			}
			var t Task
			if err := getJSON(tasks, []byte(id.String()), &t, ErrTaskNotFound); err != nil {
				return fmt.Errorf("in-progress index names task %s: %w", id, err)
			}
			if t.Status != hubapi.InProgress {
				continue
			}
			t.UpdatedAt = &now
			if t.RetryCount < maxRetries {
				t.Status = hubapi.Pending
				t.RetryCount++
				trustKey, err := uuidBytes(t.TrustID)
				if err != nil {
					return err
				}
				if err := pending.Put(pendingKey(trustKey, t), []byte(t.ID)); err != nil {
					return err
				}
				rep.Requeued = append(rep.Requeued, t.ID)
			} else {
				t.Status = hubapi.Failed
				t.Result = &exceeded
				t.CompletedAt = &now
				rep.Failed = append(rep.Failed, t.ID)
			}
			if err := putJSON(tasks, []byte(t.ID), t); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return SweepReport{}, fmt.Errorf("sweep stale tasks: %w", err)
	}
	return rep, nil
}
