package gpucmd

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/flip-trust/node/services/fl-client/internal/gpu"
)

// fakeInventory stands in for a GPU host (this machine has none).
type fakeInventory struct {
	devs   []gpu.Device
	closed int
}

func (f *fakeInventory) Devices(context.Context) ([]gpu.Device, error) { return f.devs, nil }
func (f *fakeInventory) Close() error                                  { f.closed++; return nil }

func TestRunPrintsTable(t *testing.T) {
	t.Parallel()
	inv := &fakeInventory{devs: []gpu.Device{{Index: 0, UUID: "GPU-abc", Name: "NVIDIA L4", MemoryTotalMiB: 23034, MemoryUsedMiB: 0, UtilizationPct: 3}}}
	var out bytes.Buffer
	if err := run(context.Background(), nil, &out, inv); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"INDEX", "GPU-abc", "NVIDIA L4", "0/23034 MiB", "3%"} {
		if !strings.Contains(out.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, out.String())
		}
	}
	if inv.closed != 1 {
		t.Errorf("inventory closed %d times, want once", inv.closed)
	}
}

func TestRunJSON(t *testing.T) {
	t.Parallel()
	inv := &fakeInventory{devs: []gpu.Device{{Index: 0, UUID: "GPU-abc", Name: "NVIDIA L4", MemoryTotalMiB: 23034}}}
	var out bytes.Buffer
	if err := run(context.Background(), []string{"-json"}, &out, inv); err != nil {
		t.Fatal(err)
	}
	var s gpu.Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	if !s.Available || len(s.Devices) != 1 || s.Devices[0].UUID != "GPU-abc" {
		t.Errorf("summary = %+v", s)
	}
}

func TestRunRejectsArguments(t *testing.T) {
	t.Parallel()
	for _, args := range [][]string{{"-nope"}, {"extra"}} {
		inv := &fakeInventory{}
		if err := run(context.Background(), args, &bytes.Buffer{}, inv); err == nil {
			t.Errorf("args %q accepted", args)
		}
		if inv.closed != 1 {
			t.Errorf("args %q: inventory not closed", args)
		}
	}
}

// TestRunOnThisHost runs the command against the real NVML: without a
// driver it says so and succeeds; with one it lists GPUs.
func TestRunOnThisHost(t *testing.T) {
	t.Parallel()
	var out bytes.Buffer
	if err := Run(context.Background(), []string{"-json"}, &out); err != nil {
		t.Fatal(err)
	}
	var s gpu.Summary
	if err := json.Unmarshal(out.Bytes(), &s); err != nil {
		t.Fatalf("output is not JSON: %v\n%s", err, out.String())
	}
	_, statErr := os.Stat("/proc/driver/nvidia/version")
	switch hasDriver := !errors.Is(statErr, os.ErrNotExist); {
	case !hasDriver && (s.Available || !strings.Contains(s.Reason, "no NVIDIA driver")):
		t.Errorf("without a driver: %+v", s)
	case hasDriver && (!s.Available || len(s.Devices) == 0):
		t.Errorf("with a driver: %+v", s)
	}
	t.Logf("%s", out.String())
}
