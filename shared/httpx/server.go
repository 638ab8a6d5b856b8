// Package httpx is the HTTP server and client base shared by the trust node's
// services: a chi router with request ids, panic recovery, a body size limit,
// Prometheus metrics and an access log; /health, /ready and /metrics; graceful
// shutdown in which readiness flips to 503 before the listener drains; a JSON
// handler wrapper that maps typed errors to status codes; and the -health probe
// used by container healthchecks.
package httpx

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config holds a server's address, timeouts and limits.
type Config struct {
	// Addr is the listen address; ":0" picks a free port (see Server.Listen).
	Addr string
	// ReadHeaderTimeout, ReadTimeout, WriteTimeout and IdleTimeout are the
	// http.Server timeouts; zero values are replaced by DefaultConfig's.
	ReadHeaderTimeout, ReadTimeout, WriteTimeout, IdleTimeout time.Duration
	// ShutdownGrace bounds http.Server.Shutdown once draining is over.
	ShutdownGrace time.Duration
	// DrainDelay is how long /ready answers 503 before Shutdown starts, so
	// load balancers stop sending new requests first.
	DrainDelay time.Duration
	// MaxBodyBytes limits every request body; larger bodies get 413.
	MaxBodyBytes int64
}

// Defaults used by DefaultConfig and for zero fields.
const (
	DefaultReadHeaderTimeout = 5 * time.Second
	DefaultReadTimeout       = 30 * time.Second
	DefaultWriteTimeout      = 60 * time.Second
	DefaultIdleTimeout       = 120 * time.Second
	DefaultShutdownGrace     = 20 * time.Second
	DefaultDrainDelay        = 2 * time.Second
	DefaultMaxBodyBytes      = 16 << 20
)

// DefaultConfig returns a Config for addr with the package defaults.
func DefaultConfig(addr string) Config {
	return Config{
		Addr:              addr,
		ReadHeaderTimeout: DefaultReadHeaderTimeout,
		ReadTimeout:       DefaultReadTimeout,
		WriteTimeout:      DefaultWriteTimeout,
		IdleTimeout:       DefaultIdleTimeout,
		ShutdownGrace:     DefaultShutdownGrace,
		DrainDelay:        DefaultDrainDelay,
		MaxBodyBytes:      DefaultMaxBodyBytes,
	}
}

// withDefaults fills zero timeouts and limits; a zero DrainDelay stays zero.
func (c Config) withDefaults() Config {
	d := DefaultConfig(c.Addr)
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = d.ReadHeaderTimeout
	}
	if c.ReadTimeout <= 0 {
		c.ReadTimeout = d.ReadTimeout
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = d.WriteTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = d.IdleTimeout
	}
	if c.ShutdownGrace <= 0 {
		c.ShutdownGrace = d.ShutdownGrace
	}
	if c.DrainDelay < 0 {
		c.DrainDelay = 0
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = d.MaxBodyBytes
	}
	return c
}

// HealthFunc reports a service's health for /health: the status code and a
// JSON-encodable body. It must honour ctx and be safe for concurrent use.
type HealthFunc func(ctx context.Context) (status int, body any)

// Server is an HTTP server with the trust node's common middleware and probe
// endpoints. Router, SetReady and Listen may be called from any goroutine;
// Run is called once.
type Server struct {
	cfg    Config
	logger *slog.Logger
	reg    *prometheus.Registry
	health HealthFunc
	root   chi.Router
	router chi.Router
	srv    *http.Server

	mu          sync.Mutex
	ready       bool
	readyReason string
	ln          net.Listener
}

// NewServer builds a Server. Its metrics are registered on reg (nil: a private
// registry); /metrics serves reg. A nil logger discards; a nil health answers
// 200 {"status":"ok"}. The server starts ready; call SetReady(false, ...)
// before Run to gate traffic on a dependency.
func NewServer(cfg Config, logger *slog.Logger, reg *prometheus.Registry, health HealthFunc) *Server {
	cfg = cfg.withDefaults()
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	if health == nil {
		health = func(context.Context) (int, any) { return http.StatusOK, map[string]string{"status": "ok"} }
	}
	s := &Server{cfg: cfg, logger: logger, reg: reg, health: health, ready: true}

	m := newMetrics(reg, logger)
	root := chi.NewRouter()
	root.Use(requestID, withLogger(logger), m.instrument(logger), recoverer, limitBody(cfg.MaxBodyBytes))
	root.NotFound(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusNotFound, ErrorBody{Detail: "Not Found"})
	})
	root.MethodNotAllowed(func(w http.ResponseWriter, _ *http.Request) {
		WriteJSON(w, http.StatusMethodNotAllowed, ErrorBody{Detail: "Method Not Allowed"})
	})
	root.Get("/health", s.serveHealth)
	root.Get("/ready", s.serveReady)
	root.Method(http.MethodGet, "/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg}))
	// The application's routes live on their own router, so a service may
	// still add middleware with Use before its first route.
	app := chi.NewRouter()
	root.Mount("/", app)
	s.root, s.router = root, app

	s.srv = &http.Server{
		Handler:           root,
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		ReadTimeout:       cfg.ReadTimeout,
		WriteTimeout:      cfg.WriteTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(logger.Handler(), slog.LevelWarn),
	}
	return s
}

// Router is where the service mounts its routes, before Run. The common
// middleware is already applied around it; the service may add its own with
// Use before its first route. /health, /ready and /metrics are taken.
func (s *Server) Router() chi.Router { return s.router }

// Handler returns the server's root handler, probes and middleware included
// (for tests with httptest).
func (s *Server) Handler() http.Handler { return s.root }

// SetReady sets what /ready answers; reason is shown while not ready.
func (s *Server) SetReady(ready bool, reason string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.ready, s.readyReason = ready, reason
}

// Ready reports the current readiness and its reason.
func (s *Server) Ready() (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ready, s.readyReason
}

// Listen binds the configured address, once; later calls return the same
// address. Binding early lets a caller learn the port of ":0" before Run.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Run serves until ctx is done, then flips readiness to 503, waits DrainDelay
// and shuts down within ShutdownGrace. It returns nil after a clean shutdown,
// the serve error if serving failed, or the shutdown error when in-flight
// requests outlived the grace period (they are then cut off).
func (s *Server) Run(ctx context.Context) error {
	addr, err := s.Listen()
	if err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()

	serveErr := make(chan error, 1)
	go func() { serveErr <- s.srv.Serve(ln) }()
	s.logger.Info("http server listening", "addr", addr.String())

	select {
	case err := <-serveErr:
		return fmt.Errorf("serve %s: %w", addr, err)
	case <-ctx.Done():
	}

	s.SetReady(false, "shutting down")
	s.logger.Info("http server draining", "addr", addr.String(), "drain_delay", s.cfg.DrainDelay.String())
	if s.cfg.DrainDelay > 0 {
		t := time.NewTimer(s.cfg.DrainDelay)
		select {
		case <-t.C:
		case err := <-serveErr:
			t.Stop()
			return fmt.Errorf("serve %s: %w", addr, err)
		}
	}

	shutCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownGrace)
	defer cancel()
	shutErr := s.srv.Shutdown(shutCtx)
	if shutErr != nil {
		_ = s.srv.Close()
		shutErr = fmt.Errorf("shutdown %s: %w", addr, shutErr)
	}
	if err := <-serveErr; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errors.Join(shutErr, fmt.Errorf("serve %s: %w", addr, err))
	}
	s.logger.Info("http server stopped", "addr", addr.String())
	return shutErr
}

func (s *Server) serveHealth(w http.ResponseWriter, r *http.Request) {
	status, body := s.health(r.Context())
	WriteJSON(w, status, body)
}

type readyBody struct {
	Ready  bool   `json:"ready"`
	Reason string `json:"reason,omitempty"`
}

func (s *Server) serveReady(w http.ResponseWriter, _ *http.Request) {
	ready, reason := s.Ready()
	if ready {
		WriteJSON(w, http.StatusOK, readyBody{Ready: true})
		return
	}
	if reason == "" {
		reason = "not ready"
	}
	WriteJSON(w, http.StatusServiceUnavailable, readyBody{Ready: false, Reason: reason})
}

// NewRegistry returns a Prometheus registry with the Go runtime and process
// collectors registered, for a service's composition root.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectorsGo(), collectorsProcess())
	return reg
}
