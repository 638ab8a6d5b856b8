// Command data-access-api runs validated, read-only cohort SQL on the trust's
// OMOP database and answers with disclosure-controlled statistics, frozen
// cohort membership and training dataframes (FLIP's data-access-api routes).
//
// Exit codes: 0 clean shutdown, 1 error (every configuration problem listed;
// an invalid governance policy names its line).
package main

import (
	"log/slog"
	"os"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/data-access-api/internal/app"
	"github.com/flip-trust/node/services/data-access-api/internal/config"
	"github.com/flip-trust/node/shared/service"
)

// version is the build identity, set with -ldflags "-X main.version=...";
// FLIP_RELEASE takes precedence at run time.
var version = "0.1.0-dev"

func main() {
	os.Exit(service.Main(service.Spec[config.Config]{
		Name: "data-access-api", AddrEnv: "DATA_ACCESS_API_ADDR", Build: version, Load: config.Load,
		New: func(cfg config.Config, logger *slog.Logger, reg *prometheus.Registry, build string) (service.App, error) {
			return app.New(cfg, logger, reg, build)
		},
	}))
}
