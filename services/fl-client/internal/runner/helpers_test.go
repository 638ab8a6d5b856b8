package runner

import (
	"bytes"
	"fmt"
	"strings"
	"sync"
)

// lineRecorder is a Spec.Log that checks the runners' promise: one whole
// line per Write, never concurrently.
type lineRecorder struct {
	mu     sync.Mutex
	busy   bool
	ls     []string
	broken []string
}

func (r *lineRecorder) Write(p []byte) (int, error) {
	r.mu.Lock()
	if r.busy {
		r.broken = append(r.broken, "concurrent Write")
	}
	r.busy = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		r.busy = false
		r.mu.Unlock()
	}()
	if !bytes.HasSuffix(p, []byte("\n")) || bytes.Count(p, []byte("\n")) != 1 {
		r.mu.Lock()
		r.broken = append(r.broken, fmt.Sprintf("write of %q is not one line", p))
		r.mu.Unlock()
	}
	r.mu.Lock()
	r.ls = append(r.ls, strings.TrimSuffix(string(p), "\n"))
	r.mu.Unlock()
	return len(p), nil
}

func (r *lineRecorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.ls...)
}

func (r *lineRecorder) problems() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.broken...)
}

func (r *lineRecorder) has(line string) bool {
	for _, l := range r.lines() {
		if l == line {
			return true
		}
	}
	return false
}
