// Package app is data-access-api's composition root: it loads the governance
// policy, opens the snapshot store and the database pool, and serves the
// routes with the trust node's common server (/health, /ready, /metrics).
package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/data-access-api/internal/api"
	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/config"
	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/services/data-access-api/internal/snapshot"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// Service is the name mesh tokens for this service are addressed to.
const Service = "data-access-api"

// App is a wired data-access-api.
type App struct {
	cfg    config.Config
	logger *slog.Logger
	engine *cohort.Engine
	server *httpx.Server
}

// New builds the service. An invalid policy file or AES key is an error (the
// service must not start); an unreachable database is not (requests answer
// 503 until it returns).
func New(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (*App, error) {
	cipher, err := envelope.NewFromBase64(cfg.AESKeyBase64)
	if err != nil {
		return nil, fmt.Errorf("AES_KEY_BASE64: %w", err)
	}
	pol, err := policy.Load(cfg.PolicyFile, cfg.Threshold)
	if err != nil {
		return nil, err
	}
	// The governance line is logged at WARN so a quiet level cannot hide it.
	logger.Warn(policy.Describe(pol, cfg.Threshold))

	site := cfg.Site
	if site == nil {
		site = sitepolicy.Default()
	}
	disc, err := site.Disclosure(int64(cfg.Threshold))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sitepolicy.EnvFile, err)
	}
	logger.Warn("disclosure control", "floor", disc.Floor(), "rounding", disc.Rounding(), "site_policy", site.Source, "site_policy_sha256", site.Digest)

	store := snapshot.Open(cfg.SnapshotDir, cfg.SnapshotMaxBytes, logger)
	store.Ensure()

	engine, err := cohort.New(cohort.Options{DSN: cfg.DSN(), MaxConns: cfg.DBMaxConns, QueryTimeout: cfg.QueryTimeout, Logger: logger})
	if err != nil {
		return nil, err
	}
	verifier := mesh.NewVerifier(Service, []byte(cfg.InternalKey), cfg.InternalKeyHeader, logger)
	if !verifier.Configured() {
		logger.Error("TRUST_INTERNAL_SERVICE_KEY is not set (or shorter than 32 bytes): every /cohort request is refused")
	}
	version := cfg.Version(build)
	srvCfg := httpx.DefaultConfig(cfg.Addr)
	// A statistics request may run for the whole query timeout.
	srvCfg.WriteTimeout = cfg.QueryTimeout + 30*time.Second
	srvCfg.ReadTimeout = time.Minute
	srvCfg.MaxBodyBytes = 1 << 20

	health := func(ctx context.Context) (int, any) {
		db := "ok"
		if err := engine.Ping(ctx); err != nil {
			db = "unavailable"
		}
		return http.StatusOK, map[string]any{"status": "ok", "version": version, "database": db}
	}
	srv := httpx.NewServer(srvCfg, logger, reg, health)
	api.New(api.Options{
		Engine: engine, Cipher: cipher, Verifier: verifier, Policy: pol, Store: store,
		Threshold: cfg.Threshold, Disclosure: disc, AESKeyBase64: cfg.AESKeyBase64, CohortAdminHeader: cfg.CohortAdminHeader,
		Logger: logger,
	}).Mount(srv.Router())
	return &App{cfg: cfg, logger: logger, engine: engine, server: srv}, nil
}

// Listen binds the listener early (":0" picks a port) and returns its address.
func (a *App) Listen() (net.Addr, error) { return a.server.Listen() }

// Run serves until ctx ends, then drains and closes the pool.
func (a *App) Run(ctx context.Context) error {
	defer a.engine.Close()
	if err := a.engine.Ping(ctx); err != nil {
		a.logger.Warn("OMOP database not reachable yet; cohort requests answer 503 until it is", "error", err.Error())
	}
	err := a.server.Run(ctx)
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}
