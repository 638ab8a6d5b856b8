package importer

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"

	bolt "go.etcd.io/bbolt"
)

// DeleteProject forgets a project: it cancels the project's attempts in
// flight (without counting them as failed) and drops its queued work, then,
// in one commit, deletes its records and notes every study it had chosen as
// a removal to make; finally it asks the Backend to Remove each of them.
// A removal that fails stays noted: DeleteProject returns the error, a later
// DeleteProject of the same project (or the next Start) retries it, and
// Enqueue refuses the project with ErrRemovalPending until it succeeded.
// ctx bounds the Remove calls; waiting for the cancelled attempts relies on
// the Backend honouring its context.
func (im *Importer) DeleteProject(ctx context.Context, project string) error {
	if err := checkProject(project); err != nil {
		return fmt.Errorf("delete import project: %w", err)
	}
	im.admin.Lock()
	defer im.admin.Unlock()
	if im.isClosed() {
		return fmt.Errorf("delete import project: %w", ErrClosed)
	}

	im.mu.Lock()
	im.deleting[project] = true
	im.sched.drop(project)
	for k, it := range im.parked {
		if it.project == project {
			delete(im.parked, k)
		}
	}
	var waits []chan struct{}
	for _, f := range im.flights {
		if f.project == project {
			f.cancel(errDeleted)
			waits = append(waits, f.done)
		}
	}
	im.mu.Unlock()
	defer func() {
		im.mu.Lock()
		delete(im.deleting, project)
		im.mu.Unlock()
	}()
	// Cancelled attempts end promptly (Backend calls honour their context)
	// and record nothing.
	for _, done := range waits {
		<-done
	}

	deleted := 0
	err := im.writes.Do(func(tx *bolt.Tx) error {
		deleted = 0
		b := tx.Bucket(bucketRecords)
		rm := tx.Bucket(bucketRemovals)
		var keys [][]byte
		err := forProject(b, project, func(k []byte, r Record) error {
			keys = append(keys, slices.Clone(k))
			if r.StudyUID == "" {
				return nil
			}
			m := Match{Project: project, StudyUID: r.StudyUID, AccessionNumber: r.Accession, Instances: r.Instances}
			return putJSON(rm, append(projectPrefix(project), r.StudyUID...), m)
		})
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := b.Delete(k); err != nil {
				return err
			}
		}
		deleted = len(keys)
		return nil
	})
	if err != nil {
		return fmt.Errorf("delete import project %s: %w", project, err)
	}
	im.log.Info("import project deleted", "project", project, "records", deleted)
	im.mu.Lock()
	im.settle()
	im.mu.Unlock()
	if err := im.drainRemovals(ctx, project); err != nil {
		return fmt.Errorf("delete import project %s: %w", project, err)
	}
	return nil
}

// drainRemovals asks the Backend to remove the noted studies of project (of
// every project when project is ""), forgetting each one removed. im.admin
// must be held.
func (im *Importer) drainRemovals(ctx context.Context, project string) error {
	var (
		p       []byte
		pending []Match
	)
	if project != "" {
		p = projectPrefix(project)
	}
	err := im.db.View(func(tx *bolt.Tx) error {
		c := tx.Bucket(bucketRemovals).Cursor()
		for k, v := c.Seek(p); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
			var m Match
			if err := json.Unmarshal(v, &m); err != nil {
				return fmt.Errorf("decode removal: %w", err)
			}
			pending = append(pending, m)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("read removals: %w", err)
	}
	failed := 0
	var first error
	note := func(err error) {
		failed++
		if first == nil {
			first = err
		}
	}
	for i, m := range pending {
		if err := ctx.Err(); err != nil {
			failed += len(pending) - i - 1
			note(err)
			break
		}
		if err := im.backend.Remove(ctx, m); err != nil {
			im.log.Warn("staged study removal failed", "project", m.Project,
				"acc_hash", hashAccession(m.AccessionNumber), "err_type", fmt.Sprintf("%T", err))
			note(fmt.Errorf("remove staged study: %w", err))
			continue
		}
		k := append(projectPrefix(m.Project), m.StudyUID...)
		if err := im.writes.Do(func(tx *bolt.Tx) error { return tx.Bucket(bucketRemovals).Delete(k) }); err != nil {
			note(fmt.Errorf("forget removal: %w", err))
		}
	}
	if first != nil {
		return fmt.Errorf("%d of %d staged studies not removed: %w", failed, len(pending), first)
	}
	return nil
}
