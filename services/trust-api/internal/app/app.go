// Package app is trust-api's composition root: it builds the journal, the
// hub client, the task executor, delivery, the task engine, the health
// collector and the HTTP server (/health, /ready, /metrics) from a Config,
// and runs them together until the context ends or the hub names another
// trust than EXPECTED_TRUST_ID.
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/trust-api/internal/budget"
	"github.com/flip-trust/node/services/trust-api/internal/config"
	"github.com/flip-trust/node/services/trust-api/internal/delivery"
	"github.com/flip-trust/node/services/trust-api/internal/health"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/services/trust-api/internal/runner"
	"github.com/flip-trust/node/services/trust-api/internal/tasks"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
)

// Issuer is the name trust-api signs its mesh tokens with.
const Issuer = "trust-api"

// Background task names reported in /health dead_tasks.
const (
	taskPoller      = "task_poller"
	healthCollector = "health_collector"
	resultDelivery  = "result_delivery"
)

// App is a wired trust-api.
type App struct {
	cfg       config.Config
	logger    *slog.Logger
	version   string
	journal   *journal.Journal
	budgets   *budget.Store
	hub       *hub.Client
	deliverer *delivery.Deliverer
	runner    *runner.Runner
	collector *health.Collector
	server    *httpx.Server
	live      *health.Liveness
	closeOnce sync.Once
}

// New builds every component. build is the binary's version, used when
// FLIP_RELEASE is unset. reg receives the service's metrics and is served
// on /metrics. The caller must Run or Close the App.
func New(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (*App, error) {
	return newApp(cfg, logger, reg, build, httpx.DefaultConfig(cfg.Addr))
}

func newApp(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string, srvCfg httpx.Config) (*App, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	cipher, err := envelope.NewFromBase64(cfg.AESKeyBase64)
	if err != nil {
		return nil, fmt.Errorf("AES_KEY_BASE64: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data dir: %w", err)
	}
	j, err := journal.Open(cfg.JournalPath(), journal.Options{})
	if err != nil {
		return nil, err
	}
	budgets, err := budget.Open(cfg.BudgetPath(), cfg.Budgets, budget.Options{})
	if err != nil {
		_ = j.Close()
		return nil, err
	}
	a := &App{cfg: cfg, logger: logger, version: cfg.Version(build), journal: j, budgets: budgets, live: &health.Liveness{}}

	if !cfg.InternalKeyUsable() {
		logger.Error(fmt.Sprintf("TRUST_INTERNAL_SERVICE_KEY is unset or shorter than %d bytes: every call to data-access-api and imaging-api will fail", mesh.MinKeyBytes))
	}
	metrics, err := runner.NewMetrics(reg, j)
	if err != nil {
		_ = a.Close()
		return nil, err
	}

	a.hub = hub.New(hub.Options{
		BaseURL: cfg.HubURL, Key: cfg.APIKey, KeyHeader: cfg.APIKeyHeader,
		ExpectedTrustID: cfg.ExpectedTrustID, OwnFingerprint: cipher.Fingerprint(),
		Timeout: hub.DefaultTimeout, Transport: httpx.NewClient(hub.DefaultTimeout).Transport,
	}, logger)

	auth := tasks.MeshAuthorizer{Signer: mesh.NewSigner(Issuer, []byte(cfg.InternalKey)), Mode: cfg.InternalAuth, KeyHeader: cfg.InternalKeyHeader}
	internal := &http.Client{Transport: httpx.NewClient(max(cfg.CohortQueryTimeout, hub.DefaultTimeout)).Transport}
	exec := tasks.NewExecutor(tasks.Config{
		DataAccessURL: cfg.DataAccessURL, ImagingURL: cfg.ImagingURL,
		CohortQueryTimeout: cfg.CohortQueryTimeout,
		CohortAdminProof:   envelope.CohortAdminProof(cfg.AESKeyBase64), CohortAdminHeader: cfg.CohortAdminHeader,
	}, cipher, auth, internal, logger)

	a.deliverer = delivery.New(j, a.hub, delivery.Options{
		BackoffMin: cfg.BackoffMin, BackoffMax: cfg.BackoffMax, Concurrency: cfg.DeliveryConcurrency,
		Retries: metrics.DeliveryRetries,
	}, logger)

	a.collector = health.NewCollector(health.Options{
		ImagingURL: cfg.ImagingURL, DataAccessURL: cfg.DataAccessURL, XNATURL: cfg.XNATURL,
		OMOPAddr: net.JoinHostPort(cfg.OMOPHost, strconv.Itoa(cfg.OMOPPort)),
		Version:  a.version, FLClientImageTag: cfg.FLClientImageTag,
		Interval: cfg.HealthCollectInterval, Degraded: cfg.HealthDegraded,
	}, auth, &http.Client{Transport: httpx.NewClient(health.DefaultProbeTimeout).Transport}, logger)

	a.server = httpx.NewServer(srvCfg, logger, reg, health.Handler(a.version, a.live, a.hub.Status().Current))
	a.server.SetReady(false, "hub not contacted yet")
	// The egress gate's budget route, for fl-client over the mesh.
	budgets.Mount(a.server.Router(), mesh.NewVerifier(Issuer, []byte(cfg.InternalKey), cfg.InternalKeyHeader, logger),
		func(enc string) (string, error) {
			p, err := cipher.Open(enc, envelope.ProjectIDContext)
			return string(p), err
		})

	a.runner = runner.New(j, a.hub, exec, a.deliverer, runner.Options{
		PollInterval: cfg.PollInterval, HeartbeatInterval: cfg.HeartbeatInterval, Workers: cfg.TaskWorkers,
		Snapshot:   a.collector.Snapshot,
		OnHubState: a.server.SetReady,
		Retention:  cfg.JournalRetention,
		Metrics:    metrics,
	}, logger)
	return a, nil
}

// Addr binds the HTTP listener (if not yet bound) and returns its address.
func (a *App) Addr() (net.Addr, error) { return a.server.Listen() }

// Run runs every component until ctx ends (nil), a component fails, or the
// hub names another trust (a *hub.IdentityMismatchError). It closes the
// journal before returning.
func (a *App) Run(ctx context.Context) error {
	defer a.Close()
	if _, err := a.server.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)

	var wg sync.WaitGroup
	background := func(name string, run func(context.Context) error) {
		wg.Go(func() {
			err := run(ctx)
			if ctx.Err() != nil && err == nil {
				return
			}
			var mm *hub.IdentityMismatchError
			if errors.As(err, &mm) {
				cancel(err)
				return
			}
			a.live.MarkDead(name)
			if err != nil {
				a.logger.Error("background task "+name+" died", "error", err.Error())
				return
			}
			a.logger.Error("background task " + name + " stopped")
		})
	}
	// Stop order matters: the engine and delivery end (ctx) before the
	// journal closes (deferred), the server drains meanwhile.
	background(taskPoller, a.runner.Run)
	background(resultDelivery, a.deliverer.Run)
	background(healthCollector, a.collector.Run)
	var srvErr error
	wg.Go(func() {
		if err := a.server.Run(ctx); err != nil {
			srvErr = err
			cancel(err)
		}
	})
	a.logger.Info("trust-api started")
	wg.Wait()

	if cause := context.Cause(ctx); cause != nil && !errors.Is(cause, context.Canceled) {
		return cause
	}
	return srvErr
}

// Close releases the journal and the budget store; Run calls it. It is safe
// to call more than once.
func (a *App) Close() error {
	var err error
	a.closeOnce.Do(func() { err = errors.Join(a.journal.Close(), a.budgets.Close()) })
	return err
}

// Budgets is the privacy budget store (for audit show --budget).
func (a *App) Budgets() *budget.Store { return a.budgets }
