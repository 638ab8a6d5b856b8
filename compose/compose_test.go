package compose

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// kitEnv is a trust's kit .env plus the host settings, as an operator has it.
var kitEnv = map[string]string{
	"CENTRAL_HUB_API_URL":  "https://hub.example/api",
	"TRUST_API_KEY_HEADER": "Authorization",
	"EXPECTED_TRUST_ID":    "7d4c3f0e-1b2a-4c5d-8e9f-0a1b2c3d4e5f",
	"FL_SERVER_URL":        "https://fl.hub.example",
	"FL_CLIENT_NAME":       "Trust_1",
	"NUM_AVAILABLE_GPUS":   "2",
	"FLIP_ROOT":            "/opt/flip",
}

// nodePolicy is what compose.yaml and its overlays may do.
var nodePolicy = Policy{SocketServices: []string{"fl-client"}, GPUServices: []string{"fl-client"}}

func TestComposeFilesKeepTheInvariants(t *testing.T) {
	t.Parallel()
	obs := nodePolicy
	// Alloy reads the engine's root-owned log files (no socket, no capabilities).
	obs.RootServices = []string{"alloy"}
	gpu := nodePolicy
	gpu.RequireGPU = true
	for _, tc := range []struct {
		files []string
		pol   Policy
		want  []string // services that must be present
	}{
		{[]string{"compose.yaml"}, nodePolicy, []string{"trust-api", "data-access-api", "imaging-api", "fl-client"}},
		{[]string{"compose.yaml", "compose.gpu.yaml"}, gpu, []string{"fl-client"}},
		{[]string{"compose.yaml", "compose.dev.yaml"}, nodePolicy, []string{"dev-hub", "omop-db", "pacs", "orthanc-staging", "pacs-seed"}},
		{[]string{"compose.yaml", "compose.observability.yaml"}, obs, []string{"loki", "alloy", "prometheus", "grafana"}},
		{[]string{"compose.yaml", "compose.gpu.yaml", "compose.observability.yaml", "compose.dev.yaml"}, func() Policy { p := obs; p.RequireGPU = true; return p }(), nil},
	} {
		t.Run(strings.Join(tc.files, "+"), func(t *testing.T) {
			t.Parallel()
			p, err := Load(context.Background(), kitEnv, tc.files...)
			if err != nil {
				t.Fatal(err)
			}
			for _, s := range tc.want {
				if _, ok := p.Services[s]; !ok {
					t.Errorf("service %s missing", s)
				}
			}
			for _, v := range Check(p, tc.pol) {
				t.Errorf("invariant broken: %s", v)
			}
		})
	}
}

func TestNodeSettings(t *testing.T) {
	t.Parallel()
	p, err := Load(context.Background(), kitEnv, "compose.yaml", "compose.gpu.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// Keys reach the services as files, from the kit's secrets under FLIP_ROOT.
	for name, want := range map[string][]string{
		"trust-api":       {"trust_api_key", "aes_key_base64", "trust_internal_service_key"},
		"data-access-api": {"data_access_postgres_password", "aes_key_base64", "trust_internal_service_key"},
		"imaging-api":     {"orthanc_password", "aes_key_base64", "trust_internal_service_key"},
		"fl-client":       {"fl_client_secret", "trust_internal_service_key"},
	} {
		s := p.Services[name]
		var got []string
		for _, sec := range s.Secrets {
			got = append(got, sec.Source)
		}
		for _, w := range want {
			if !slices.Contains(got, w) {
				t.Errorf("%s: secret %s not attached (has %v)", name, w, got)
			}
		}
		if strings.HasPrefix(s.Image, "flip-trust/") && !strings.HasSuffix(s.Image, ":local") {
			t.Errorf("%s: image %s", name, s.Image)
		}
	}
	for name, sec := range p.Secrets {
		if !strings.HasPrefix(sec.File, "/opt/flip/secrets/") {
			t.Errorf("secret %s read from %s, not under FLIP_ROOT/secrets", name, sec.File)
		}
	}
	// The GPU count comes from the kit.
	devs := p.Services["fl-client"].Deploy.Resources.Reservations.Devices
	if len(devs) != 1 || devs[0].Count != 2 || devs[0].Driver != "nvidia" {
		t.Errorf("fl-client GPU reservation %+v, want 2 nvidia GPUs from NUM_AVAILABLE_GPUS", devs)
	}
	// The services meet on an internal network.
	if !p.Networks["mesh"].Internal {
		t.Error("the mesh network is not internal")
	}
	// A missing kit value is refused, not silently empty.
	env := map[string]string{}
	for k, v := range kitEnv {
		if k != "CENTRAL_HUB_API_URL" {
			env[k] = v
		}
	}
	if _, err := Load(context.Background(), env, "compose.yaml"); err == nil || !strings.Contains(err.Error(), "CENTRAL_HUB_API_URL") {
		t.Errorf("without CENTRAL_HUB_API_URL: %v, want an error naming it", err)
	}
}

// Each file in testdata/bad breaks one invariant; Check must name it.
func TestViolationsAreDetected(t *testing.T) {
	t.Parallel()
	pol := nodePolicy
	for file, want := range map[string]string{
		"root.yaml":          "runs as root",
		"writable.yaml":      "root filesystem is writable",
		"caps.yaml":          "capabilities not dropped",
		"capadd.yaml":        "adds capabilities",
		"privileged.yaml":    "is privileged",
		"escalation.yaml":    "privilege escalation allowed",
		"nohealth.yaml":      "has no healthcheck",
		"norestart.yaml":     "has no restart policy",
		"socket.yaml":        "mounts the Docker socket",
		"public-port.yaml":   "publishes port 8000",
		"env-secret.yaml":    "passes the secret TRUST_API_KEY",
		"unattached.yaml":    "names /run/secrets/trust_api_key",
		"gpu-elsewhere.yaml": "reserves GPUs",
	} {
		t.Run(file, func(t *testing.T) {
			t.Parallel()
			p, err := Load(context.Background(), kitEnv, filepath.Join("testdata", "bad", file))
			if err != nil {
				t.Fatal(err)
			}
			got := Check(p, pol)
			if len(got) != 1 || !strings.Contains(got[0], want) {
				t.Errorf("violations %q, want exactly one containing %q", got, want)
			}
		})
	}
	t.Run("gpu overlay missing", func(t *testing.T) {
		t.Parallel()
		p, err := Load(context.Background(), kitEnv, "compose.yaml")
		if err != nil {
			t.Fatal(err)
		}
		gpu := pol
		gpu.RequireGPU = true
		if got := Check(p, gpu); len(got) != 1 || !strings.Contains(got[0], "fl-client: reserves no GPU") {
			t.Errorf("violations %q, want fl-client reserving no GPU", got)
		}
	})
}

// docker-compose v1 (the Python one, still on many hosts) must accept every
// combination too; skipped where it is not installed.
func TestDockerComposeV1Config(t *testing.T) {
	t.Parallel()
	bin, err := exec.LookPath("docker-compose")
	if err != nil {
		t.Skip("docker-compose (v1) not installed")
	}
	envFile := filepath.Join(t.TempDir(), "kit.env")
	var b strings.Builder
	for k, v := range kitEnv {
		b.WriteString(k + "=" + v + "\n")
	}
	if err := os.WriteFile(envFile, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, files := range [][]string{
		{"compose.yaml"},
		{"compose.yaml", "compose.gpu.yaml"},
		{"compose.yaml", "compose.dev.yaml"},
		{"compose.yaml", "compose.observability.yaml"},
		{"compose.yaml", "compose.gpu.yaml", "compose.observability.yaml", "compose.dev.yaml"},
	} {
		args := []string{"--env-file", envFile, "--project-directory", "."}
		for _, f := range files {
			args = append(args, "-f", f)
		}
		cmd := exec.Command(bin, append(args, "config", "-q")...)
		cmd.Env = append(os.Environ(), "COMPOSE_PROFILES=seed")
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			t.Errorf("docker-compose %s config: %v\n%s", strings.Join(files, " + "), err, out.String())
		}
	}
	// And it refuses a broken file, so the check above can fail.
	cmd := exec.Command(bin, "-f", filepath.Join("testdata", "bad", "invalid.yaml"), "config", "-q")
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("docker-compose accepted testdata/bad/invalid.yaml:\n%s", out)
	}
}
