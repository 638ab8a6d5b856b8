package app

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/dev-hub/internal/standin"
	"github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// StandinConfig configures `dev-hub standin`, the stand-in for a trust's
// data-access-api and imaging-api.
type StandinConfig struct {
	Addr      string        // STANDIN_ADDR (default 127.0.0.1:8090)
	Key       string        // TRUST_INTERNAL_SERVICE_KEY (secret, _FILE ok)
	KeyHeader string        // TRUST_INTERNAL_SERVICE_KEY_HEADER ("" = mesh default)
	Delay     time.Duration // STANDIN_DELAY_MS: every service answer is held this long
	LogLevel  slog.Level    // LOG_LEVEL
}

// LoadStandinConfig reads the stand-in's settings through getenv.
func LoadStandinConfig(getenv func(string) string) (StandinConfig, error) {
	l := config.NewLoader(getenv)
	c := StandinConfig{
		Addr:      l.String("STANDIN_ADDR", "127.0.0.1:8090"),
		Key:       l.Secret("TRUST_INTERNAL_SERVICE_KEY", true),
		KeyHeader: l.String("TRUST_INTERNAL_SERVICE_KEY_HEADER", ""),
	}
	if ms := l.Int("STANDIN_DELAY_MS", 0); ms >= 0 {
		c.Delay = time.Duration(ms) * time.Millisecond
	} else {
		l.Problem("STANDIN_DELAY_MS must not be negative")
	}
	level, err := logging.ParseLevel(l.String("LOG_LEVEL", "INFO"))
	if err != nil {
		l.Problem("LOG_LEVEL: %v", err)
	}
	c.LogLevel = level
	return c, l.Err()
}

// RunStandin serves the stand-in until ctx is done.
func RunStandin(ctx context.Context, cfg StandinConfig, logger *slog.Logger, reg *prometheus.Registry) error {
	srv := httpx.NewServer(httpx.DefaultConfig(cfg.Addr), logger, reg, func(context.Context) (int, any) {
		return http.StatusOK, map[string]string{"status": "ok", "version": "stand-in"}
	})
	r := srv.Router()
	if cfg.Delay > 0 {
		r.Use(holdAnswers(cfg.Delay))
	}
	standin.New([]byte(cfg.Key), cfg.KeyHeader, logger).Routes(r)
	return srv.Run(ctx)
}

// holdAnswers lets a service request run at once (so the stand-in records it
// on arrival) but holds its answer for d, like a slow service would; its own
// /_standin routes answer at once.
func holdAnswers(d time.Duration) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/_standin/") || r.URL.Path == "/health" {
				next.ServeHTTP(w, r)
				return
			}
			held := &heldWriter{header: http.Header{}}
			next.ServeHTTP(held, r)
			t := time.NewTimer(d)
			defer t.Stop()
			select {
			case <-r.Context().Done():
				return
			case <-t.C:
			}
			for k, v := range held.header {
				w.Header()[k] = v
			}
			if held.status == 0 {
				held.status = http.StatusOK
			}
			w.WriteHeader(held.status)
			_, _ = w.Write(held.body.Bytes())
		})
	}
}

// heldWriter buffers a response.
type heldWriter struct {
	header http.Header
	status int
	body   bytes.Buffer
}

func (h *heldWriter) Header() http.Header { return h.header }
func (h *heldWriter) WriteHeader(code int) {
	if h.status == 0 {
		h.status = code
	}
}
func (h *heldWriter) Write(p []byte) (int, error) {
	if h.status == 0 {
		h.status = http.StatusOK
	}
	return h.body.Write(p)
}
