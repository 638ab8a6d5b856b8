// Package importer is imaging-api's persistent import state machine. For
// every accession of a project it finds the one PACS study that carries
// exactly that accession number, retrieves it into staging through a Backend,
// and records each step in a bbolt file so that a restart resumes where the
// work stopped.
//
// An accession of a project moves through these states, each change committed
// (and fsynced) before the step it guards is taken:
//
//	(never seen) -> queued -> moving -> imported    the study moved into staging
//	                queued -> imported              it was already complete in staging
//	        queued, moving -> queued                a failed attempt, retried after a backoff
//	        queued, moving -> failed                attempts exhausted, or a permanent error
//	                queued -> queue_failed          invalid accession, no exact PACS match,
//	                                                ambiguous match, or lookups kept failing
//
// An attempt looks the study up (once; the chosen study UID is kept), asks the
// Backend whether it is already complete in staging, and only then moves it,
// so a study is never moved twice after a restart. The accession stays queued
// through the lookup (its chosen study is recorded) and the staging check,
// and turns moving just before its move. While a study moves, the worker
// already looks the next queued accession up, so that its move can start as
// soon as the worker is free; the commit that records the moved study
// imported then also records the next one moving. An attempt that reports
// no progress for Options.StallTimeout is cancelled and counts as failed. A
// process that stops while an accession is moving resumes it as queued.
//
// Status reports FLIP's five counts over a cohort (successful, failed,
// processing, queued, queue_failed) and Reimport puts failed and
// queue_failed accessions back in the queue, as FLIP's reimport does.
//
// An Importer is safe for concurrent use. Accession numbers are stored in the
// state file but never written to logs in clear: log lines carry a short
// sha256 prefix of the accession instead.
package importer

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/boltgroup"
)

// Match is one PACS study found for an accession number.
type Match struct {
	// Project is the imaging project the study is imported into. Find leaves
	// it empty; the importer sets it before Present, Move and Remove.
	Project string `json:"project,omitempty"`
	// StudyUID is the study's StudyInstanceUID.
	StudyUID string `json:"study_uid"`
	// AccessionNumber is the study's accession number exactly as the PACS
	// reported it.
	AccessionNumber string `json:"accession_number"`
	// Instances is the number of instances the PACS reported for the study
	// (0 when unknown).
	Instances int `json:"instances,omitempty"`
}

// Backend is the PACS and staging side of an import.
type Backend interface {
	// Find returns the PACS studies matching accession. The PACS may match
	// loosely (Orthanc matches case-insensitively); the importer keeps only
	// studies whose AccessionNumber equals accession exactly.
	Find(ctx context.Context, accession string) ([]Match, error)
	// Move retrieves one study into staging and returns once it is there,
	// or with an error. It may report the number of instances received so
	// far through progress; any increase counts as progress for stall
	// detection. It must return promptly when ctx is cancelled.
	Move(ctx context.Context, m Match, progress func(received int)) error
	// Present reports whether the study is already complete in staging.
	Present(ctx context.Context, m Match) (bool, error)
	// Remove deletes the project's staged copy of the study. Removing a
	// study that is not staged must succeed.
	Remove(ctx context.Context, m Match) error
}

// ErrPermanent marks a Backend error that retrying cannot fix: an attempt
// failing with an error that wraps it ends the accession at once (failed,
// or queue_failed for a lookup) instead of being retried.
var ErrPermanent = errors.New("permanent import error")

// ErrInvalidProject is returned for a project id that is empty, longer than
// 256 bytes, not valid UTF-8, or contains a NUL byte.
var ErrInvalidProject = errors.New("invalid project id")

// ErrClosed is returned by calls made after Close.
var ErrClosed = errors.New("importer closed")

// ErrRemovalPending is returned by Enqueue for a project whose deletion has
// not finished removing its staged studies; call DeleteProject again first.
var ErrRemovalPending = errors.New("project deletion still has staged studies to remove")

// Option defaults.
const (
	DefaultConcurrency  = 4
	DefaultMaxAttempts  = 3
	DefaultBackoffMin   = 30 * time.Second
	DefaultBackoffMax   = 10 * time.Minute
	DefaultStallTimeout = 15 * time.Minute
)

// Options configure an Importer. Only Path is required.
type Options struct {
	// Path is the bbolt state file, created if missing.
	Path string
	// Concurrency bounds the moves in flight across all projects (default
	// DefaultConcurrency). While they run, as many of the next queued
	// accessions may be looked up and checked in staging.
	Concurrency int
	// MaxAttempts is how many failed attempts end an accession as failed
	// (default DefaultMaxAttempts). A restart does not consume an attempt.
	MaxAttempts int
	// BackoffMin and BackoffMax bound the jittered, exponentially growing
	// wait before a failed attempt is retried (defaults DefaultBackoffMin,
	// DefaultBackoffMax). BackoffMax below BackoffMin is raised to it.
	BackoffMin, BackoffMax time.Duration
	// StallTimeout cancels an attempt that makes no progress for this long
	// (lookup, staging check and every increase of the Move progress count
	// as progress); the attempt counts as failed. Zero means
	// DefaultStallTimeout; negative disables stall detection.
	StallTimeout time.Duration
	// LockTimeout bounds the wait for the state file's lock held by another
	// process (default 5 s).
	LockTimeout time.Duration
	// Now is the clock for recorded timestamps and retry deadlines (default
	// time.Now). Waits still run on real time, so a substitute clock should
	// not run slower than real time.
	Now func() time.Time
	// Logger receives state changes and failures (default slog.Default()).
	Logger *slog.Logger
}

// Importer runs and records the imports. Create one with Open, run its
// workers with Start and release it with Close.
type Importer struct {
	db      *bolt.DB
	writes  *boltgroup.Committer
	backend Backend
	opts    Options
	log     *slog.Logger

	// admin serialises Start's recovery, Enqueue, Reimport, DeleteProject
	// and the removal of deleted projects' studies.
	admin sync.Mutex

	mu       sync.Mutex
	started  bool
	closed   bool
	ctx      context.Context // workers' context, set by Start
	cancel   context.CancelFunc
	sched    queue
	flights  map[string]*flight // attempts in flight, by record key
	parked   map[string]*item   // requeued while their last attempt finishes
	deleting map[string]bool    // projects being deleted
	changed  chan struct{}      // closed and replaced when work is added
	settled  chan struct{}      // closed and replaced when an attempt ends or records go
	handoff  chan *task         // prepared tasks, from look-aheads to workers

	wg sync.WaitGroup
}

// Open opens (creating if needed) the state file and returns an Importer
// that is not yet running; Enqueue, Status and the other calls work before
// Start.
func Open(opts Options, backend Backend) (*Importer, error) {
	if opts.Path == "" {
		return nil, errors.New("open importer: no state file path")
	}
	if backend == nil {
		return nil, errors.New("open importer: no backend")
	}
	opts = withDefaults(opts)
	db, err := bolt.Open(opts.Path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open import state %s: %w", opts.Path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, name := range [][]byte{bucketRecords, bucketRemovals} {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init import state %s: %w", opts.Path, err)
	}
	return &Importer{
		db:       db,
		writes:   boltgroup.New(db),
		backend:  backend,
		opts:     opts,
		log:      opts.Logger,
		flights:  map[string]*flight{},
		parked:   map[string]*item{},
		deleting: map[string]bool{},
		changed:  make(chan struct{}),
		settled:  make(chan struct{}),
		handoff:  make(chan *task),
	}, nil
}

func withDefaults(o Options) Options {
	if o.Concurrency <= 0 {
		o.Concurrency = DefaultConcurrency
	}
	if o.MaxAttempts <= 0 {
		o.MaxAttempts = DefaultMaxAttempts
	}
	if o.BackoffMin <= 0 {
		o.BackoffMin = DefaultBackoffMin
	}
	if o.BackoffMax <= 0 {
		o.BackoffMax = DefaultBackoffMax
	}
	if o.BackoffMax < o.BackoffMin {
		o.BackoffMax = o.BackoffMin
	}
	if o.StallTimeout == 0 {
		o.StallTimeout = DefaultStallTimeout
	}
	if o.LockTimeout <= 0 {
		o.LockTimeout = 5 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	return o
}

// Start recovers the queue from the state file and starts the workers; it
// returns at once. Accessions left moving by an earlier process go back to
// queued (their next attempt checks staging before moving anything), and
// removals left over from an unfinished DeleteProject are retried in the
// background. Cancelling ctx (or Close) stops the workers promptly without
// marking any work failed. Start runs at most once; later calls, and calls
// after Close, do nothing.
func (im *Importer) Start(ctx context.Context) {
	im.admin.Lock()
	defer im.admin.Unlock()
	im.mu.Lock()
	if im.started || im.closed {
		im.mu.Unlock()
		return
	}
	im.started = true
	im.ctx, im.cancel = context.WithCancel(ctx)
	im.mu.Unlock()

	items, resumed, err := im.recover()
	if err != nil {
		// The records stay as they are; a later Start (after reopening)
		// recovers them.
		im.log.Error("import recovery failed", "err", err)
	}
	if resumed > 0 {
		im.log.Info("import resumed after restart", "interrupted", resumed, "queued", len(items))
	}
	im.mu.Lock()
	for _, it := range items {
		im.sched.push(it)
	}
	im.signal()
	im.mu.Unlock()

	for range im.opts.Concurrency {
		im.wg.Go(func() { im.work(im.ctx) })
	}
	im.wg.Go(func() {
		im.admin.Lock()
		defer im.admin.Unlock()
		if err := im.drainRemovals(im.ctx, ""); err != nil && im.ctx.Err() == nil {
			im.log.Warn("removal of deleted projects' studies incomplete", "err", err)
		}
	})
}

// Close stops the workers, waits for them (an interrupted attempt is put
// back to queued, not counted as failed) and closes the state file. It is
// safe to call more than once.
func (im *Importer) Close() error {
	im.mu.Lock()
	if im.closed {
		im.mu.Unlock()
		return nil
	}
	im.closed = true
	cancel := im.cancel
	im.signal()
	im.settle()
	im.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	im.wg.Wait()
	if err := im.db.Close(); err != nil {
		return fmt.Errorf("close import state: %w", err)
	}
	return nil
}

// isClosed reports whether Close was called.
func (im *Importer) isClosed() bool {
	im.mu.Lock()
	defer im.mu.Unlock()
	return im.closed
}

// signal wakes workers waiting for work; im.mu must be held.
func (im *Importer) signal() {
	close(im.changed)
	im.changed = make(chan struct{})
}

// settle wakes callers of Wait; im.mu must be held.
func (im *Importer) settle() {
	close(im.settled)
	im.settled = make(chan struct{})
}
