package doctor

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"

	"github.com/flip-trust/node/services/fl-client/internal/config"
	"github.com/flip-trust/node/services/fl-client/internal/gpu"
	"github.com/flip-trust/node/shared/doctor"
)

type fakeGPUs struct {
	devs []gpu.Device
	err  error
}

func (f fakeGPUs) Devices(context.Context) ([]gpu.Device, error) { return f.devs, f.err }

func run(c doctor.Check) doctor.Result {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return c.Run(ctx)
}

func TestGPU(t *testing.T) {
	t.Parallel()
	h100 := gpu.Device{Index: 0, Name: "NVIDIA H100 80GB HBM3", MemoryTotalMiB: 81559, MemoryUsedMiB: 559}
	cases := []struct {
		name string
		inv  fakeGPUs
		want doctor.Status
		text string
	}{
		{"one GPU", fakeGPUs{devs: []gpu.Device{h100}}, doctor.StatusPass, "81000/81559 MiB free"},
		{"no driver", fakeGPUs{err: gpu.ErrNoDriver}, doctor.StatusWarn, "no NVIDIA driver"},
		{"driver, no devices", fakeGPUs{}, doctor.StatusWarn, "no GPU visible"},
		{"NVML error", fakeGPUs{err: errors.New("driver/library version mismatch")}, doctor.StatusFail, "mismatch"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := run(GPU(tc.inv))
			if r.Status != tc.want || !strings.Contains(r.Detail, tc.text) {
				t.Errorf("%+v, want %s with %q", r, tc.want, tc.text)
			}
		})
	}
}

// TestDockerEngine checks the real engine when this host has one, and a
// socket that does not exist.
func TestDockerEngine(t *testing.T) {
	t.Parallel()
	missing, err := client.New(client.WithHost("unix://" + t.TempDir() + "/docker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer missing.Close()
	if r := run(Docker(config.RunnerDocker, "unix:///missing", missing, nil)); r.Status != doctor.StatusFail || r.Fix == "" {
		t.Errorf("missing socket: %+v", r)
	}
	if r := run(Docker(config.RunnerProcess, "", nil, nil)); r.Status != doctor.StatusSkip {
		t.Errorf("process runner: %+v", r)
	}
	if _, err := os.Stat("/var/run/docker.sock"); err != nil {
		t.Fatalf("no Docker Engine on this host (make deps installs docker.io): %v", err)
	}
	real, err := client.New()
	if err != nil {
		t.Fatal(err)
	}
	defer real.Close()
	if r := run(Docker(config.RunnerDocker, "", real, nil)); r.Status != doctor.StatusPass || !strings.Contains(r.Detail, "Docker Engine") {
		t.Errorf("local engine: %+v", r)
	}
}
