// Package app is the development hub's composition root: it opens the store
// and the FL server, builds the hub's trust-facing API (with the FL routes
// under /fl/v1) and the admin API on their own listeners, runs the stale-task
// sweep, and stops all of them together.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/dev-hub/internal/admin"
	"github.com/flip-trust/node/services/dev-hub/internal/config"
	"github.com/flip-trust/node/services/dev-hub/internal/flserver"
	"github.com/flip-trust/node/services/dev-hub/internal/hubserver"
	"github.com/flip-trust/node/services/dev-hub/internal/store"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
)

// Files inside DEV_HUB_DATA_DIR.
const (
	// StoreFile is the hub's bbolt file.
	StoreFile = "hub.db"
	// FLStoreFile is the FL server's bbolt file.
	FLStoreFile = "fl.db"
	// FLArtifactsDir holds the FL artifacts (models and updates).
	FLArtifactsDir = "fl-artifacts"
	// FLUploadsDir holds the clients' uploads while they are under way.
	FLUploadsDir = "fl-uploads"
)

// Listener limits the FL server needs.
const (
	// flWriteTimeout outlasts the longest task long poll.
	flWriteTimeout = flproto.MaxWait + 30*time.Second
	// adminMaxBody admits a model uploaded through POST /admin/fl/artifacts.
	adminMaxBody = 1 << 30
	// flMaxUpload bounds one artifact a client uploads.
	flMaxUpload = 16 << 30
	// adminReadTimeout gives such an upload time to arrive.
	adminReadTimeout = 10 * time.Minute
)

// App is a wired development hub.
type App struct {
	cfg    config.Config
	logger *slog.Logger
	store  *store.Store
	fl     *flserver.Server
	hub    *httpx.Server
	admin  *httpx.Server

	mu     sync.Mutex
	hubURL string
}

// New builds the hub from cfg. It opens the stores; Run releases them.
func New(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry) (*App, error) {
	cipher, err := envelope.NewFromBase64(cfg.AESKeyBase64)
	if err != nil {
		return nil, fmt.Errorf("aes key: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	arts, err := flproto.NewArtifactStore(filepath.Join(cfg.DataDir, FLArtifactsDir), flproto.DefaultChunkSize)
	if err != nil {
		return nil, fmt.Errorf("FL artifacts: %w", err)
	}
	uploads, err := flproto.NewUploads(filepath.Join(cfg.DataDir, FLUploadsDir), arts, flMaxUpload)
	if err != nil {
		return nil, fmt.Errorf("FL uploads: %w", err)
	}
	st, err := store.Open(filepath.Join(cfg.DataDir, StoreFile))
	if err != nil {
		return nil, err
	}
	fl, err := flserver.Open(filepath.Join(cfg.DataDir, FLStoreFile), arts, flserver.Config{}, logger.With("component", "flserver"))
	if err != nil {
		_ = st.Close()
		return nil, err
	}
	auth := flproto.NewAuthenticatorFunc(func() map[string][32]byte {
		out := map[string][32]byte{}
		for _, c := range fl.Credentials() {
			out[c.Name] = c.SecretSHA256
		}
		return out
	})
	clientOf := func(r *http.Request) (string, bool) {
		name := flproto.ClientFrom(r.Context())
		return name, name != ""
	}
	a := &App{cfg: cfg, logger: logger, store: st, fl: fl}

	health := func(context.Context) (int, any) {
		if err := st.Ping(); err != nil {
			return http.StatusServiceUnavailable, map[string]string{"status": "down", "version": cfg.Version}
		}
		return http.StatusOK, map[string]string{"status": "ok", "version": cfg.Version}
	}

	hubHTTP := httpx.DefaultConfig(cfg.Addr)
	hubHTTP.MaxBodyBytes = max(hubserver.MaxBodyBytes, flproto.MaxChunkSize+1<<20)
	hubHTTP.WriteTimeout = flWriteTimeout
	a.hub = httpx.NewServer(hubHTTP, logger.With("listener", "hub"), reg, health)
	a.hub.Router().Group(func(r chi.Router) {
		r.Use(auth.Middleware)
		flserver.NewTaskAPI(fl, clientOf).Mount(r)
		flproto.NewArtifactHandler(arts, uploads).Routes(r)
	})
	hubserver.New(hubserver.Config{
		HubVersion: cfg.Version,
		Limits: hubserver.Limits{
			PendingPerMin: cfg.RatePending, HeartbeatPerMin: cfg.RateHeartbeat, ResultPerMin: cfg.RateResult,
		},
	}, st, cipher, logger).Mount(a.hub.Router())

	adminHTTP := httpx.DefaultConfig(cfg.AdminAddr)
	adminHTTP.MaxBodyBytes = adminMaxBody
	adminHTTP.ReadTimeout = adminReadTimeout
	adminHTTP.WriteTimeout = adminReadTimeout
	a.admin = httpx.NewServer(adminHTTP, logger.With("listener", "admin"), reg, health)
	flAdmin := flserver.NewAdminAPI(flserver.AdminConfig{
		ServerURL: func() string { return strings.TrimSuffix(a.HubAPIURL(), "/api") },
		SealProjectID: func(projectID string) (string, error) {
			return cipher.Seal([]byte(projectID), envelope.ProjectIDContext)
		},
	}, fl, arts)
	admin.New(admin.Config{
		Token:        cfg.AdminToken,
		AESKeyBase64: cfg.AESKeyBase64,
		HubAPIURL:    a.HubAPIURL,
		StaleTimeout: cfg.StaleTimeout,
		MaxRetries:   cfg.MaxRetries,
	}, st, cipher, logger).Mount(a.admin.Router(), flAdmin.Mount)
	return a, nil
}

// Listen binds both listeners (Run does it when not yet done) and returns the
// hub API's and the admin API's addresses.
func (a *App) Listen() (hubAddr, adminAddr net.Addr, err error) {
	if hubAddr, err = a.hub.Listen(); err != nil {
		return nil, nil, err
	}
	if adminAddr, err = a.admin.Listen(); err != nil {
		return nil, nil, err
	}
	a.mu.Lock()
	a.hubURL = publicAPIURL(a.cfg, hubAddr)
	a.mu.Unlock()
	return hubAddr, adminAddr, nil
}

// HubAPIURL is the hub's /api URL as kits name it: DEV_HUB_PUBLIC_URL when
// set, otherwise derived from the bound DEV_HUB_ADDR.
func (a *App) HubAPIURL() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.hubURL == "" {
		return publicAPIURL(a.cfg, nil)
	}
	return a.hubURL
}

func publicAPIURL(cfg config.Config, bound net.Addr) string {
	if cfg.PublicURL != "" {
		if u, err := admin.NormalizeHubAPIURL(cfg.PublicURL); err == nil {
			return u
		}
	}
	host, port, err := net.SplitHostPort(cfg.Addr)
	if err != nil {
		host, port = "127.0.0.1", "8080"
	}
	if tcp, ok := bound.(*net.TCPAddr); ok {
		port = fmt.Sprint(tcp.Port)
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		host = "127.0.0.1"
	}
	return "http://" + net.JoinHostPort(host, port) + "/api"
}

// Run serves both APIs and runs the stale sweep until ctx is done, then
// drains both listeners and closes the store. The first failure stops all.
func (a *App) Run(ctx context.Context) error {
	defer func() {
		if err := a.fl.Close(); err != nil {
			a.logger.Error("close fl server", "err", err)
		}
		if err := a.store.Close(); err != nil {
			a.logger.Error("close store", "err", err)
		}
	}()
	if _, _, err := a.Listen(); err != nil {
		return err
	}
	a.logger.Info("dev-hub started", "hub_api_url", a.HubAPIURL(), "config", a.cfg.Safe())

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	for _, run := range []func(context.Context) error{a.hub.Run, a.admin.Run, a.sweepLoop} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			err := run(ctx)
			if err != nil {
				cancel()
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	var all []error
	for err := range errs {
		if err != nil {
			all = append(all, err)
		}
	}
	return errors.Join(all...)
}

// sweepLoop recovers stale IN_PROGRESS tasks every SweepInterval.
func (a *App) sweepLoop(ctx context.Context) error {
	t := time.NewTicker(a.cfg.SweepInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			a.Sweep()
		}
	}
}

// Sweep runs one stale sweep now and logs what it changed.
func (a *App) Sweep() {
	rep, err := a.store.SweepStale(time.Now(), a.cfg.StaleTimeout, a.cfg.MaxRetries)
	if err != nil {
		a.logger.Error("stale sweep failed", "err", err)
		return
	}
	if len(rep.Requeued)+len(rep.Failed) > 0 {
		a.logger.Warn("stale tasks recovered", "requeued", len(rep.Requeued), "failed", len(rep.Failed))
	}
}
