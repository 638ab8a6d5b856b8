// Package app is trust-api's composition root: it builds the journal, the
// audit ledger and the egress gate, the hub client, the task executor,
// delivery, the task engine, the health collector, the HTTP server (/health,
// /ready, /metrics and the mesh egress API for fl-client) and, when a
// reviewer key is set, the local reviewer API from a Config,
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
	"github.com/flip-trust/node/services/trust-api/internal/egress"
	"github.com/flip-trust/node/services/trust-api/internal/health"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/services/trust-api/internal/runner"
	"github.com/flip-trust/node/services/trust-api/internal/tasks"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/ledger"
	"github.com/flip-trust/node/shared/mesh"
)

// FLClient is the mesh caller admitted on the egress API.
const FLClient = "fl-client"

// maxBody admits a 16 MiB egress item in base64 on the main server.
const maxBody = 24 << 20

// Issuer is the name trust-api signs its mesh tokens with.
const Issuer = "trust-api"

// Background task names reported in /health dead_tasks.
const (
	taskPoller      = "task_poller"
	healthCollector = "health_collector"
	resultDelivery  = "result_delivery"
	egressExpiry    = "egress_expiry"
)

// App is a wired trust-api.
type App struct {
	cfg       config.Config
	logger    *slog.Logger
	version   string
	journal   *journal.Journal
	ledger    *ledger.Ledger
	gate      *egress.Gate
	review    *httpx.Server // nil when the reviewer API is off
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
	srv := httpx.DefaultConfig(cfg.Addr)
	srv.MaxBodyBytes = maxBody
	return newApp(cfg, logger, reg, build, srv)
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
	a := &App{cfg: cfg, logger: logger, version: cfg.Version(build), journal: j, live: &health.Liveness{}}
	if a.ledger, err = ledger.Open(cfg.AuditLedgerDir, ledger.Options{}); err != nil {
		_ = j.Close()
		return nil, fmt.Errorf("audit ledger: %w", err)
	}
	a.gate, err = egress.Open(cfg.EgressPath(), a.ledger, egress.Options{
		Policy: cfg.EgressReview, Expiry: cfg.EgressReviewExpiry,
		OnDecision: func(it egress.Item) { a.deliverer.Resume(it.TaskID) },
	})
	if err != nil {
		_ = a.ledger.Close()
		_ = j.Close()
		return nil, err
	}
	if a.budgets, err = budget.Open(cfg.BudgetPath(), cfg.Budgets, budget.Options{Recorder: ledgerRecorder{a.ledger}}); err != nil {
		_ = a.gate.Close()
		_ = a.ledger.Close()
		_ = j.Close()
		return nil, err
	}

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
		Retries: metrics.DeliveryRetries, Gate: a.gate,
	}, logger)

	a.collector = health.NewCollector(health.Options{
		ImagingURL: cfg.ImagingURL, DataAccessURL: cfg.DataAccessURL, XNATURL: cfg.XNATURL,
		OMOPAddr: net.JoinHostPort(cfg.OMOPHost, strconv.Itoa(cfg.OMOPPort)),
		Version:  a.version, FLClientImageTag: cfg.FLClientImageTag,
		Interval: cfg.HealthCollectInterval, Degraded: cfg.HealthDegraded,
	}, auth, &http.Client{Transport: httpx.NewClient(health.DefaultProbeTimeout).Transport}, logger)

	a.server = httpx.NewServer(srvCfg, logger, reg, health.Handler(a.version, a.live, a.hub.Status().Current))
	a.server.SetReady(false, "hub not contacted yet")
	verifier := mesh.NewVerifier(Issuer, []byte(cfg.InternalKey), cfg.InternalKeyHeader, logger)
	egress.MeshRoutes(a.server.Router(), a.gate, verifier.Require(FLClient))

	if cfg.ReviewerKey == "" {
		logger.Warn("EGRESS_REVIEWER_KEY is unset: the reviewer API is off; held egress items can only expire",
			"held_channels", cfg.EgressReview.String())
	} else {
		rc := httpx.DefaultConfig(cfg.ReviewAddr)
		rc.DrainDelay = 0
		a.review = httpx.NewServer(rc, logger.With("listener", "egress_review"), reg, nil)
		egress.ReviewRoutes(a.review.Router(), a.gate, cfg.ReviewerKey)
	}
	// The egress gate's budget route, for fl-client over the mesh.
	a.budgets.Mount(a.server.Router(), verifier,
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

// ReviewAddr binds the reviewer API's listener and returns its address; nil
// when the reviewer API is off.
func (a *App) ReviewAddr() (net.Addr, error) {
	if a.review == nil {
		return nil, nil
	}
	return a.review.Listen()
}

// Run runs every component until ctx ends (nil), a component fails, or the
// hub names another trust (a *hub.IdentityMismatchError). It closes the
// journal before returning.
func (a *App) Run(ctx context.Context) error {
	defer a.Close()
	if _, err := a.server.Listen(); err != nil {
		return err
	}
	if a.review != nil {
		if _, err := a.review.Listen(); err != nil {
			return fmt.Errorf("reviewer API: %w", err)
		}
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
	background(egressExpiry, func(ctx context.Context) error {
		return a.gate.Run(ctx, func(err error) { a.logger.Error("egress expiry failed", "error", err.Error()) })
	})
	var srvErr, reviewErr error
	if a.review != nil {
		wg.Go(func() {
			if err := a.review.Run(ctx); err != nil {
				reviewErr = fmt.Errorf("reviewer API: %w", err)
				cancel(reviewErr)
			}
		})
	}
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
	return errors.Join(srvErr, reviewErr)
}

// Close releases the journal, the egress gate, the budget store and the
// ledger; Run calls it.
// It is safe to call more than once.
func (a *App) Close() error {
	var err error
	a.closeOnce.Do(func() {
		err = errors.Join(a.gate.Close(), a.budgets.Close(), a.ledger.Close(), a.journal.Close())
	})
	return err
}

// Budgets is the privacy budget store (for audit show --budget).
func (a *App) Budgets() *budget.Store { return a.budgets }

// ledgerRecorder writes the budget store's spends to the audit ledger.
type ledgerRecorder struct{ l *ledger.Ledger }

var _ budget.Recorder = ledgerRecorder{}

func (r ledgerRecorder) Append(_ context.Context, e budget.Entry) error {
	_, err := r.l.Append(ledger.Record{Channel: e.Channel, TaskID: e.TaskID, Project: e.Project, Kind: e.Kind, Rules: e.Rules})
	return err
}
