// Package service is the command shell of a trust-node service: the -health
// probe for container healthchecks, configuration loading with every problem
// listed, logging, listening, and running until SIGINT or SIGTERM.
package service

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// Config is what the shell needs of a service's configuration.
type Config interface {
	// Logging returns LOG_LEVEL (already validated), LOKI_URL and ENV.
	Logging() (level, lokiURL, env string)
	// Version is FLIP_RELEASE when set, else build.
	Version(build string) string
	// Safe is the redacted configuration for the startup log.
	Safe() map[string]any
}

// App is a built service.
type App interface {
	Listen() (net.Addr, error)
	Run(ctx context.Context) error
}

// Spec describes a service to Main.
type Spec[C Config] struct {
	// Name is the service's name, in logs and messages.
	Name string
	// AddrEnv is the variable holding the listen address (for -health).
	AddrEnv string
	// Build is the binary's version.
	Build string
	Load  func(getenv func(string) string) (C, error)
	New   func(cfg C, logger *slog.Logger, reg *prometheus.Registry, build string) (App, error)
}

// Main runs the service described by s with the process's arguments and
// environment and returns the exit code: 0 after a clean shutdown, 1 on any
// error (every configuration problem is listed on stderr).
func Main[C Config](s Spec[C]) int {
	return run(s, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
}

func run[C Config](s Spec[C], args []string, getenv func(string) string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(s.Name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	probe := httpx.HealthFlag(fs)
	if err := fs.Parse(args); err != nil {
		return 1
	}
	if *probe {
		return httpx.ProbeHealth(context.Background(), httpx.LocalHealthURL(getenv(s.AddrEnv), "8000"))
	}
	cfg, err := s.Load(getenv)
	if err != nil {
		fmt.Fprintf(stderr, "%s: invalid configuration:\n", s.Name)
		for _, line := range strings.Split(err.Error(), "\n") {
			fmt.Fprintln(stderr, "  - "+line)
		}
		return 1
	}
	levelName, loki, env := cfg.Logging()
	level, _ := logging.ParseLevel(levelName) // validated by Load
	reg := httpx.NewRegistry()
	lg, err := logging.New(stdout, logging.Options{
		Level: level, Service: s.Name, Version: cfg.Version(s.Build),
		LokiURL: loki, LokiLabels: map[string]string{"env": env},
	}, reg)
	if err != nil {
		fmt.Fprintf(stderr, "%s: logging: %v\n", s.Name, err)
		return 1
	}
	defer lg.Close(context.Background())
	logger := lg.Slog()
	logger.Info("starting", "config", cfg.Safe())

	a, err := s.New(cfg, logger, reg, s.Build)
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", s.Name, err)
		logger.Error("startup failed", "error", err.Error())
		return 1
	}
	addr, err := a.Listen()
	if err != nil {
		fmt.Fprintf(stderr, "%s: listen: %v\n", s.Name, err)
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
