package app

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/flip-trust/node/services/dev-hub/internal/config"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
)

// flushTimeout bounds flushing the log pipeline at exit.
const flushTimeout = 5 * time.Second

// Serve is `dev-hub serve`: load the configuration through getenv, log JSON
// to stdout, and run the hub until ctx is done.
func Serve(ctx context.Context, getenv func(string) string, stdout io.Writer) (err error) {
	cfg, err := config.Load(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	reg := httpx.NewRegistry()
	logger, err := logging.New(stdout, logging.Options{Level: cfg.LogLevel, Service: "dev-hub", Version: cfg.Version, LokiURL: cfg.LokiURL}, reg)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		err = errors.Join(err, logger.Close(flushCtx))
	}()
	a, err := New(cfg, logger.Slog(), reg)
	if err != nil {
		return err
	}
	return a.Run(ctx)
}

// ServeStandin is `dev-hub standin`: the stand-in for a trust's
// data-access-api and imaging-api, configured through getenv.
func ServeStandin(ctx context.Context, getenv func(string) string, stdout io.Writer) (err error) {
	cfg, err := LoadStandinConfig(getenv)
	if err != nil {
		return fmt.Errorf("configuration:\n%w", err)
	}
	reg := httpx.NewRegistry()
	logger, err := logging.New(stdout, logging.Options{Level: cfg.LogLevel, Service: "dev-hub-standin", Version: config.BuildIdentity()}, reg)
	if err != nil {
		return fmt.Errorf("logging: %w", err)
	}
	defer func() {
		flushCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), flushTimeout)
		defer cancel()
		err = errors.Join(err, logger.Close(flushCtx))
	}()
	return RunStandin(ctx, cfg, logger.Slog(), reg)
}
