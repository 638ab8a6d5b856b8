// Command fl-client is the trust's federated-learning client: it long-polls
// the FL server for tasks, stages the frozen cohort's data, runs each job in
// its sandbox, applies the site's privacy filters and submits the result
// (docs/fl-client.md, docs/fl-protocol.md).
//
//	fl-client                      run the service (configuration from the environment)
//	fl-client -health              probe a running service (container healthcheck)
//	fl-client gpus [-json]         print the GPU inventory NVML reports
//	fl-client artifact get|put ... move an artifact to or from the FL server by hand
//	fl-client doctor               check the FL server, clock, GPUs, Docker Engine, internal services and disks
//
// Exit codes: 0 success, 1 error (doctor: a check failed), 2 bad usage.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/fl-client/internal/app"
	"github.com/flip-trust/node/services/fl-client/internal/config"
	"github.com/flip-trust/node/services/fl-client/internal/doctor"
	"github.com/flip-trust/node/services/fl-client/internal/gpucmd"
	"github.com/flip-trust/node/services/fl-client/internal/transfercmd"
	"github.com/flip-trust/node/shared/service"
)

// version is the build identity, set with -ldflags "-X main.version=...";
// FLIP_RELEASE takes precedence at run time.
var version = "0.1.0-dev"

func main() {
	if len(os.Args) > 1 {
		switch os.Args[1] {
		case "artifact", "gpus":
			os.Exit(command(os.Args[1], os.Args[2:]))
		case "doctor":
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			code := doctor.Run(ctx, os.Args[2:], os.Getenv, os.Stdout)
			stop()
			os.Exit(code)
		}
	}
	os.Exit(service.Main(service.Spec[config.Config]{
		Name: "fl-client", AddrEnv: "FL_CLIENT_ADDR", Build: version, Load: config.Load,
		New: func(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (service.App, error) {
			return app.New(cfg, logger, reg, build)
		},
	}))
}

// command runs one of the operator commands.
func command(name string, args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch name {
	case "artifact":
		err = transfercmd.Run(ctx, args, os.Stdout, os.Stderr)
	case "gpus":
		err = gpucmd.Run(ctx, args, os.Stdout)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, transfercmd.ErrUsage):
		fmt.Fprintln(os.Stderr, err)
		return 2
	default:
		fmt.Fprintln(os.Stderr, "fl-client:", err)
		return 1
	}
}
