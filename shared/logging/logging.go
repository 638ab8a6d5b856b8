// Package logging builds the trust node's structured logger: log/slog JSON
// lines on a writer (stdout in production), passed through a redacting
// handler, and optionally pushed to Loki.
//
// Redaction: an attribute whose key names a secret or personal identifier
// (key, token, secret, password, authorization, cookie, api_key, email,
// patient, mrn, ...) has its value replaced by "[REDACTED]"; an attribute
// named sql or query (or *_sql, *_query) carries only QueryHash of its text;
// in every other string, and in the message, email addresses, Bearer/Basic
// credentials, JWTs, URL passwords and "password=..." assignments are masked.
//
// Loki: with Options.LokiURL set, every line is also put on a bounded queue
// that one goroutine drains into github.com/grafana/loki-client-go. A full
// queue drops the line and counts it in flip_log_lines_dropped_total; a down
// or slow Loki never blocks a log call.
package logging

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

// Options configures New.
type Options struct {
	// Level is the minimum level written.
	Level slog.Level
	// Service and Version are added to every line (and Service as a Loki label).
	Service string
	Version string
	// LokiURL enables pushing; a URL with no path gets /loki/api/v1/push.
	LokiURL string
	// LokiQueueSize bounds the lines waiting for Loki; <= 0 means DefaultLokiQueueSize.
	LokiQueueSize int
	// LokiLabels are added to every Loki stream (low-cardinality values only).
	LokiLabels map[string]string
}

// DefaultLokiQueueSize is the queue bound used when Options.LokiQueueSize is unset.
const DefaultLokiQueueSize = 4096

// DroppedMetric is the name of the counter of lines not delivered to Loki.
const DroppedMetric = "flip_log_lines_dropped_total"

// Logger owns a slog.Logger and, when Loki is enabled, the goroutine that
// pushes to it. Slog and Dropped are safe for concurrent use; Close stops the
// pusher and may be called more than once.
type Logger struct {
	slog    *slog.Logger
	level   *slog.LevelVar
	pusher  *pusher
	dropped *dropCounter
}

// New builds a Logger writing JSON lines to w (nil: os.Stdout). The drop
// counter is registered on reg when reg is not nil (an identical counter
// already there is reused). It fails on an invalid LokiURL or label name, or
// when the counter conflicts with another metric on reg.
func New(w io.Writer, opts Options, reg prometheus.Registerer) (*Logger, error) {
	if w == nil {
		w = os.Stdout
	}
	out := &lockedWriter{w: w}
	level := new(slog.LevelVar)
	level.Set(opts.Level)

	dc, err := newDropCounter(reg)
	if err != nil {
		return nil, err
	}
	l := &Logger{level: level, dropped: dc}

	var sink io.Writer = out
	if opts.LokiURL != "" {
		internal := slog.New(NewRedactingHandler(slog.NewJSONHandler(out, &slog.HandlerOptions{Level: level}))).
			With("component", "loki-push")
		p, err := newPusher(opts, dc, internal)
		if err != nil {
			return nil, err
		}
		l.pusher = p
		sink = &teeWriter{w: out, p: p}
	}

	logger := slog.New(NewRedactingHandler(slog.NewJSONHandler(sink, &slog.HandlerOptions{Level: level})))
	var base []any
	if opts.Service != "" {
		base = append(base, "service", opts.Service)
	}
	if opts.Version != "" {
		base = append(base, "version", opts.Version)
	}
	l.slog = logger.With(base...)
	return l, nil
}

// Slog returns the logger to inject into the rest of the service.
func (l *Logger) Slog() *slog.Logger { return l.slog }

// SetLevel changes the minimum level at run time.
func (l *Logger) SetLevel(level slog.Level) { l.level.Set(level) }

// Dropped returns how many lines this Logger failed to hand to Loki (queue
// full, or logged after Close).
func (l *Logger) Dropped() uint64 { return l.dropped.n.Load() }

// Close flushes queued lines to Loki and stops the pusher. It returns when
// that is done or when ctx ends, whichever is first (then with ctx's error);
// in the latter case the pusher abandons the queue and its goroutine ends once
// the Loki client's bounded retries run out. Without Loki it returns nil.
func (l *Logger) Close(ctx context.Context) error {
	if l.pusher == nil {
		return nil
	}
	return l.pusher.close(ctx)
}

// Discard returns a logger that writes nothing, for tests.
func Discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// ParseLevel maps LOG_LEVEL text to a level: debug, info, warn/warning,
// error, critical/fatal (as error), any case; "" is info. slog's own forms
// such as "INFO+2" are accepted too.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "", "info":
		return slog.LevelInfo, nil
	case "debug":
		return slog.LevelDebug, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error", "critical", "fatal":
		return slog.LevelError, nil
	}
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.TrimSpace(s))); err != nil {
		return slog.LevelInfo, fmt.Errorf("unknown log level %q (want debug, info, warning or error)", s)
	}
	return l, nil
}

// lockedWriter serialises writes from the handlers that share one writer.
type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (lw *lockedWriter) Write(p []byte) (int, error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.w.Write(p)
}

// teeWriter writes each line and offers a copy to the Loki queue. slog's
// JSON handler writes one whole line per Write call.
type teeWriter struct {
	w io.Writer
	p *pusher
}

func (t *teeWriter) Write(b []byte) (int, error) {
	t.p.offer(b)
	return t.w.Write(b)
}

// dropCounter counts undelivered lines for Dropped and for Prometheus.
type dropCounter struct {
	n       atomic.Uint64
	counter prometheus.Counter
}

func newDropCounter(reg prometheus.Registerer) (*dropCounter, error) {
	c := prometheus.NewCounter(prometheus.CounterOpts{
		Name: DroppedMetric,
		Help: "Log lines not delivered to Loki because the push queue was full or closed.",
	})
	if reg != nil {
		if err := reg.Register(c); err != nil {
			var are prometheus.AlreadyRegisteredError
			existing, ok := prometheus.Collector(nil), false
			if errors.As(err, &are) {
				existing = are.ExistingCollector
				_, ok = existing.(prometheus.Counter)
			}
			if !ok {
				return nil, fmt.Errorf("register %s: %w", DroppedMetric, err)
			}
			c = existing.(prometheus.Counter)
		}
	}
	return &dropCounter{counter: c}, nil
}

func (d *dropCounter) inc() {
	d.n.Add(1)
	d.counter.Inc()
}
