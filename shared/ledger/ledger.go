// Package ledger is the trust node's egress audit ledger: an append-only
// JSON-lines file in which every entry is chained to the one before it by
// SHA-256, so that a modified, deleted, reordered or truncated entry is found
// by Verify.
//
// A ledger directory holds the current file egress.jsonl and, once it grew
// past Options.MaxBytes, rotated files egress-<first seq>.jsonl (the seq
// zero-padded to 20 digits, so that names sort in chain order). The first
// entry of a new file chains to the last entry of the file before it.
//
// One process writes a ledger (it holds an advisory lock on egress.lock while
// open); within that process a *Ledger is safe for concurrent use: Append
// calls are serialized and each returns only once its line and, when a file
// was created or renamed, the directory are fsynced. Appends that arrive
// while an fsync is under way are written behind it and share the next one
// (group commit), so concurrent writers do not queue for one fsync each. A
// failed fsync closes the ledger (ErrClosed): whether the lines it covered
// reached the disk is unknown, so nothing is chained after them until a
// restart has read the file again. Readers (Verify, Walk) may run at any
// time, from any process, and only read.
package ledger

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// File names inside a ledger directory.
const (
	CurrentFile = "egress.jsonl"
	lockFile    = "egress.lock"
	rotPrefix   = "egress-"
	rotSuffix   = ".jsonl"
)

// ZeroHash is the prev of the first entry.
var ZeroHash = strings.Repeat("0", 64)

// DefaultMaxBytes is the size past which the current file is rotated.
const DefaultMaxBytes = 16 << 20

// Kinds of entries written by trust-api.
const (
	KindCohortResults = "cohort_results"
	KindTaskResult    = "task_result"
	KindDPSpend       = "dp_spend"
)

// Entry is one ledger line. Its JSON field order is the canonical order.
type Entry struct {
	Seq     uint64    `json:"seq"`
	Time    time.Time `json:"time"`
	Channel string    `json:"channel"`
	TaskID  string    `json:"task_id"`
	Project string    `json:"project"`
	Kind    string    `json:"kind"`
	// Item is the egress gate's item id, so that an item is ledgered once.
	Item string `json:"item,omitempty"`
	Size int64  `json:"size"`
	// SHA256 is the hex SHA-256 of the exact bytes that left.
	SHA256     string   `json:"sha256"`
	Rules      []string `json:"rules"`
	ApprovedBy string   `json:"approved_by"`
	Prev       string   `json:"prev"`
	Hash       string   `json:"hash,omitempty"`
}

// Record is what a caller ledgers; Append adds seq, time, prev and hash.
type Record struct {
	Channel    string
	TaskID     string
	Project    string
	Kind       string
	Item       string
	Size       int64
	SHA256     string
	Rules      []string
	ApprovedBy string
}

// ComputeHash is the hex SHA-256 of e's canonical JSON without its hash:
// encoding/json's compact encoding of Entry with Hash empty.
func ComputeHash(e Entry) string {
	e.Hash = ""
	raw, _ := json.Marshal(e) // Entry always encodes
	sum := sha256.Sum256(raw)
	return hex.EncodeToString(sum[:])
}

// Digest returns the size and hex SHA-256 of b, as a Record carries them.
func Digest(b []byte) (int64, string) {
	sum := sha256.Sum256(b)
	return int64(len(b)), hex.EncodeToString(sum[:])
}

// ErrCorrupt is wrapped by the error of Open when the ledger's tail is
// unreadable or its hash is wrong; nothing is appended to such a ledger.
var ErrCorrupt = errors.New("audit ledger is corrupt")

// ErrClosed is returned by Append after Close or after a write failure that
// could not be undone.
var ErrClosed = errors.New("audit ledger is closed")

// Options tune a Ledger; the zero value is usable.
type Options struct {
	// MaxBytes rotates the current file before an append would take it
	// past this size (DefaultMaxBytes).
	MaxBytes int64
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Ledger appends to a ledger directory.
type Ledger struct {
	dir  string
	opts Options

	mu    sync.Mutex
	lock  *os.File
	f     *os.File // current file, nil when not created yet
	size  int64
	first uint64 // seq of the current file's first entry (0: empty)
	last  Entry  // last entry written (Seq 0: none)
	dead  error

	// Group commit: one appender at a time fsyncs the current file
	// (syncing) without holding mu; durable is the highest seq known to be
	// on disk; synced wakes the appenders waiting for it (cond on mu).
	syncing bool
	durable uint64
	synced  *sync.Cond
	// syncFile replaces (*os.File).Sync in tests.
	syncFile func(*os.File) error
}

// Open opens the ledger in dir (creating the directory) and continues its
// chain. It fails with ErrCorrupt when the last entry is truncated, does not
// parse, or does not match its hash.
func Open(dir string, opts Options) (*Ledger, error) {
	if opts.MaxBytes <= 0 {
		opts.MaxBytes = DefaultMaxBytes
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("create ledger dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open ledger lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		_ = lock.Close()
		return nil, fmt.Errorf("ledger %s is in use by another process: %w", dir, err)
	}
	l := &Ledger{dir: dir, opts: opts, lock: lock, syncFile: (*os.File).Sync}
	l.synced = sync.NewCond(&l.mu)
	if err := l.load(); err != nil {
		_ = lock.Close()
		return nil, err
	}
	l.durable = l.last.Seq
	return l, nil
}

// load finds the tail of the chain and opens the current file for appends.
func (l *Ledger) load() error {
	files, err := Files(l.dir)
	if err != nil {
		return err
	}
	// The tail is in the last non-empty file.
	for i := len(files) - 1; i >= 0; i-- {
		entries, err := readFile(files[i])
		var ce *CorruptError
		if errors.As(err, &ce) {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		if err != nil {
			return err
		}
		if len(entries) == 0 {
			continue
		}
		tail := entries[len(entries)-1]
		if ComputeHash(tail.Entry) != tail.Hash {
			return fmt.Errorf("%w: %s line %d (seq %d): hash mismatch", ErrCorrupt, filepath.Base(files[i]), tail.line, tail.Seq)
		}
		l.last = tail.Entry
		break
	}
	cur := filepath.Join(l.dir, CurrentFile)
	st, err := os.Stat(cur)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil // created by the first append
	case err != nil:
		return fmt.Errorf("stat ledger: %w", err)
	}
	f, err := os.OpenFile(cur, os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("open ledger: %w", err)
	}
	l.f, l.size = f, st.Size()
	if st.Size() > 0 {
		entries, err := readFile(cur)
		if err != nil {
			_ = f.Close()
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		l.first = entries[0].Seq
	}
	return nil
}

// Last returns the last entry of the chain (Seq 0 when the ledger is empty).
// While appends are in flight it may not be on disk yet; the next Append
// chains to it all the same.
func (l *Ledger) Last() Entry {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.last
}

// Dir is the ledger directory.
func (l *Ledger) Dir() string { return l.dir }

// Append writes r as the next entry and returns it once it is on disk.
func (l *Ledger) Append(r Record) (Entry, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var (
		e    Entry
		line []byte
	)
	for {
		if l.dead != nil {
			return Entry{}, l.dead
		}
		var err error
		if e, line, err = l.next(r); err != nil {
			return Entry{}, err
		}
		if l.f == nil || l.size == 0 || l.size+int64(len(line)) <= l.opts.MaxBytes {
			break
		}
		if !l.syncing {
			if err := l.rotate(); err != nil {
				return Entry{}, err
			}
			break
		}
		// The file is about to rotate: let the fsync under way end first,
		// then build the entry again on the chain as it is then.
		l.synced.Wait()
	}
	if l.f == nil {
		if err := l.create(); err != nil {
			return Entry{}, err
		}
	}
	if _, err := l.f.Write(line); err != nil {
		return Entry{}, l.undo(fmt.Errorf("write ledger: %w", err))
	}
	l.size += int64(len(line))
	if l.first == 0 {
		l.first = e.Seq
	}
	l.last = e
	if err := l.waitDurable(e.Seq); err != nil {
		return Entry{}, err
	}
	return e, nil
}

// next builds the entry that chains r to the last one, and its line.
func (l *Ledger) next(r Record) (Entry, []byte, error) {
	rules := r.Rules
	if rules == nil {
		rules = []string{}
	}
	prev := l.last.Hash
	if l.last.Seq == 0 {
		prev = ZeroHash
	}
	e := Entry{
		Seq: l.last.Seq + 1, Time: l.opts.Now().UTC(), Channel: r.Channel, TaskID: r.TaskID, Project: r.Project,
		Kind: r.Kind, Item: r.Item, Size: r.Size, SHA256: r.SHA256, Rules: slices.Clone(rules),
		ApprovedBy: r.ApprovedBy, Prev: prev,
	}
	e.Hash = ComputeHash(e)
	line, err := json.Marshal(e)
	if err != nil {
		return Entry{}, nil, fmt.Errorf("encode ledger entry: %w", err)
	}
	return e, append(line, '\n'), nil
}

// waitDurable returns once the entry seq is on disk; the caller holds mu.
// The first appender to find no fsync under way runs one for every line
// written so far, without holding mu, so that appends go on meanwhile; the
// others wait for it and, if their line came too late for it, for the next.
func (l *Ledger) waitDurable(seq uint64) error {
	for l.durable < seq {
		if l.dead != nil {
			return l.dead
		}
		if l.syncing {
			l.synced.Wait()
			continue
		}
		l.syncing = true
		target, f := l.last.Seq, l.f
		l.mu.Unlock()
		err := l.syncFile(f)
		l.mu.Lock()
		l.syncing = false
		switch {
		case err != nil && l.dead == nil:
			l.dead = fmt.Errorf("%w: sync ledger: %v", ErrClosed, err)
		case err == nil:
			l.durable = max(l.durable, target)
		}
		l.synced.Broadcast()
	}
	return nil
}

// undo cuts a partly written line off the current file; if that fails the
// ledger refuses further appends rather than chain after a broken line.
func (l *Ledger) undo(cause error) error {
	if err := l.f.Truncate(l.size); err != nil {
		l.dead = fmt.Errorf("%w: %v (and the partial line could not be removed: %v)", ErrClosed, cause, err)
		return l.dead
	}
	if err := l.syncFile(l.f); err != nil {
		l.dead = fmt.Errorf("%w: %v", ErrClosed, cause)
		return l.dead
	}
	return cause
}

// create makes the current file and fsyncs the directory.
func (l *Ledger) create() error {
	f, err := os.OpenFile(filepath.Join(l.dir, CurrentFile), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("create ledger file: %w", err)
	}
	if err := syncDir(l.dir); err != nil {
		_ = f.Close()
		return err
	}
	l.f, l.size, l.first = f, 0, 0
	return nil
}

// rotate renames the current file to egress-<first seq>.jsonl; the next
// append creates a new current file. The caller holds mu and no fsync is
// under way; lines still waiting for one are fsynced here first.
func (l *Ledger) rotate() error {
	if l.durable < l.last.Seq {
		if err := l.syncFile(l.f); err != nil {
			l.dead = fmt.Errorf("%w: sync ledger: %v", ErrClosed, err)
			l.synced.Broadcast()
			return l.dead
		}
		l.durable = l.last.Seq
		l.synced.Broadcast()
	}
	if err := l.f.Close(); err != nil {
		return fmt.Errorf("close ledger file: %w", err)
	}
	l.f = nil
	if err := os.Rename(filepath.Join(l.dir, CurrentFile), filepath.Join(l.dir, RotatedName(l.first))); err != nil {
		return fmt.Errorf("rotate ledger: %w", err)
	}
	return syncDir(l.dir)
}

// RotatedName is the name of a rotated file whose first entry is seq.
func RotatedName(seq uint64) string { return fmt.Sprintf("%s%020d%s", rotPrefix, seq, rotSuffix) }

// Close closes the ledger; further appends fail with ErrClosed.
func (l *Ledger) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if errors.Is(l.dead, ErrClosed) && l.lock == nil {
		return nil
	}
	l.dead = ErrClosed
	for l.syncing { // appenders waiting for it get their answer
		l.synced.Wait()
	}
	var err error
	if l.f != nil {
		err = l.f.Close()
		l.f = nil
	}
	if l.lock != nil {
		_ = l.lock.Close()
		l.lock = nil
	}
	return err
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("open ledger dir: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync ledger dir: %w", err)
	}
	return nil
}

// Files lists the ledger's files in chain order: rotated files by first seq,
// then the current file if it exists.
func Files(dir string) ([]string, error) {
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read ledger dir: %w", err)
	}
	var rotated []string
	current := ""
	for _, de := range des {
		name := de.Name()
		switch {
		case name == CurrentFile:
			current = filepath.Join(dir, name)
		case strings.HasPrefix(name, rotPrefix) && strings.HasSuffix(name, rotSuffix):
			if _, ok := rotatedSeq(name); ok {
				rotated = append(rotated, filepath.Join(dir, name))
			}
		}
	}
	slices.Sort(rotated)
	if current != "" {
		rotated = append(rotated, current)
	}
	return rotated, nil
}

func rotatedSeq(name string) (uint64, bool) {
	s := strings.TrimSuffix(strings.TrimPrefix(name, rotPrefix), rotSuffix)
	n, err := strconv.ParseUint(s, 10, 64)
	return n, err == nil && len(s) == 20
}

// line is an entry read from a file with its position and exact bytes.
type line struct {
	Entry
	line int
	raw  []byte
}

// CorruptError locates the first bad entry of a ledger.
type CorruptError struct {
	File string // base name of the file
	Line int    // 1-based line in File
	// Entry is the position in the chain where the bad entry was found
	// (the seq an intact ledger has there).
	Entry  uint64
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("entry %d (%s line %d): %s", e.Entry, e.File, e.Line, e.Reason)
}

// readFile parses every line of one file; a line that does not parse or
// lacks its newline is a *CorruptError with Entry 0 (the caller knows the
// position).
func readFile(path string) ([]line, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open ledger file: %w", err)
	}
	defer f.Close()
	var out []line
	r := bufio.NewReaderSize(f, 64<<10)
	for n := 1; ; n++ {
		raw, err := r.ReadBytes('\n')
		if errors.Is(err, io.EOF) {
			if len(raw) == 0 {
				return out, nil
			}
			return out, &CorruptError{File: filepath.Base(path), Line: n, Reason: "truncated line (no newline at end of file)"}
		}
		if err != nil {
			return out, fmt.Errorf("read ledger file: %w", err)
		}
		raw = bytes.TrimSuffix(raw, []byte("\n"))
		var e Entry
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&e); err != nil {
			return out, &CorruptError{File: filepath.Base(path), Line: n, Reason: "not a valid ledger entry: " + err.Error()}
		}
		out = append(out, line{Entry: e, line: n, raw: raw})
	}
}
