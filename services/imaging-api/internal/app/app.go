// Package app is imaging-api's composition root: the backend chosen by
// IMAGING_BACKEND (native: the project registry, the import state machine
// and its workers over the staging Orthanc; xnat: the XNAT client and its
// database pool), the images cache and its sweeper, and the HTTP server.
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
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/cohortids"
	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/projects"
	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnatbackend"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
)

// Service is the name mesh tokens for this service are addressed to.
const Service = "imaging-api"

// App is a wired imaging-api.
type App struct {
	cfg      config.Config
	logger   *slog.Logger
	projects *projects.Store
	importer *importer.Importer
	api      *api.API
	cache    *imagecache.Cache
	server   *httpx.Server
	bg       sync.WaitGroup
	bgCtx    context.Context
	bgCancel context.CancelFunc
	failing  atomic.Int32

	xnatClient *xnat.Client
	xnatDB     *pgxpool.Pool
}

// New builds the service with the configured backend.
func New(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (*App, error) {
	cipher, err := envelope.NewFromBase64(cfg.AESKeyBase64)
	if err != nil {
		return nil, fmt.Errorf("AES_KEY_BASE64: %w", err)
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("IMAGING_API_DATA_DIR: %w", err)
	}
	cache, err := imagecache.New(cfg.ImagesDir, logger)
	if err != nil {
		return nil, fmt.Errorf("BASE_IMAGES_DOWNLOAD_DIR: %w", err)
	}
	a := &App{cfg: cfg, logger: logger, cache: cache}
	var backend api.Backend
	switch cfg.Backend {
	case config.BackendXNAT:
		backend, err = a.xnatBackend(cipher)
	default:
		backend, err = a.nativeBackend()
	}
	if err != nil {
		a.closeStores()
		return nil, err
	}
	a.bgCtx, a.bgCancel = context.WithCancel(context.Background())

	verifier := mesh.NewVerifier(Service, []byte(cfg.InternalKey), cfg.InternalKeyHeader, logger)
	if !verifier.Configured() {
		logger.Error("TRUST_INTERNAL_SERVICE_KEY is not set (or shorter than 32 bytes): every request but /health is refused")
	}
	version := cfg.Version(build)
	health := func(context.Context) (int, any) {
		dead := []string{}
		if a.failing.Load() >= 3 {
			dead = append(dead, "image_cache_retention:failing")
		}
		status := "ok"
		if len(dead) > 0 {
			status = "degraded"
		}
		return http.StatusOK, map[string]any{"status": status, "version": version, "backend": cfg.Backend, "dead_tasks": dead}
	}
	srvCfg := httpx.DefaultConfig(cfg.Addr)
	srvCfg.WriteTimeout = 0 // downloads of large studies
	a.server = httpx.NewServer(srvCfg, logger, reg, health)
	a.api = api.New(api.Options{
		Backend: backend,
		Cohorts: cohortids.New(cfg.DataAccessURL, cipher, mesh.NewSigner(Service, []byte(cfg.InternalKey)), mesh.ModeJWT, cfg.InternalKeyHeader),
		Cache:   cache, Cipher: cipher, Verifier: verifier, ReimportEnabled: cfg.ReimportEnabled, Logger: logger,
		Disclosure: cfg.Disclosure, Background: a.background,
	})
	a.api.Mount(a.server.Router())
	return a, nil
}

// nativeBackend opens the project registry and the import journal and
// drives the staging Orthanc.
func (a *App) nativeBackend() (api.Backend, error) {
	cfg := a.cfg
	oc, err := orthanc.New(orthanc.Config{URL: cfg.OrthancURL, User: cfg.OrthancUser, Password: cfg.OrthancPassword})
	if err != nil {
		return nil, fmt.Errorf("ORTHANC_URL: %w", err)
	}
	if a.projects, err = projects.Open(filepath.Join(cfg.DataDir, "projects.db")); err != nil {
		return nil, err
	}
	moves := &native.Backend{Orthanc: oc, PACS: cfg.PACSModality, StagingAET: cfg.StagingAET, SharedBy: a.sharedBy}
	a.importer, err = importer.Open(importer.Options{
		Path: filepath.Join(cfg.DataDir, "imports.db"), Concurrency: cfg.ImportConcurrency, MaxAttempts: cfg.ImportAttempts,
		BackoffMin: cfg.ImportBackoffMin, BackoffMax: cfg.ImportBackoffMax, StallTimeout: cfg.ImportStall, Logger: a.logger,
	}, moves)
	if err != nil {
		return nil, err
	}
	return &native.Service{Projects: a.projects, Importer: a.importer, Orthanc: oc, PACS: cfg.PACSModality,
		StagingAET: cfg.StagingAET, UploadDir: filepath.Join(cfg.DataDir, "uploads")}, nil
}

// xnatBackend connects to XNAT and to its database (read-only, for the DQR
// tables).
func (a *App) xnatBackend(cipher *envelope.Cipher) (api.Backend, error) {
	cfg := a.cfg
	dsn, err := xnat.DatabaseDSN(cfg.XNATDatabaseURL, cfg.XNATDatabasePassword)
	if err != nil {
		return nil, fmt.Errorf("XNAT_DATABASE_URL: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// The pool connects lazily: XNAT's database may start after us.
	if a.xnatDB, err = xnat.OpenDatabase(ctx, dsn, 0); err != nil {
		return nil, fmt.Errorf("XNAT_DATABASE_URL: %w", err)
	}
	cl, err := xnat.New(xnat.Config{BaseURL: cfg.XNATURL, Username: cfg.XNATUser, Password: cfg.XNATPassword,
		AETitle: cfg.XNATAETitle, ReceiverPort: cfg.XNATPort, PACSID: cfg.PACSID}, a.xnatDB, a.logger)
	if err != nil {
		return nil, fmt.Errorf("XNAT_URL: %w", err)
	}
	a.xnatClient = cl
	return xnatbackend.New(xnatbackend.Options{Client: cl, Cipher: cipher, Dcm2niixImage: cfg.Dcm2niixImage,
		QueryConcurrency: cfg.ImportConcurrency, Logger: a.logger}), nil
}

// closeStores closes what the backend opened.
func (a *App) closeStores() error {
	var errs []error
	if a.importer != nil {
		errs = append(errs, a.importer.Close())
	}
	if a.projects != nil {
		errs = append(errs, a.projects.Close())
	}
	if a.xnatClient != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_ = a.xnatClient.Close(ctx) // ends the session; nothing to lose
		cancel()
	}
	if a.xnatDB != nil {
		a.xnatDB.Close()
	}
	return errors.Join(errs...)
}

// background runs fn on its own goroutine; Run waits for it on shutdown.
func (a *App) background(fn func(ctx context.Context)) {
	a.bg.Go(func() { fn(a.bgCtx) })
}

// sharedBy reports whether a project other than project holds studyUID;
// when the journal cannot be read, the study is kept.
func (a *App) sharedBy(project, studyUID string) bool {
	held, err := a.importer.HeldElsewhere(studyUID, project)
	return held || err != nil
}

// Listen binds the listener early and returns its address.
func (a *App) Listen() (net.Addr, error) { return a.server.Listen() }

// Run starts the import workers and the cache sweeper and serves until ctx
// ends; imports in flight resume at the next start, and so do cohorts of
// provisioned projects that were not queued yet.
func (a *App) Run(ctx context.Context) error {
	if a.importer != nil {
		a.importer.Start(ctx)
	}
	if err := a.api.ResumeCohorts(ctx); err != nil {
		a.logger.Error("projects unreadable: cohorts not queued yet stay so until the next start", "error", err.Error())
	}
	if a.cfg.CacheRetention {
		a.background(func(bg context.Context) {
			sweepCtx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() { <-bg.Done(); cancel() }()
			a.cache.RunSweeper(sweepCtx, a.cfg.CacheSweepInterval, a.cfg.CacheRetentionPeriod, func(n int) { a.failing.Store(int32(n)) })
		})
	}
	err := a.server.Run(ctx)
	a.bgCancel()
	a.bg.Wait()
	cerr := a.closeStores()
	if errors.Is(err, context.Canceled) {
		err = nil
	}
	return errors.Join(err, cerr)
}
