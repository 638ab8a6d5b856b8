// Command imaging-api provisions imaging projects from the central hub,
// pulls each project's cohort studies from the PACS into staging (C-FIND and
// C-MOVE through a staging Orthanc), tracks every study's import durably and
// serves images to FL jobs (FLIP's imaging-api routes).
//
// Exit codes: 0 clean shutdown, 1 error (every configuration problem listed).
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/flip-trust/node/services/imaging-api/internal/app"
	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// version is the build identity, set with -ldflags "-X main.version=...";
// FLIP_RELEASE takes precedence at run time.
var version = "0.1.0-dev"

func main() { os.Exit(run()) }

func run() int {
	fs := flag.NewFlagSet("imaging-api", flag.ContinueOnError)
	probe := httpx.HealthFlag(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 1
	}
	if *probe {
		return httpx.ProbeHealth(context.Background(), httpx.LocalHealthURL(os.Getenv("IMAGING_API_ADDR"), "8000"))
	}
	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaging-api: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "  - "+line)
		}
		return 1
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated by Load
	reg := httpx.NewRegistry()
	lg, err := logging.New(os.Stdout, logging.Options{
		Level: level, Service: "imaging-api", Version: cfg.Version(version),
		LokiURL: cfg.LokiURL, LokiLabels: map[string]string{"env": cfg.Env},
	}, reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaging-api: logging:", err)
		return 1
	}
	defer lg.Close(context.Background())
	logger := lg.Slog()
	logger.Info("starting", "config", cfg.Safe())

	a, err := app.New(cfg, logger, reg, version)
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaging-api:", err)
		logger.Error("startup failed", "error", err.Error())
		return 1
	}
	addr, err := a.Listen()
	if err != nil {
		fmt.Fprintln(os.Stderr, "imaging-api: listen:", err)
		return 1
	}
	logger.Info("listening", "addr", addr.String())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := a.Run(ctx); err != nil {
		logger.Error("stopped", "error", err.Error())
		return 1
	}
	logger.Info("stopped")
	return 0
}
