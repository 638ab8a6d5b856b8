package logging

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"regexp"
	"sync"
	"time"

	"github.com/grafana/loki-client-go/loki"
	"github.com/prometheus/common/model"
)

// Loki client tuning: small enough that a dead Loki releases the pusher
// within seconds, so shutdown stays bounded.
const (
	lokiPushPath   = "/loki/api/v1/push"
	lokiBatchWait  = time.Second
	lokiTimeout    = 5 * time.Second
	lokiMinBackoff = 100 * time.Millisecond
	lokiMaxBackoff = 2 * time.Second
	lokiMaxRetries = 3
)

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

type lokiLine struct {
	at   time.Time
	text string
}

// pusher moves lines from a bounded queue into the Loki client. offer never
// blocks; one goroutine (run) owns the client and ends after close.
type pusher struct {
	client  *loki.Client
	labels  model.LabelSet
	queue   chan lokiLine
	dropped *dropCounter

	stop      chan struct{} // closed by close: flush and finish
	abandon   chan struct{} // closed when close's ctx ends: stop flushing
	done      chan struct{} // closed when run has returned
	stopOnce  sync.Once
	abandonMu sync.Once
}

// LokiPushURL returns the push endpoint for raw: a URL without a path gets
// /loki/api/v1/push; a URL with a path is used as given.
func LokiPushURL(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("loki url is not a valid URL")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("loki url must be an absolute http(s) URL, got scheme %q", u.Scheme)
	}
	if u.Path == "" || u.Path == "/" {
		u.Path = lokiPushPath
	}
	return u.String(), nil
}

func newPusher(opts Options, dc *dropCounter, internal *slog.Logger) (*pusher, error) {
	pushURL, err := LokiPushURL(opts.LokiURL)
	if err != nil {
		return nil, err
	}
	labels := model.LabelSet{}
	if opts.Service != "" {
		labels["service"] = model.LabelValue(opts.Service)
	}
	for k, v := range opts.LokiLabels {
		if !labelName.MatchString(k) {
			return nil, fmt.Errorf("loki label name %q is invalid", k)
		}
		labels[model.LabelName(k)] = model.LabelValue(v)
	}
	if len(labels) == 0 {
		labels["service"] = "unknown"
	}

	cfg, err := loki.NewDefaultConfig(pushURL)
	if err != nil {
		return nil, fmt.Errorf("loki client config: %w", err)
	}
	cfg.BatchWait = lokiBatchWait
	cfg.Timeout = lokiTimeout
	cfg.BackoffConfig.MinBackoff = lokiMinBackoff
	cfg.BackoffConfig.MaxBackoff = lokiMaxBackoff
	cfg.BackoffConfig.MaxRetries = lokiMaxRetries
	client, err := loki.NewWithLogger(cfg, kitLogger{l: internal})
	if err != nil {
		return nil, fmt.Errorf("loki client: %w", err)
	}

	size := opts.LokiQueueSize
	if size <= 0 {
		size = DefaultLokiQueueSize
	}
	p := &pusher{
		client:  client,
		labels:  labels,
		queue:   make(chan lokiLine, size),
		dropped: dc,
		stop:    make(chan struct{}),
		abandon: make(chan struct{}),
		done:    make(chan struct{}),
	}
	go p.run()
	return p, nil
}

// offer queues a copy of line without ever blocking.
func (p *pusher) offer(line []byte) {
	select {
	case <-p.stop:
		p.dropped.inc()
		return
	default:
	}
	n := len(line)
	if n > 0 && line[n-1] == '\n' {
		n--
	}
	select {
	case p.queue <- lokiLine{at: time.Now(), text: string(line[:n])}:
	default:
		p.dropped.inc()
	}
}

func (p *pusher) run() {
	defer close(p.done)
	defer p.client.Stop() // sends what the client has batched, within its retry bound
	for {
		select {
		case l := <-p.queue:
			p.handle(l)
		case <-p.stop:
			for {
				select {
				case <-p.abandon:
					p.dropQueued()
					return
				case l := <-p.queue:
					p.handle(l)
				default:
					return
				}
			}
		}
	}
}

func (p *pusher) handle(l lokiLine) {
	// Handle blocks while the client is busy sending; that is why it runs
	// here and not in the log call.
	_ = p.client.Handle(p.labels, l.at, l.text)
}

func (p *pusher) dropQueued() {
	for {
		select {
		case <-p.queue:
			p.dropped.inc()
		default:
			return
		}
	}
}

func (p *pusher) close(ctx context.Context) error {
	p.stopOnce.Do(func() { close(p.stop) })
	select {
	case <-p.done:
		return nil
	case <-ctx.Done():
		p.abandonMu.Do(func() { close(p.abandon) })
		return fmt.Errorf("flush logs to loki: %w", ctx.Err())
	}
}

// kitLogger adapts the Loki client's go-kit logging to slog, keeping
// warnings and errors (retries, failed batches) and dropping debug chatter.
type kitLogger struct{ l *slog.Logger }

func (k kitLogger) Log(keyvals ...any) error {
	level := slog.LevelInfo
	msg := "loki client"
	var attrs []any
	for i := 0; i+1 < len(keyvals); i += 2 {
		key := fmt.Sprint(keyvals[i])
		val := keyvals[i+1]
		switch key {
		case "level":
			switch fmt.Sprint(val) {
			case "error":
				level = slog.LevelError
			case "warn":
				level = slog.LevelWarn
			case "debug":
				level = slog.LevelDebug
			}
		case "msg":
			msg = "loki client: " + fmt.Sprint(val)
		default:
			if err, ok := val.(error); ok {
				val = err.Error()
			}
			attrs = append(attrs, key, val)
		}
	}
	if level < slog.LevelWarn {
		return nil
	}
	k.l.Log(context.Background(), level, msg, attrs...)
	return nil
}
