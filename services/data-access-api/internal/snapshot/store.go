// Package snapshot stores the frozen membership of approved cohorts: for each
// project, the raw SQL of record and the sorted person and accession ids it
// selected when the cohort was approved. Row-level routes serve only members
// of the frozen cohort, so membership can shrink (rows that no longer exist)
// but never grow.
//
// A record lives in <dir>/<canonical project uuid>/membership.json and is
// written once: it is streamed into a private work directory, synced, and
// renamed into place atomically, so readers never see a partial record and a
// second writer loses the race with ErrExists. Records can hold millions of
// ids; they are written from iterators and read back by streaming, so neither
// side ever holds the whole document in memory. Only membership is stored,
// never clinical values.
//
// A Store is safe for concurrent use by multiple goroutines and by several
// processes sharing the directory.
package snapshot

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"iter"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"
)

// Errors reported by the store. Compare with errors.Is.
var (
	// ErrExists: a record already exists for the project (write-once).
	ErrExists = errors.New("snapshot: a record already exists for this project")
	// ErrTooLarge: the record would exceed the configured size limit. The
	// message deliberately carries no byte counts.
	ErrTooLarge = errors.New("snapshot: record exceeds the configured size limit")
	// ErrUnreadable: a record exists but cannot be read or is malformed; the
	// wrapped cause says why.
	ErrUnreadable = errors.New("snapshot: record is unreadable")
	// ErrDisabled: no snapshot directory is configured.
	ErrDisabled = errors.New("snapshot: store is disabled")
	// ErrInvalidID: the project id is not a UUID.
	ErrInvalidID = errors.New("snapshot: project id is not a UUID")
	// ErrNotFound: no record exists for the project.
	ErrNotFound = errors.New("snapshot: no record for this project")
	// ErrNoList: the record holds no list of the requested kind (it was
	// frozen as null, which differs from an empty list).
	ErrNoList = errors.New("snapshot: record has no id list of this kind")
	// ErrUnsorted: ids handed to Create were not strictly ascending.
	ErrUnsorted = errors.New("snapshot: ids must be distinct and in ascending byte order")
)

// FormatVersion is the version of the membership.json layout.
const FormatVersion = 2

const (
	recordFile = "membership.json"
	tmpPrefix  = ".tmp-"
	delPrefix  = ".del-"
	// SweepAge is how old a leftover work or delete directory must be before
	// Ensure removes it; younger ones may belong to another replica sharing
	// the volume.
	SweepAge = 600 * time.Second

	dirPerm  = 0o750
	filePerm = 0o640
)

// Kind selects one of a record's id lists.
type Kind int

// The id lists of a record.
const (
	Persons Kind = iota + 1
	Accessions
)

// String returns the record key of the list ("person_ids", "accession_ids").
func (k Kind) String() string {
	switch k {
	case Persons:
		return keyPersons
	case Accessions:
		return keyAccessions
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Meta describes a record: everything but the ids themselves.
type Meta struct {
	// Query is the raw SQL of record, as submitted.
	Query string
	// QueryHash is QueryHash(Query).
	QueryHash string
	// HasPersonIDs and HasAccessionIDs report whether each list is present
	// (not null). A present list may be empty.
	HasPersonIDs, HasAccessionIDs bool
	// PersonCount and AccessionCount are the lengths of the lists.
	PersonCount, AccessionCount int64
	// RowCount is the number of rows the query returned when frozen.
	RowCount int64
	// SubjectCount is the number of distinct subjects when frozen.
	SubjectCount int64
	// Columns are the query's result columns.
	Columns []string
	// CreatedAt is when the record was frozen (UTC).
	CreatedAt time.Time
}

// has reports whether the record holds a list of kind k.
func (m *Meta) has(k Kind) bool {
	switch k {
	case Persons:
		return m.HasPersonIDs
	case Accessions:
		return m.HasAccessionIDs
	}
	return false
}

func (m *Meta) count(k Kind) int64 {
	if k == Persons {
		return m.PersonCount
	}
	return m.AccessionCount
}

// Store is a directory of snapshot records.
type Store struct {
	dir      string
	maxBytes int64
	log      *slog.Logger
	now      func() time.Time
}

// Open returns the store rooted at dir; an empty dir gives a disabled store
// that holds nothing and refuses writes. maxBytes caps the size of one
// record file (0 or less: no cap). Open touches nothing on disk; call Ensure
// at startup.
func Open(dir string, maxBytes int64, logger *slog.Logger) *Store {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if strings.TrimSpace(dir) != "" {
		dir = filepath.Clean(dir)
	} else {
		dir = ""
	}
	return &Store{dir: dir, maxBytes: maxBytes, log: logger, now: time.Now}
}

// Enabled reports whether a snapshot directory is configured.
func (s *Store) Enabled() bool { return s.dir != "" }

// Ensure prepares the store at startup: it creates the directory, removes
// work and delete directories left behind more than SweepAge ago, and probes
// that the directory is writable. It never fails; problems are logged at
// ERROR level so that a misconfigured store is visible.
func (s *Store) Ensure() {
	if !s.Enabled() {
		s.log.Error("Cohort snapshot store DISABLED (COHORT_SNAPSHOT_DIR is unset): the row-level routes refuse every project and no cohort can be frozen")
		return
	}
	if err := os.MkdirAll(s.dir, dirPerm); err != nil {
		s.log.Error("cohort snapshot store: cannot create the directory", "dir", s.dir, "error", err)
		return
	}
	s.sweep()
	probe, err := os.MkdirTemp(s.dir, tmpPrefix+"probe-")
	if err == nil {
		err = os.Remove(probe)
	}
	if err != nil {
		uid := os.Getuid()
		s.log.Error("cohort snapshot store: the directory is not writable by the service; give it to the service's uid",
			"dir", s.dir, "uid", uid, "remedy", fmt.Sprintf("chown -R %d %s", uid, s.dir), "error", err)
	}
}

// sweep removes stale .tmp-* and .del-* entries. Delete directories are only
// ever removed, never renamed back.
func (s *Store) sweep() {
	entries, err := os.ReadDir(s.dir)
	if err != nil {
		s.log.Error("cohort snapshot store: cannot list the directory", "dir", s.dir, "error", err)
		return
	}
	cutoff := s.now().Add(-SweepAge)
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, tmpPrefix) && !strings.HasPrefix(name, delPrefix) {
			continue
		}
		info, err := e.Info()
		if err != nil || !info.ModTime().Before(cutoff) {
			continue
		}
		if err := os.RemoveAll(filepath.Join(s.dir, name)); err != nil {
			s.log.Warn("cohort snapshot store: cannot remove a stale entry", "entry", name, "error", err)
			continue
		}
		s.log.Info("cohort snapshot store: removed a stale entry", "entry", name)
	}
}

// CanonicalID returns the canonical lower-case form of a project UUID written
// in any usual notation (upper case, braces, urn:uuid:, no hyphens). Only
// canonical ids are ever used as path components.
func CanonicalID(projectID string) (string, bool) {
	u, err := uuid.Parse(projectID)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// QueryHash returns the SHA-256 (lower-case hex) of sql trimmed, lower-cased
// and with every run of whitespace collapsed to one space. It identifies a
// query across cosmetic differences; it is used to notice, and log, a client
// query that differs from the frozen one.
func QueryHash(sql string) string {
	norm := strings.ToLower(strings.Join(strings.Fields(sql), " "))
	sum := sha256.Sum256([]byte(norm))
	return hex.EncodeToString(sum[:])
}

func randomSuffix() string {
	var b [4]byte
	_, _ = rand.Read(b[:]) // never fails
	return hex.EncodeToString(b[:])
}

// Create freezes the membership of a project's cohort. meta supplies Query,
// RowCount, SubjectCount, Columns and optionally CreatedAt (default now);
// QueryHash, the Has* flags and the counts are computed. persons and
// accessions yield the ids in strictly ascending byte order; a nil sequence
// records that list as null. At least one list must be present.
//
// The record is streamed to a private work directory, synced and renamed
// into place. If a record already exists Create returns ErrExists and leaves
// it untouched; if the record would exceed the size limit it returns
// ErrTooLarge. On any error nothing is left behind. Create returns the stored
// Meta.
func (s *Store) Create(projectID string, meta Meta, persons, accessions iter.Seq2[string, error]) (Meta, error) {
	if !s.Enabled() {
		return Meta{}, ErrDisabled
	}
	id, ok := CanonicalID(projectID)
	if !ok {
		return Meta{}, ErrInvalidID
	}
	if strings.TrimSpace(meta.Query) == "" {
		return Meta{}, errors.New("snapshot: create: the query is blank")
	}
	if persons == nil && accessions == nil {
		return Meta{}, errors.New("snapshot: create: a record needs person ids or accession ids")
	}
	if meta.RowCount < 0 || meta.SubjectCount < 0 {
		return Meta{}, errors.New("snapshot: create: counts must not be negative")
	}
	if !utf8.ValidString(meta.Query) {
		return Meta{}, errors.New("snapshot: create: the query is not valid UTF-8")
	}
	cols := make([]string, len(meta.Columns))
	for i, c := range meta.Columns {
		if !utf8.ValidString(c) {
			return Meta{}, errors.New("snapshot: create: a column name is not valid UTF-8")
		}
		cols[i] = c
	}
	meta.Columns = cols
	meta.QueryHash = QueryHash(meta.Query)
	meta.HasPersonIDs, meta.HasAccessionIDs = persons != nil, accessions != nil
	if meta.CreatedAt.IsZero() {
		meta.CreatedAt = s.now()
	}
	meta.CreatedAt = meta.CreatedAt.UTC().Truncate(time.Microsecond)

	target := filepath.Join(s.dir, id)
	if _, err := os.Lstat(target); err == nil {
		return Meta{}, ErrExists
	}
	if err := os.MkdirAll(s.dir, dirPerm); err != nil {
		return Meta{}, fmt.Errorf("snapshot: create: %w", err)
	}
	work := filepath.Join(s.dir, tmpPrefix+id+"-"+randomSuffix())
	if err := os.Mkdir(work, dirPerm); err != nil {
		return Meta{}, fmt.Errorf("snapshot: create: %w", err)
	}
	defer func() {
		if err := os.RemoveAll(work); err != nil {
			s.log.Warn("cohort snapshot store: cannot remove a work directory", "entry", filepath.Base(work), "error", err)
		}
	}()

	if err := s.writeRecord(filepath.Join(work, recordFile), &meta, persons, accessions); err != nil {
		if errors.Is(err, ErrTooLarge) {
			return Meta{}, ErrTooLarge
		}
		return Meta{}, fmt.Errorf("snapshot: create: %w", err)
	}
	if err := syncDir(work); err != nil {
		return Meta{}, fmt.Errorf("snapshot: create: %w", err)
	}
	if err := os.Rename(work, target); err != nil {
		if errors.Is(err, syscall.EEXIST) || errors.Is(err, syscall.ENOTEMPTY) {
			return Meta{}, ErrExists
		}
		return Meta{}, fmt.Errorf("snapshot: create: %w", err)
	}
	if err := syncDir(s.dir); err != nil {
		// The record is in place; only its durability across a crash is in
		// doubt.
		s.log.Warn("cohort snapshot store: cannot sync the directory", "dir", s.dir, "error", err)
	}
	return meta, nil
}

// writeRecord streams the record to path and syncs it.
func (s *Store) writeRecord(path string, meta *Meta, persons, accessions iter.Seq2[string, error]) (err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := f.Close(); err == nil && cerr != nil {
			err = cerr
		}
	}()
	w := &recordWriter{f: f, max: s.maxBytes, buf: make([]byte, 0, 64<<10)}
	if err := w.record(meta, persons, accessions); err != nil {
		return err
	}
	if err := w.flush(); err != nil {
		return err
	}
	return f.Sync()
}

// syncDir makes the entries of a directory durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && !errors.Is(err, syscall.EINVAL) {
		return err
	}
	return nil
}

// openRecord opens a project's record file.
func (s *Store) openRecord(projectID string) (*os.File, string, error) {
	if !s.Enabled() {
		return nil, "", ErrDisabled
	}
	id, ok := CanonicalID(projectID)
	if !ok {
		return nil, "", ErrInvalidID
	}
	f, err := os.Open(filepath.Join(s.dir, id, recordFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, id, ErrNotFound
	}
	if err != nil {
		return nil, id, fmt.Errorf("%w: project %s: %w", ErrUnreadable, id, err)
	}
	return f, id, nil
}

// Meta reads a project's record strictly, without its ids. It returns
// (nil, nil) when the store is disabled, the id is not a UUID or no record
// exists, and an error wrapping ErrUnreadable when a record exists but cannot
// be read, is not valid JSON, has another format_version or is malformed.
func (s *Store) Meta(projectID string) (*Meta, error) {
	f, id, err := s.openRecord(projectID)
	switch {
	case errors.Is(err, ErrDisabled), errors.Is(err, ErrInvalidID), errors.Is(err, ErrNotFound):
		return nil, nil
	case err != nil:
		return nil, err
	}
	defer f.Close()
	m, err := readRecord(f, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("%w: project %s: %w", ErrUnreadable, id, err)
	}
	return &m, nil
}

// IDs streams the ids of one list of a project's record to fn, in stored
// (ascending) order. The whole record is validated before the first call. It
// returns ErrDisabled, ErrInvalidID or ErrNotFound when there is no record,
// ErrNoList when the list is null, an error wrapping ErrUnreadable for a bad
// record, and fn's first error unchanged, which stops the stream.
func (s *Store) IDs(projectID string, kind Kind, fn func(id string) error) error {
	return s.stream(projectID, kind, nil, func(b []byte) error { return fn(string(b)) })
}

// LoadSet reads one list of a project's record into a sealed IDSet. Errors
// are those of IDs.
func (s *Store) LoadSet(projectID string, kind Kind) (*IDSet, error) {
	var set *IDSet
	err := s.stream(projectID, kind,
		func(m *Meta) { set = NewIDSet(int(m.count(kind))) },
		func(id []byte) error { set.addBytes(id); return nil })
	if err != nil {
		return nil, err
	}
	set.Seal()
	return set, nil
}

// stream validates a record in a first pass, calls start with its Meta, then
// streams the ids of one list to fn in a second pass over the same open file.
func (s *Store) stream(projectID string, kind Kind, start func(*Meta), fn func(id []byte) error) error {
	if kind != Persons && kind != Accessions {
		return fmt.Errorf("snapshot: unknown id list %v", kind)
	}
	f, id, err := s.openRecord(projectID)
	if err != nil {
		return err
	}
	defer f.Close()
	m, err := readRecord(f, 0, nil)
	if err != nil {
		return fmt.Errorf("%w: project %s: %w", ErrUnreadable, id, err)
	}
	if !m.has(kind) {
		return ErrNoList
	}
	if start != nil {
		start(&m)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("%w: project %s: %w", ErrUnreadable, id, err)
	}
	_, err = readRecord(f, kind, fn)
	var ve visitError
	if errors.As(err, &ve) {
		return ve.err
	}
	if err != nil {
		return fmt.Errorf("%w: project %s: %w", ErrUnreadable, id, err)
	}
	return nil
}

// Delete removes a project's record and reports whether one existed. It is
// idempotent: a disabled store, a non-UUID id or a missing record report
// false without error. The record is first renamed aside, so readers see it
// either whole or gone.
func (s *Store) Delete(projectID string) (bool, error) {
	if !s.Enabled() {
		return false, nil
	}
	id, ok := CanonicalID(projectID)
	if !ok {
		return false, nil
	}
	aside := filepath.Join(s.dir, delPrefix+id+"-"+randomSuffix())
	if err := os.Rename(filepath.Join(s.dir, id), aside); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil
		}
		return false, fmt.Errorf("snapshot: delete project %s: %w", id, err)
	}
	if err := syncDir(s.dir); err != nil {
		s.log.Warn("cohort snapshot store: cannot sync the directory", "dir", s.dir, "error", err)
	}
	if err := os.RemoveAll(aside); err != nil {
		// The record is already out of sight; Ensure removes the rest later.
		s.log.Warn("cohort snapshot store: cannot remove a deleted record", "entry", filepath.Base(aside), "error", err)
	}
	return true, nil
}
