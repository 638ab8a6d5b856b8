package httpx

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// HeaderRequestID carries the request id in requests and responses.
const HeaderRequestID = "X-Request-Id"

type requestIDKey struct{}
type loggerKey struct{}

// RequestIDFrom returns the request id the server assigned to ctx's request.
func RequestIDFrom(ctx context.Context) string {
	id, _ := ctx.Value(requestIDKey{}).(string)
	return id
}

// LoggerFrom returns the request-scoped logger (carrying request_id) the
// server stored in ctx, or a discarding logger.
func LoggerFrom(ctx context.Context) *slog.Logger {
	if l, ok := ctx.Value(loggerKey{}).(*slog.Logger); ok {
		return l
	}
	return slog.New(slog.DiscardHandler)
}

// validRequestID accepts short printable ASCII ids from upstream proxies.
func validRequestID(id string) bool {
	if id == "" || len(id) > 128 {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] < 0x21 || id[i] > 0x7e {
			return false
		}
	}
	return true
}

func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func requestID(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id := r.Header.Get(HeaderRequestID)
		if !validRequestID(id) {
			id = newRequestID()
		}
		w.Header().Set(HeaderRequestID, id)
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), requestIDKey{}, id)))
	})
}

func withLogger(base *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			l := base.With("request_id", RequestIDFrom(r.Context()))
			next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), loggerKey{}, l)))
		})
	}
}

// recorder remembers the status and size written through it.
type recorder struct {
	http.ResponseWriter
	status int
	bytes  int64
}

func (rw *recorder) WriteHeader(code int) {
	if rw.status == 0 {
		rw.status = code
	}
	rw.ResponseWriter.WriteHeader(code)
}

func (rw *recorder) Write(p []byte) (int, error) {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	n, err := rw.ResponseWriter.Write(p)
	rw.bytes += int64(n)
	return n, err
}

func (rw *recorder) Flush() {
	if rw.status == 0 {
		rw.status = http.StatusOK
	}
	if f, ok := rw.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (rw *recorder) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	if h, ok := rw.ResponseWriter.(http.Hijacker); ok {
		return h.Hijack()
	}
	return nil, nil, errors.New("response writer does not support hijacking")
}

// Unwrap lets http.ResponseController reach the underlying writer.
func (rw *recorder) Unwrap() http.ResponseWriter { return rw.ResponseWriter }

// recoverer turns a handler panic into a logged 500 JSON reply. It re-panics
// http.ErrAbortHandler, which net/http uses to abort a response on purpose.
func recoverer(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recorder{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if err, ok := v.(error); ok && errors.Is(err, http.ErrAbortHandler) {
				panic(v)
			}
			LoggerFrom(r.Context()).Error("handler panic",
				"method", r.Method, "route", routePattern(r), "panic", fmt.Sprint(v), "stack", string(debug.Stack()))
			if rw.status == 0 {
				WriteJSON(rw, http.StatusInternalServerError, ErrorBody{Detail: "Internal server error"})
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// limitBody caps request bodies: a declared length over max gets 413 at once;
// otherwise reads beyond max fail with *http.MaxBytesError (DecodeJSON maps it to 413).
func limitBody(max int64) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.ContentLength > max {
				WriteJSON(w, http.StatusRequestEntityTooLarge, ErrorBody{Detail: tooLarge(max)})
				return
			}
			if r.Body != nil && r.Body != http.NoBody {
				r.Body = http.MaxBytesReader(w, r.Body, max)
			}
			next.ServeHTTP(w, r)
		})
	}
}

func tooLarge(max int64) string {
	return "Request body too large (limit " + strconv.FormatInt(max, 10) + " bytes)"
}

// routePattern is the matched chi route pattern, or "unmatched" so that
// unknown paths cannot inflate metric cardinality.
func routePattern(r *http.Request) string {
	if rc := chi.RouteContext(r.Context()); rc != nil {
		if p := rc.RoutePattern(); p != "" && p != "/*" {
			return p
		}
	}
	return "unmatched"
}

type metrics struct {
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer, logger *slog.Logger) *metrics {
	return &metrics{
		requests: register(reg, logger, prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "flip_http_requests_total",
			Help: "HTTP requests served, by method, route pattern and status code.",
		}, []string{"method", "route", "code"})),
		duration: register(reg, logger, prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "flip_http_request_duration_seconds",
			Help:    "HTTP request latency, by method and route pattern.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "route"})),
	}
}

// register registers c, reusing an identical collector already registered
// (several servers of one process share a registry).
func register[C prometheus.Collector](reg prometheus.Registerer, logger *slog.Logger, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(C); ok {
				return existing
			}
		}
		// A conflicting descriptor is a programming error; keep the unregistered
		// collector so the server still works, without these metrics.
		logger.Error("http metrics not registered", "error", err.Error())
		return c
	}
	return c
}

// quietRoutes are logged at debug level: probes would drown the access log.
var quietRoutes = map[string]bool{"/health": true, "/ready": true, "/metrics": true}

func (m *metrics) instrument(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			start := time.Now()
			rw := &recorder{ResponseWriter: w}
			next.ServeHTTP(rw, r)
			if rw.status == 0 {
				rw.status = http.StatusOK
			}
			elapsed := time.Since(start)
			route := routePattern(r)
			m.requests.WithLabelValues(r.Method, route, strconv.Itoa(rw.status)).Inc()
			m.duration.WithLabelValues(r.Method, route).Observe(elapsed.Seconds())
			level := slog.LevelInfo
			if quietRoutes[route] {
				level = slog.LevelDebug
			}
			LoggerFrom(r.Context()).Log(r.Context(), level, "http request",
				"method", r.Method, "route", route, "status", rw.status,
				"bytes", rw.bytes, "duration_ms", elapsed.Milliseconds())
		})
	}
}

func collectorsGo() prometheus.Collector { return collectors.NewGoCollector() }
func collectorsProcess() prometheus.Collector {
	return collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})
}
