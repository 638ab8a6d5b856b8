// Command data-access-api runs validated, read-only cohort SQL on the trust's
// OMOP database and answers with disclosure-controlled statistics, frozen
// cohort membership and training dataframes (FLIP's data-access-api routes).
//
//	data-access-api           run the service (configuration from the environment)
//	data-access-api -health   probe a running service (container healthcheck)
//	data-access-api doctor    check the OMOP database and that its role cannot write, the internal key and the snapshot disk
//
// Exit codes: 0 clean shutdown (doctor: no check failed), 1 error (doctor: a
// check failed; otherwise every configuration problem listed;
// an invalid governance policy names its line).
package main

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/data-access-api/internal/app"
	"github.com/flip-trust/node/services/data-access-api/internal/config"
	"github.com/flip-trust/node/services/data-access-api/internal/doctor"
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
		Name: "data-access-api", AddrEnv: "DATA_ACCESS_API_ADDR", Build: version, Load: config.Load,
		New: func(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (service.App, error) {
			return app.New(cfg, logger, reg, build)
		},
	}))
}
