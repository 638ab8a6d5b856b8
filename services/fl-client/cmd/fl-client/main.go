// Command fl-client is the trust's federated-learning client. `fl-client
// artifact get|put` moves an artifact between a file and the FL server by
// hand (docs/fl-client.md).
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/flip-trust/node/services/fl-client/internal/transfercmd"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:])
	stop()
	os.Exit(code)
}

func run(ctx context.Context, args []string) int {
	if len(args) == 0 || args[0] != "artifact" {
		fmt.Fprintln(os.Stderr, "usage: fl-client artifact get|put ...")
		return 2
	}
	err := transfercmd.Run(ctx, args[1:], os.Stdout, os.Stderr)
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
