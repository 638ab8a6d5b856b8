// Command imaging-api provisions imaging projects from the central hub,
// pulls each project's cohort studies from the PACS into staging (C-FIND and
// C-MOVE through a staging Orthanc), tracks every study's import durably and
// serves images to FL jobs (FLIP's imaging-api routes).
//
// Exit codes: 0 clean shutdown, 1 error (every configuration problem listed).
package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/imaging-api/internal/app"
	"github.com/flip-trust/node/services/imaging-api/internal/config"
	"github.com/flip-trust/node/shared/service"
)

// version is the build identity, set with -ldflags "-X main.version=...";
// FLIP_RELEASE takes precedence at run time.
var version = "0.1.0-dev"

func main() {
	os.Exit(service.Main(service.Spec[config.Config]{
		Name: "imaging-api", AddrEnv: "IMAGING_API_ADDR", Build: version, Load: config.Load,
		New: func(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (service.App, error) {
			return app.New(cfg, logger, reg, build)
		},
	}))
}
