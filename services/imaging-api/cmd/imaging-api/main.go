// Command imaging-api provisions imaging projects from the central hub,
// pulls each project's cohort studies from the PACS into staging (C-FIND and
// C-MOVE through a staging Orthanc), tracks every study's import durably and
// serves images to FL jobs (FLIP's imaging-api routes).
//
//	imaging-api           run the service (configuration from the environment)
//	imaging-api -health   probe a running service (container healthcheck)
//	imaging-api doctor    check the staging Orthanc, C-ECHO to the PACS, the internal key, data-access-api and the staging disk
//
// Exit codes: 0 clean shutdown (doctor: no check failed), 1 error (doctor: a
// check failed; otherwise every configuration problem listed).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/imaging-api/internal/app"
	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/services/imaging-api/internal/doctor"
	"github.com/flip-trust/node/shared/service"
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
	os.Exit(service.Main(service.Spec[config.Config]{
		Name: "imaging-api", AddrEnv: "IMAGING_API_ADDR", Build: version, Load: config.Load,
		New: func(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (service.App, error) {
			return app.New(cfg, logger, reg, build)
		},
	}))
}
