// Command dev-hub is the development and test counterpart of the FLIP Central
// Hub: the hub's trust-facing API, an admin API and CLI to register trusts and
// enqueue tasks, and a stand-in for a trust's internal services. It is never
// deployed in a trust. Run `dev-hub -h` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/flip-trust/node/services/dev-hub/internal/app"
	"github.com/flip-trust/node/services/dev-hub/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], cli.Env{
		Stdout: os.Stdout,
		Stderr: os.Stderr,
		Getenv: os.Getenv,
		Servers: cli.Servers{
			Serve:   func(ctx context.Context) error { return app.Serve(ctx, os.Getenv, os.Stdout) },
			Standin: func(ctx context.Context) error { return app.ServeStandin(ctx, os.Getenv, os.Stdout) },
		},
	})
	stop()
	os.Exit(code)
}
