package runner

import (
	"bytes"
	"io"
	"sync"
	"sync/atomic"
)

// maxLine is the longest log line passed on whole; longer ones are cut into
// pieces of this size.
const maxLine = 16 << 10

// logSink receives a job's output from one or more streams, passes it on as
// whole lines and watches each line for a GPU out-of-memory report.
type logSink struct {
	mu     sync.Mutex
	w      io.Writer
	failed bool // w returned an error: further lines are dropped
	oom    atomic.Bool
}

func newLogSink(w io.Writer) *logSink {
	if w == nil {
		w = io.Discard
	}
	return &logSink{w: w}
}

func (s *logSink) line(b []byte) {
	if ReportsOOM(b) {
		s.oom.Store(true)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.failed {
		return
	}
	out := make([]byte, 0, len(b)+1)
	out = append(append(out, b...), '\n')
	if _, err := s.w.Write(out); err != nil {
		s.failed = true // the job must not stall on a broken log
	}
}

// sawOOM reports whether any line so far reported a GPU out of memory.
func (s *logSink) sawOOM() bool { return s.oom.Load() }

// stream returns a writer for one of the job's output streams. Its writes
// may be arbitrary pieces; Flush passes on a last unterminated line.
func (s *logSink) stream() *lineWriter { return &lineWriter{sink: s} }

// lineWriter splits one stream into lines. It is used by one goroutine.
type lineWriter struct {
	sink *logSink
	buf  []byte
}

// Write buffers p and passes on every complete line. It never fails, so
// that a job's output is always drained.
func (w *lineWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			w.buf = append(w.buf, p...)
			for len(w.buf) >= maxLine {
				w.sink.line(w.buf[:maxLine])
				w.buf = append(w.buf[:0], w.buf[maxLine:]...)
			}
			break
		}
		line := p[:i]
		if len(w.buf) > 0 {
			line = append(w.buf, line...)
		}
		for len(line) > maxLine {
			w.sink.line(line[:maxLine])
			line = line[maxLine:]
		}
		w.sink.line(bytes.TrimSuffix(line, []byte{'\r'}))
		w.buf = w.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

// Flush passes on a last line that had no newline.
func (w *lineWriter) Flush() {
	if len(w.buf) > 0 {
		w.sink.line(w.buf)
		w.buf = w.buf[:0]
	}
}
