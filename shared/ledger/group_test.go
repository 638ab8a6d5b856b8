package ledger

import (
	"errors"
	"os"
	"runtime"
	"sync"
	"testing"
)

// Appends made while an fsync is under way wait for a later one and share
// it; each returns only after an fsync that covers its line, and the chain
// verifies.
func TestConcurrentAppendsShareOneFsync(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var (
		mu     sync.Mutex
		syncs  int
		inSync = make(chan struct{})
		resume = make(chan struct{})
	)
	l.syncFile = func(f *os.File) error {
		mu.Lock()
		syncs++
		first := syncs == 1
		mu.Unlock()
		if first {
			close(inSync)
			<-resume
		}
		return f.Sync()
	}
	const waiting = 10
	done := make(chan uint64, waiting+1)
	go func() {
		e, err := l.Append(record(0))
		if err != nil {
			t.Error(err)
		}
		done <- e.Seq
	}()
	<-inSync // the first append is fsyncing, without the lock
	for i := 1; i <= waiting; i++ {
		go func() {
			e, err := l.Append(record(i))
			if err != nil {
				t.Error(err)
			}
			done <- e.Seq
		}()
	}
	for l.Last().Seq != waiting+1 { // every line is written behind the fsync
		runtime.Gosched()
	}
	select {
	case seq := <-done:
		t.Fatalf("append %d returned before its line was fsynced", seq)
	default:
	}
	close(resume)
	seen := map[uint64]bool{}
	for range waiting + 1 {
		seen[<-done] = true
	}
	if len(seen) != waiting+1 {
		t.Fatalf("seqs returned: %v", seen)
	}
	mu.Lock()
	n := syncs
	mu.Unlock()
	if n != 2 {
		t.Fatalf("%d fsyncs for %d appends, want 2 (one, then one shared by the rest)", n, waiting+1)
	}
	_ = l.Close()
	if s, err := Verify(dir); err != nil || s.Entries != waiting+1 {
		t.Fatalf("Verify = %+v, %v", s, err)
	}
}

// A failed fsync closes the ledger: the appends it covered fail, and so
// does every later one, until the ledger is opened again.
func TestFailedFsyncClosesTheLedger(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(record(1)); err != nil {
		t.Fatal(err)
	}
	errDisk := errors.New("disk gone")
	l.syncFile = func(*os.File) error { return errDisk }
	if _, err := l.Append(record(2)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append with a failing fsync = %v, want ErrClosed", err)
	}
	l.syncFile = (*os.File).Sync
	if _, err := l.Append(record(3)); !errors.Is(err, ErrClosed) {
		t.Fatalf("Append after a failed fsync = %v, want ErrClosed", err)
	}
	_ = l.Close()
	l, err = Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	e, err := l.Append(record(4))
	if err != nil {
		t.Fatal(err)
	}
	if e.Seq != 3 { // the line whose fsync failed was written; it is kept and chained
		t.Fatalf("seq after reopen = %d, want 3", e.Seq)
	}
	if _, err := Verify(dir); err != nil {
		t.Fatal(err)
	}
}
