// Command trust-api is the FLIP trust node's hub agent: it polls the central
// hub for tasks, runs them against the trust's internal services, delivers
// the results durably and sends heartbeats with a health snapshot.
//
//	trust-api           run the service (configuration from the environment)
//	trust-api -health   probe a running service (container healthcheck)
//	trust-api doctor    check the hub, TLS, clock, keys, internal services and disk
//
// Exit codes: 0 clean shutdown (doctor: no check failed), 1 error (every
// configuration problem is listed; doctor: a check failed), 2 the hub identifies this host as another trust than
// EXPECTED_TRUST_ID (the wrong kit is deployed here).
//
// `trust-api audit ...` and `trust-api review ...` are operator commands
// (internal/cli): audit ledger checks and the airlock's reviewer client.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/app"
	"github.com/flip-trust/node/services/trust-api/internal/cli"
	"github.com/flip-trust/node/services/trust-api/internal/config"
	"github.com/flip-trust/node/services/trust-api/internal/doctor"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// version is the build identity, set with -ldflags "-X main.version=...";
// FLIP_RELEASE takes precedence at run time.
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 && os.Args[1] == "doctor" {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		code := doctor.Run(ctx, os.Args[2:], os.Getenv, os.Stdout)
		stop()
		os.Exit(code)
	}
	os.Exit(run())
}

func run() int {
	if len(os.Args) > 1 && slices.Contains(cli.Commands, os.Args[1]) {
		ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
		defer stop()
		return cli.Run(ctx, os.Args[1:], cli.Env{Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv})
	}
	fs := flag.NewFlagSet("trust-api", flag.ContinueOnError)
	probe := httpx.HealthFlag(fs)
	if err := fs.Parse(os.Args[1:]); err != nil {
		return 1
	}
	if *probe {
		return httpx.ProbeHealth(context.Background(), httpx.LocalHealthURL(os.Getenv("TRUST_API_ADDR"), "8000"))
	}

	cfg, err := config.Load(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "trust-api: invalid configuration:")
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(os.Stderr, "  - "+line)
		}
		return 1
	}
	level, _ := logging.ParseLevel(cfg.LogLevel) // validated by Load
	reg := httpx.NewRegistry()
	lg, err := logging.New(os.Stdout, logging.Options{
		Level: level, Service: "trust-api", Version: cfg.Version(version),
		LokiURL: cfg.LokiURL, LokiLabels: map[string]string{"env": cfg.Env},
	}, reg)
	if err != nil {
		fmt.Fprintln(os.Stderr, "trust-api: logging:", err)
		return 1
	}
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = lg.Close(ctx)
	}()
	logger := lg.Slog()
	logger.Info("trust-api configuration", "config", cfg.Safe())

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := app.New(cfg, logger, reg, version)
	if err != nil {
		logger.Error("trust-api cannot start", "error", err.Error())
		return 1
	}
	err = a.Run(ctx)
	var mm *hub.IdentityMismatchError
	switch {
	case errors.As(err, &mm):
		return 2
	case err != nil:
		logger.Error("trust-api stopped on an error", "error", err.Error())
		return 1
	}
	logger.Info("trust-api stopped")
	return 0
}
