// Package doctor is "fl-client doctor": the checks of fl-client's own
// dependencies with its own configuration — the FL server (reachability
// with the client's CA and proxy settings, TLS certificate, clock skew), the
// GPUs and driver as NVML reports them, the Docker Engine the docker runner
// drives, the internal services, the internal key and the work and image
// disks. It prints shared/doctor's line format.
package doctor

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/moby/moby/client"

	"github.com/flip-trust/node/services/fl-client/internal/config"
	"github.com/flip-trust/node/services/fl-client/internal/gpu"
	"github.com/flip-trust/node/shared/doctor"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
)

// Thresholds of the checks.
const (
	CertWarnWithin = 21 * 24 * time.Hour
	ClockWarn      = 5 * time.Second
	ClockFail      = time.Minute
	DiskFailBelow  = 1 << 30
	DiskWarnBelow  = 10 << 30
)

// Engine is the part of the Docker Engine API the check uses;
// *client.Client implements it.
type Engine interface {
	Ping(ctx context.Context, opts client.PingOptions) (client.PingResult, error)
	ServerVersion(ctx context.Context, opts client.ServerVersionOptions) (client.ServerVersionResult, error)
}

var _ Engine = (*client.Client)(nil)

// Run runs "fl-client doctor" with args (after "doctor") and the environment
// read through getenv; it returns the exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	timeout := fs.Duration("timeout", 15*time.Second, "bound on each check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(getenv)
	checks := []doctor.Check{doctor.Config(err)}

	fl, tlsErr := flproto.NewHTTPClient(flproto.TLSOptions{CAFile: cfg.CAFile, CertFile: cfg.CertFile, KeyFile: cfg.KeyFile})
	if tlsErr != nil {
		checks = append(checks, doctor.Check{Name: "FL client TLS files", Run: func(context.Context) doctor.Result {
			return doctor.Fail("check FL_CA_FILE, FL_CLIENT_CERT_FILE and FL_CLIENT_KEY_FILE (PEM, readable by the service's user)", "%v", tlsErr)
		}})
		fl = httpx.NewClient(*timeout)
	}
	fl.Timeout = *timeout
	checks = append(checks, ServerChecks(cfg.ServerURL, fl)...)

	nv := gpu.NewNVML()
	defer func() { _ = nv.Close() }()
	checks = append(checks, GPU(nv))

	var engine Engine
	var engineErr error
	if cfg.Runner == config.RunnerDocker {
		c, err := client.New(dockerOpts(cfg.DockerHost)...)
		if err != nil {
			engineErr = err
		} else {
			defer func() { _ = c.Close() }()
			engine = c
		}
	}
	checks = append(checks, Docker(cfg.Runner, cfg.DockerHost, engine, engineErr))

	local := httpx.NewClient(*timeout)
	checks = append(checks,
		doctor.NewEndpoint(strings.TrimRight(cfg.DataAccessURL, "/")+"/health", local).Reachable("data-access-api reachable",
			"start data-access-api, or correct DATA_ACCESS_API_URL"),
		doctor.NewEndpoint(strings.TrimRight(cfg.ImagingURL, "/")+"/health", local).Reachable("imaging-api reachable",
			"start imaging-api, or correct IMAGING_API_URL"),
		doctor.InternalKey(cfg.InternalKey),
		doctor.DiskSpace("work disk", "FL_WORK_DIR", cfg.WorkDir, DiskFailBelow, DiskWarnBelow),
		doctor.DiskSpace("images disk", "IMAGES_DIR", cfg.ImagesDir, DiskFailBelow, DiskWarnBelow),
	)
	return doctor.Run(ctx, stdout, "fl-client", checks, doctor.Options{Timeout: *timeout}).ExitCode()
}

func dockerOpts(host string) []client.Opt {
	if host == "" {
		return nil
	}
	return []client.Opt{client.WithHost(host)}
}

// ServerChecks check the FL server at serverURL with the client fl-client
// uses for it.
func ServerChecks(serverURL string, hc *http.Client) []doctor.Check {
	srv := doctor.NewEndpoint(serverURL, hc)
	return []doctor.Check{
		srv.Reachable("FL server reachable", "allow outbound HTTPS from this host to the FL server host (and set HTTPS_PROXY if the site has a proxy); check FL_SERVER_URL"),
		srv.TLS("FL server TLS certificate", CertWarnWithin),
		srv.Clock("clock skew (FL server Date)", ClockWarn, ClockFail),
	}
}

// GPU reports the GPUs NVML sees. No driver is a warning: CPU jobs still run.
func GPU(inv gpu.Inventory) doctor.Check {
	return doctor.Check{Name: "GPU and driver", Run: func(ctx context.Context) doctor.Result {
		devs, err := inv.Devices(ctx)
		switch {
		case errors.Is(err, gpu.ErrNoDriver):
			return doctor.Warn("on a GPU node install the NVIDIA driver and Container Toolkit (docs/deploy-tre.md, GPU nodes); on a CPU node ignore this",
				"no NVIDIA driver: only CPU jobs can run")
		case err != nil:
			return doctor.Fail("run nvidia-smi on the host; a driver/library version mismatch needs a reboot after a driver upgrade", "NVML: %v", err)
		case len(devs) == 0:
			return doctor.Warn("check that the GPUs are visible to this container (NVIDIA_VISIBLE_DEVICES, the nvidia runtime)", "driver loaded, no GPU visible")
		}
		var parts []string
		for _, d := range devs {
			mig := ""
			if d.MIGEnabled {
				mig = fmt.Sprintf(", MIG with %d instances", len(d.MIGDevices))
			}
			parts = append(parts, fmt.Sprintf("%d: %s, %d/%d MiB free%s", d.Index, d.Name, d.MemoryFreeMiB(), d.MemoryTotalMiB, mig))
		}
		return doctor.Pass("%d GPU(s): %s", len(devs), strings.Join(parts, "; "))
	}}
}

// Docker checks the engine the docker runner drives (engine, or the error
// building its client); other runners skip it.
func Docker(runner, host string, engine Engine, clientErr error) doctor.Check {
	return doctor.Check{Name: "Docker Engine", Run: func(ctx context.Context) doctor.Result {
		if runner != config.RunnerDocker {
			return doctor.Skip("FL_RUNNER=%s does not use Docker", runner)
		}
		where := host
		if where == "" {
			where = "the default socket"
		}
		fix := "give fl-client the engine's socket (mount /var/run/docker.sock, or set DOCKER_HOST), or set FL_RUNNER=process on hosts without Docker"
		if clientErr != nil {
			return doctor.Fail(fix, "docker client for %s: %v", where, clientErr)
		}
		if _, err := engine.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
			return doctor.Fail(fix, "ping %s: %v", where, err)
		}
		v, err := engine.ServerVersion(ctx, client.ServerVersionOptions{})
		if err != nil {
			return doctor.Fail(fix, "version from %s: %v", where, err)
		}
		return doctor.Pass("Docker Engine %s (API %s) at %s", v.Version, v.APIVersion, where)
	}}
}
