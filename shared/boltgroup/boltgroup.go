// Package boltgroup coalesces concurrent bbolt writers into shared commits
// (group commit): callers that write at the same time share one transaction
// and one pair of fsyncs, and each still returns only once its own change is
// on disk. A Committer is safe for concurrent use.
package boltgroup

import (
	"errors"
	"slices"
	"sync"

	bolt "go.etcd.io/bbolt"
)

// errLead tells a queued caller that it now commits the queue.
var errLead = errors.New("boltgroup: lead the next group commit")

// Committer coalesces concurrent writers into one bbolt transaction, and
// so one pair of fsyncs: while a commit is under way, new writes queue up;
// when it ends, the first queued caller commits everything queued so far in
// one transaction. A lone writer commits at once, with no added delay.
//
// A write function must be safe to run again: when one function in a group
// returns an error, the whole group is rolled back, that function runs again
// alone to settle its own answer, and the rest run again and commit without
// it. So a function must not keep anything from an earlier run.
type Committer struct {
	db *bolt.DB

	mu    sync.Mutex
	busy  bool // a caller is committing; the queue waits for it
	queue []*write
}

type write struct {
	fn   func(*bolt.Tx) error
	done chan error
}

// Do runs fn in a write transaction, together with any writes queued
// meanwhile, and returns when that transaction is committed (fn's own error
// or the commit's).
func (g *Committer) Do(fn func(*bolt.Tx) error) error {
	w := &write{fn: fn, done: make(chan error, 1)}
	g.mu.Lock()
	g.queue = append(g.queue, w)
	if g.busy {
		g.mu.Unlock()
		if err := <-w.done; !errors.Is(err, errLead) {
			return err
		}
		g.mu.Lock()
	}
	g.busy = true
	group := g.queue
	g.queue = nil
	g.mu.Unlock()

	g.commit(group)

	g.mu.Lock()
	if len(g.queue) > 0 {
		g.queue[0].done <- errLead // busy stays set: the lead passes on
	} else {
		g.busy = false
	}
	g.mu.Unlock()
	return <-w.done
}

// commit runs a group of writes in one transaction and answers each.
func (g *Committer) commit(group []*write) {
	for len(group) > 0 {
		failed := -1
		err := g.db.Update(func(tx *bolt.Tx) error {
			for i, w := range group {
				if err := w.fn(tx); err != nil {
					failed = i
					return err
				}
			}
			return nil
		})
		if failed < 0 || len(group) == 1 {
			for _, w := range group {
				w.done <- err
			}
			return
		}
		bad := group[failed]
		bad.done <- g.db.Update(bad.fn)
		group = slices.Delete(group, failed, failed+1)
	}
}

// New returns a Committer writing to db.
func New(db *bolt.DB) *Committer { return &Committer{db: db} }
