package ledger

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// Summary describes a ledger that verified.
type Summary struct {
	Files   int
	Entries uint64
	Last    Entry
}

// Verify walks every file of the ledger in dir in chain order and checks
// each entry: its line is complete and canonical, its seq is the next one,
// its prev is the previous entry's hash and its hash is right; a rotated
// file's name matches its first entry. It returns a *CorruptError for the
// first bad entry found (a modified entry is a hash mismatch at its seq; a
// deleted, reordered or missing-file gap is a seq or prev mismatch at the
// position where the chain breaks), or another error when dir cannot be read.
func Verify(dir string) (Summary, error) {
	var s Summary
	err := walk(dir, true, func(e Entry) error {
		s.Entries++
		s.Last = e
		return nil
	}, &s.Files)
	return s, err
}

// Walk calls fn for every entry in chain order without checking the chain
// (use Verify for that); it stops at fn's first error and returns it. A line
// that does not parse ends the walk with a *CorruptError.
func Walk(dir string, fn func(Entry) error) error {
	return walk(dir, false, fn, nil)
}

func walk(dir string, check bool, fn func(Entry) error, nfiles *int) error {
	files, err := Files(dir)
	if err != nil {
		return err
	}
	if nfiles != nil {
		*nfiles = len(files)
	}
	want := uint64(1)
	prev := ZeroHash
	for _, path := range files {
		name := filepath.Base(path)
		entries, rerr := readFile(path)
		var ce *CorruptError
		if rerr != nil && !errors.As(rerr, &ce) {
			return rerr
		}
		if check && len(entries) > 0 && name != CurrentFile {
			if seq, _ := rotatedSeq(name); seq != entries[0].Seq {
				return &CorruptError{File: name, Line: 1, Entry: want,
					Reason: fmt.Sprintf("file is named for seq %d but starts at seq %d", seq, entries[0].Seq)}
			}
		}
		for _, e := range entries {
			if check {
				if err := checkEntry(name, e, want, prev); err != nil {
					return err
				}
			}
			if err := fn(e.Entry); err != nil {
				return err
			}
			want, prev = e.Seq+1, e.Hash
		}
		if ce != nil {
			ce.Entry = want
			return ce
		}
	}
	return nil
}

func checkEntry(file string, e line, want uint64, prev string) error {
	bad := func(format string, args ...any) error {
		return &CorruptError{File: file, Line: e.line, Entry: want, Reason: fmt.Sprintf(format, args...)}
	}
	switch {
	case e.Seq != want && want == 1:
		return bad("ledger starts at seq %d, want 1 (earlier entries or files are missing)", e.Seq)
	case e.Seq > want:
		return bad("seq %d, want %d: entries %d..%d are missing or out of order", e.Seq, want, want, e.Seq-1)
	case e.Seq < want:
		return bad("seq %d, want %d: entry repeated or out of order", e.Seq, want)
	case e.Prev != prev:
		return bad("prev does not match the hash of entry %d: an entry was changed, removed or reordered", want-1)
	case ComputeHash(e.Entry) != e.Hash:
		return bad("hash mismatch: the entry was modified")
	}
	canon, _ := json.Marshal(e.Entry)
	if !bytes.Equal(canon, e.raw) {
		return bad("line is not in canonical form: the entry was modified")
	}
	return nil
}

// Filter selects entries for Show; zero fields select everything.
type Filter struct {
	Project string
	Channel string
	Kind    string
	Since   time.Time
}

// Match reports whether e passes f.
func (f Filter) Match(e Entry) bool {
	return (f.Project == "" || e.Project == f.Project) &&
		(f.Channel == "" || e.Channel == f.Channel) &&
		(f.Kind == "" || e.Kind == f.Kind) &&
		(f.Since.IsZero() || !e.Time.Before(f.Since))
}

// Select returns the entries of the ledger in dir that pass f, in order.
func Select(dir string, f Filter) ([]Entry, error) {
	var out []Entry
	err := Walk(dir, func(e Entry) error {
		if f.Match(e) {
			out = append(out, e)
		}
		return nil
	})
	return out, err
}

// ParseSince reads a --since value: an RFC 3339 time, or a duration back
// from now ("24h").
func ParseSince(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q is neither an RFC 3339 time nor a duration", s)
}

// Show writes entries as an aligned table.
func Show(w io.Writer, entries []Entry) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SEQ\tTIME\tCHANNEL\tKIND\tTASK\tPROJECT\tSIZE\tSHA256\tAPPROVED BY\tRULES")
	for _, e := range entries {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%s\t%s\n", e.Seq, e.Time.UTC().Format(time.RFC3339),
			e.Channel, e.Kind, dash(e.TaskID), dash(e.Project), e.Size, short(e.SHA256), dash(e.ApprovedBy), dash(strings.Join(e.Rules, ",")))
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func short(h string) string {
	if len(h) > 12 {
		return h[:12]
	}
	return h
}
