package ledger

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func record(i int) Record {
	size, sum := Digest(fmt.Appendf(nil, "body %d", i))
	return Record{Channel: "cohort_results", TaskID: fmt.Sprintf("task-%d", i), Project: "p1", Kind: KindCohortResults,
		Size: size, SHA256: sum, Rules: []string{"floor:10"}, ApprovedBy: "alice"}
}

// fill writes n entries to a new ledger in a fresh directory.
func fill(t *testing.T, n int, opts Options) string {
	t.Helper()
	dir := t.TempDir()
	l, err := Open(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= n; i++ {
		if _, err := l.Append(record(i)); err != nil {
			t.Fatal(err)
		}
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	return dir
}

func lines(t *testing.T, path string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.SplitAfter(raw, []byte("\n"))[:bytes.Count(raw, []byte("\n"))]
}

func write(t *testing.T, path string, ls [][]byte) {
	t.Helper()
	if err := os.WriteFile(path, bytes.Join(ls, nil), 0o600); err != nil {
		t.Fatal(err)
	}
}

func wantCorrupt(t *testing.T, dir string, entry uint64, reason string) {
	t.Helper()
	_, err := Verify(dir)
	var ce *CorruptError
	if !errors.As(err, &ce) {
		t.Fatalf("Verify = %v, want a *CorruptError", err)
	}
	if ce.Entry != entry || !strings.Contains(ce.Reason, reason) {
		t.Fatalf("Verify = %v, want entry %d with %q", err, entry, reason)
	}
}

func TestVerifyIntact(t *testing.T) {
	t.Parallel()
	dir := fill(t, 5, Options{})
	s, err := Verify(dir)
	if err != nil || s.Entries != 5 || s.Last.Seq != 5 {
		t.Fatalf("Verify = %+v, %v", s, err)
	}
}

func TestVerifyFindsTampering(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		tamper func([][]byte) [][]byte
		entry  uint64
		reason string
	}{
		{"one byte edited in entry 4", func(ls [][]byte) [][]byte {
			i := bytes.Index(ls[3], []byte(`"project":"p1"`))
			ls[3][i+len(`"project":"p`)] = '7'
			return ls
		}, 4, "hash mismatch"},
		{"approver edited in entry 2 keeping JSON valid", func(ls [][]byte) [][]byte {
			ls[1] = bytes.Replace(ls[1], []byte(`"alice"`), []byte(`"alicf"`), 1)
			return ls
		}, 2, "hash mismatch"},
		{"whitespace added to entry 5", func(ls [][]byte) [][]byte {
			ls[4] = bytes.Replace(ls[4], []byte(`,"kind"`), []byte(`, "kind"`), 1)
			return ls
		}, 5, "canonical"},
		{"entry 3 deleted", func(ls [][]byte) [][]byte {
			return append(ls[:2:2], ls[3:]...)
		}, 3, "missing"},
		{"last entry deleted", func(ls [][]byte) [][]byte { return ls[:5] }, 0, ""},
		{"entries 3 and 4 swapped", func(ls [][]byte) [][]byte {
			ls[2], ls[3] = ls[3], ls[2]
			return ls
		}, 3, "out of order"},
		{"entry 2 deleted and the rest renumbered", func(ls [][]byte) [][]byte {
			out := [][]byte{ls[0]}
			for i, l := range ls[2:] {
				out = append(out, bytes.Replace(l, fmt.Appendf(nil, `{"seq":%d,`, i+3), fmt.Appendf(nil, `{"seq":%d,`, i+2), 1))
			}
			return out
		}, 2, "prev does not match"},
		{"last line truncated", func(ls [][]byte) [][]byte {
			ls[5] = ls[5][:len(ls[5])/2]
			return ls
		}, 6, "truncated"},
		{"first entry deleted", func(ls [][]byte) [][]byte { return ls[1:] }, 1, "starts at seq 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := fill(t, 6, Options{})
			path := filepath.Join(dir, CurrentFile)
			write(t, path, tc.tamper(lines(t, path)))
			if tc.entry == 0 {
				// Cutting the tail off leaves a valid, shorter chain: the
				// entry count is the evidence, as Summary reports it.
				s, err := Verify(dir)
				if err != nil || s.Entries != 5 {
					t.Fatalf("Verify = %+v, %v", s, err)
				}
				return
			}
			wantCorrupt(t, dir, tc.entry, tc.reason)
		})
	}
}

func TestRotationKeepsTheChain(t *testing.T) {
	t.Parallel()
	one := len(lines(t, filepath.Join(fill(t, 1, Options{}), CurrentFile))[0])
	dir := fill(t, 10, Options{MaxBytes: int64(3*one + 10)}) // three entries a file
	files, err := Files(dir)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{}
	for _, f := range files {
		names = append(names, filepath.Base(f))
	}
	want := []string{RotatedName(1), RotatedName(4), RotatedName(7), CurrentFile}
	if strings.Join(names, " ") != strings.Join(want, " ") {
		t.Fatalf("files = %v, want %v", names, want)
	}
	s, err := Verify(dir)
	if err != nil || s.Entries != 10 || s.Files != 4 {
		t.Fatalf("Verify = %+v, %v", s, err)
	}

	// Reopen continues the chain in the current file.
	l, err := Open(dir, Options{MaxBytes: int64(3*one + 10)})
	if err != nil {
		t.Fatal(err)
	}
	e, err := l.Append(record(11))
	if err != nil || e.Seq != 11 || e.Prev != s.Last.Hash {
		t.Fatalf("append after reopen = %+v, %v (last hash %s)", e, err, s.Last.Hash)
	}
	_ = l.Close()
	if s, err := Verify(dir); err != nil || s.Entries != 11 {
		t.Fatalf("Verify after reopen = %+v, %v", s, err)
	}

	// A removed rotated file breaks the chain where it was.
	if err := os.Remove(filepath.Join(dir, RotatedName(4))); err != nil {
		t.Fatal(err)
	}
	wantCorrupt(t, dir, 4, "entries 4..6 are missing")
}

func TestOpenAfterRotationBeforeNewFile(t *testing.T) {
	t.Parallel()
	// A crash between the rename and the next append leaves only rotated
	// files; the chain continues from the last of them.
	dir := fill(t, 3, Options{})
	if err := os.Rename(filepath.Join(dir, CurrentFile), filepath.Join(dir, RotatedName(1))); err != nil {
		t.Fatal(err)
	}
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if e, err := l.Append(record(4)); err != nil || e.Seq != 4 {
		t.Fatalf("append = %+v, %v", e, err)
	}
	_ = l.Close()
	if s, err := Verify(dir); err != nil || s.Entries != 4 {
		t.Fatalf("Verify = %+v, %v", s, err)
	}
}

func TestOpenRefusesCorruptTail(t *testing.T) {
	t.Parallel()
	for name, tamper := range map[string]func([]byte) []byte{
		"truncated": func(b []byte) []byte { return b[:len(b)-7] },
		"edited":    func(b []byte) []byte { return bytes.Replace(b, []byte(`"task-3"`), []byte(`"task-9"`), 1) },
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			dir := fill(t, 3, Options{})
			path := filepath.Join(dir, CurrentFile)
			raw, _ := os.ReadFile(path)
			if err := os.WriteFile(path, tamper(raw), 0o600); err != nil {
				t.Fatal(err)
			}
			if _, err := Open(dir, Options{}); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Open = %v, want ErrCorrupt", err)
			}
		})
	}
}

func TestOneWriter(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if _, err := Open(dir, Options{}); err == nil {
		t.Fatal("a second Open of the same ledger succeeded")
	}
}

func TestConcurrentAppend(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := Open(dir, Options{MaxBytes: 4 << 10})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 10 {
				if _, err := l.Append(record(g*100 + i)); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	_ = l.Close()
	if s, err := Verify(dir); err != nil || s.Entries != 80 || s.Files < 2 {
		t.Fatalf("Verify = %+v, %v", s, err)
	}
}

func TestSelectAndShow(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	clock := now
	dir := t.TempDir()
	l, err := Open(dir, Options{Now: func() time.Time { clock = clock.Add(time.Hour); return clock }})
	if err != nil {
		t.Fatal(err)
	}
	for i := 1; i <= 4; i++ {
		r := record(i)
		if i%2 == 0 {
			r.Channel, r.Kind, r.Project = "task_result", KindTaskResult, "p2"
		}
		if _, err := l.Append(r); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.Close()
	since, err := ParseSince("2026-03-01T14:30:00Z", now)
	if err != nil {
		t.Fatal(err)
	}
	got, err := Select(dir, Filter{Project: "p2", Since: since})
	if err != nil || len(got) != 1 || got[0].Seq != 4 {
		t.Fatalf("Select = %+v, %v", got, err)
	}
	if d, err := ParseSince("90m", now); err != nil || !d.Equal(now.Add(-90*time.Minute)) {
		t.Fatalf("ParseSince(90m) = %v, %v", d, err)
	}
	if _, err := ParseSince("yesterday", now); err == nil {
		t.Fatal("ParseSince accepted yesterday")
	}
	var buf bytes.Buffer
	all, _ := Select(dir, Filter{Channel: "cohort_results"})
	if err := Show(&buf, all); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	if !strings.HasPrefix(out, "SEQ") || strings.Count(out, "\n") != 3 || !strings.Contains(out, "task-3") || strings.Contains(out, "task-2") {
		t.Fatalf("Show =\n%s", out)
	}
}
