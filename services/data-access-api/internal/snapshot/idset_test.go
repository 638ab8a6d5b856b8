package snapshot

import (
	"iter"
	"runtime"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestIDSet(t *testing.T) {
	t.Parallel()
	set := NewIDSet(4)
	for _, id := range []string{"ACC-2", "ACC-1", "ACC-2", "", "1"} {
		set.Add(id)
	}
	if set.Contains("ACC-1") {
		t.Error("an unsealed set must contain nothing")
	}
	set.Seal()
	if set.Len() != 4 {
		t.Errorf("Len = %d, want 4 distinct ids", set.Len())
	}
	for _, id := range []string{"ACC-1", "ACC-2", "", "1"} {
		if !set.Contains(id) {
			t.Errorf("member %q not found", id)
		}
	}
	for _, id := range []string{"ACC-3", "acc-1", "ACC-1 ", "01", "ACC"} {
		if set.Contains(id) {
			t.Errorf("non-member %q found", id)
		}
	}
	var none *IDSet
	if none.Contains("x") || none.Len() != 0 {
		t.Error("nil set is not empty")
	}
}

func TestIDSetLarge(t *testing.T) {
	t.Parallel()
	const n = 50_000
	set := NewIDSet(0)
	for i := 0; i < n; i += 2 { // even numbers only
		set.Add(strconv.Itoa(i))
	}
	set.Seal()
	if set.Len() != n/2 {
		t.Fatalf("Len = %d", set.Len())
	}
	var wg sync.WaitGroup
	var wrong atomic.Int64
	for w := range 4 { // sealed sets serve concurrent lookups
		wg.Go(func() {
			for i := w; i < n; i += 4 {
				if set.Contains(strconv.Itoa(i)) != (i%2 == 0) {
					wrong.Add(1)
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() != 0 {
		t.Errorf("%d wrong answers", wrong.Load())
	}
}

// personIDs yields n ids in ascending byte order without building them all.
func personIDs(n int) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		buf := make([]byte, 0, 16)
		for i := range n {
			buf = append(buf[:0], 'P')
			s := strconv.Itoa(i)
			for range 9 - len(s) {
				buf = append(buf, '0')
			}
			buf = append(buf, s...)
			if !yield(string(buf), nil) {
				return
			}
		}
	}
}

// TestLoadSetMemory checks that serving a million-member cohort never holds
// the ids as strings: reading the record into an IDSet must stay well below
// what a million Go strings would need (about 32 MiB of headers and bytes
// alone, before any slice or map).
func TestLoadSetMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a million-id record")
	}
	const n = 1_000_000
	s, _ := newStore(t)
	s.maxBytes = 0
	m := baseMeta()
	if _, err := s.Create(project, m, personIDs(n), nil); err != nil {
		t.Fatal(err)
	}

	defer debug.SetGCPercent(debug.SetGCPercent(25))
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base := ms.HeapAlloc

	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	start := time.Now()
	set, err := s.LoadSet(project, Persons)
	elapsed := time.Since(start)
	close(stop)
	<-done
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	retained := int64(ms.HeapAlloc) - int64(base)
	growth := int64(peak.Load()) - int64(base)
	t.Logf("LoadSet of %d ids: %v, peak heap growth %.1f MiB, retained %.1f MiB", n, elapsed, float64(growth)/(1<<20), float64(retained)/(1<<20))

	const limit = 40 << 20
	if growth > limit {
		t.Errorf("peak heap growth %.1f MiB exceeds 40 MiB", float64(growth)/(1<<20))
	}
	if retained > 20<<20 {
		t.Errorf("the set retains %.1f MiB for %d ids, want about 16 bytes per id", float64(retained)/(1<<20), n)
	}
	if set.Len() != n || !set.Contains("P000000000") || !set.Contains("P000999999") || set.Contains("P001000000") {
		t.Errorf("set of %d ids has wrong members", set.Len())
	}
	runtime.KeepAlive(set)
}
