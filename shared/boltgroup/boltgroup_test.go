package boltgroup

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	bolt "go.etcd.io/bbolt"
	berrors "go.etcd.io/bbolt/errors"
)

var errRefused = errors.New("refused")

// Concurrent writers each get their own answer: refused writes fail alone,
// every accepted write is on disk after a reopen, and the commits are shared.
func TestConcurrentWritersShareCommitsAndKeepTheirAnswers(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "g.db")
	db, err := bolt.Open(path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Update(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("b")); return err }); err != nil {
		t.Fatal(err)
	}
	c := New(db)
	const n = 64
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			errs[i] = c.Do(func(tx *bolt.Tx) error {
				if i%5 == 0 {
					return errRefused
				}
				return tx.Bucket([]byte("b")).Put(fmt.Appendf(nil, "k%02d", i), []byte("v"))
			})
		})
	}
	wg.Wait()
	stats := db.Stats()
	commits := stats.TxStats.GetWrite()
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if want := i%5 == 0; errors.Is(err, errRefused) != want || (!want && err != nil) {
			t.Errorf("writer %d: err = %v", i, err)
		}
	}
	db, err = bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	_ = db.View(func(tx *bolt.Tx) error {
		for i := range n {
			got := tx.Bucket([]byte("b")).Get(fmt.Appendf(nil, "k%02d", i))
			if (got != nil) == (i%5 == 0) {
				t.Errorf("key %d on disk = %v, want %v", i, got != nil, i%5 != 0)
			}
		}
		return nil
	})
	t.Logf("%d writers, %d write transactions", n, commits)
}

// A lone writer commits at once and sees its own error.
func TestLoneWriter(t *testing.T) {
	t.Parallel()
	db, err := bolt.Open(filepath.Join(t.TempDir(), "g.db"), 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	c := New(db)
	if err := c.Do(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); err != nil {
		t.Fatal(err)
	}
	if err := c.Do(func(tx *bolt.Tx) error { _, err := tx.CreateBucket([]byte("x")); return err }); !errors.Is(err, berrors.ErrBucketExists) {
		t.Fatalf("second create: %v, want bucket exists", err)
	}
}
