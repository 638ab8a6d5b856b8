// Package gpucmd is the "fl-client gpus" command: it prints the host's GPUs
// as NVML reports them, as a table or as the JSON that /gpus serves. A host
// without the NVIDIA driver is reported, not an error.
package gpucmd

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/flip-trust/node/services/fl-client/internal/gpu"
)

// inventory is what the command reads and closes.
type inventory interface {
	gpu.Inventory
	Close() error
}

// Run runs "fl-client gpus" with args (the arguments after "gpus"), writing
// to stdout. Flags: -json prints the JSON summary instead of a table.
func Run(ctx context.Context, args []string, stdout io.Writer) error {
	return run(ctx, args, stdout, gpu.NewNVML())
}

func run(ctx context.Context, args []string, stdout io.Writer, inv inventory) (err error) {
	defer func() { err = errors.Join(err, inv.Close()) }()
	fs := flag.NewFlagSet("gpus", flag.ContinueOnError)
	fs.SetOutput(stdout)
	asJSON := fs.Bool("json", false, "print the JSON summary that /gpus serves")
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("gpus: %w", err)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("gpus: unexpected arguments %q", fs.Args())
	}
	s := gpu.Report(ctx, inv)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(s); err != nil {
			return fmt.Errorf("gpus: %w", err)
		}
		return nil
	}
	if err := gpu.Print(stdout, s); err != nil {
		return fmt.Errorf("gpus: %w", err)
	}
	return nil
}
