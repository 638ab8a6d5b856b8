package compose

import (
	"context"
	"fmt"
	"path"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
)

// Policy is what a set of Compose files may do beyond the invariants.
type Policy struct {
	// SocketServices may mount the Docker Engine's socket.
	SocketServices []string
	// RootServices may run as uid 0 (still with every capability dropped).
	RootServices []string
	// PublicPorts lists "service:port" pairs that may be published on every
	// interface; every other published port must be bound to loopback.
	PublicPorts []string
	// GPUServices may reserve GPUs; when RequireGPU is set each of them must.
	GPUServices []string
	RequireGPU  bool
}

// OneShotLabel marks a run-once service (a seeding job): it needs no
// healthcheck and no restart policy, but every other invariant holds.
const OneShotLabel = "org.flip-trust.one-shot"

// Load reads files (later ones overlay earlier ones, as with docker compose
// -f a -f b) with env as the environment, every profile enabled.
func Load(ctx context.Context, env map[string]string, files ...string) (*types.Project, error) {
	var envList []string
	for k, v := range env {
		envList = append(envList, k+"="+v)
	}
	opts, err := cli.NewProjectOptions(files,
		cli.WithName("invariants"),
		cli.WithEnv(envList),
		cli.WithProfiles([]string{"*"}),
		cli.WithResolvedPaths(false),
	)
	if err != nil {
		return nil, fmt.Errorf("compose options: %w", err)
	}
	p, err := opts.LoadProject(ctx)
	if err != nil {
		return nil, fmt.Errorf("load %s: %w", strings.Join(files, ", "), err)
	}
	return p, nil
}

// secretEnv matches variables that carry a secret value; they must be given
// as <NAME>_FILE pointing at a mounted secret instead.
var secretEnv = regexp.MustCompile(`(_KEY|_SECRET|_PASSWORD|_TOKEN|_KEY_BASE64)$`)

// dockerSockets are the paths where the Docker Engine's socket lives.
var dockerSockets = []string{"/var/run/docker.sock", "/run/docker.sock"}

// Check returns every violation of the invariants in p under pol, one line
// each, sorted; none means the files are fine.
func Check(p *types.Project, pol Policy) []string {
	var bad []string
	add := func(svc, format string, a ...any) {
		bad = append(bad, svc+": "+fmt.Sprintf(format, a...))
	}
	for name, s := range p.Services {
		oneShot := s.Labels[OneShotLabel] == "true"
		if !slices.Contains(pol.RootServices, name) && isRoot(s.User) {
			add(name, "runs as root (user %q): set a non-root user", s.User)
		}
		if !s.ReadOnly {
			add(name, "root filesystem is writable: set read_only: true")
		}
		if !slices.ContainsFunc(s.CapDrop, func(c string) bool { return strings.EqualFold(c, "ALL") }) {
			add(name, "capabilities not dropped: set cap_drop: [ALL]")
		}
		if len(s.CapAdd) > 0 {
			add(name, "adds capabilities %v", s.CapAdd)
		}
		if s.Privileged {
			add(name, "is privileged")
		}
		if !slices.ContainsFunc(s.SecurityOpt, func(o string) bool {
			return o == "no-new-privileges" || o == "no-new-privileges:true" || o == "no-new-privileges=true"
		}) {
			add(name, "privilege escalation allowed: set security_opt: [no-new-privileges:true]")
		}
		if !oneShot {
			if s.HealthCheck == nil || s.HealthCheck.Disable || len(s.HealthCheck.Test) == 0 || s.HealthCheck.Test[0] == "NONE" {
				add(name, "has no healthcheck")
			}
			if s.Restart == "" || s.Restart == "no" {
				add(name, "has no restart policy")
			}
		}
		for _, v := range s.Volumes {
			if isSocket(v.Source) || isSocket(v.Target) {
				if !slices.Contains(pol.SocketServices, name) {
					add(name, "mounts the Docker socket (%s); only %v may", v.Source, pol.SocketServices)
				}
			}
		}
		for _, port := range s.Ports {
			if port.Published == "" {
				continue
			}
			if port.HostIP == "127.0.0.1" || port.HostIP == "::1" {
				continue
			}
			if !slices.Contains(pol.PublicPorts, fmt.Sprintf("%s:%d", name, port.Target)) {
				add(name, "publishes port %d on %q (every interface): bind it to 127.0.0.1", port.Target, hostIP(port.HostIP))
			}
		}
		attached := map[string]bool{}
		for _, sec := range s.Secrets {
			attached[sec.Source] = true
			if sec.Target != "" {
				attached[path.Base(sec.Target)] = true
			}
		}
		for k, v := range s.Environment {
			if v == nil || *v == "" {
				continue
			}
			if secretEnv.MatchString(k) {
				add(name, "passes the secret %s in its environment: use %s_FILE and a secret", k, k)
			}
			if strings.HasSuffix(k, "_FILE") && strings.HasPrefix(*v, "/run/secrets/") {
				if sec := strings.TrimPrefix(*v, "/run/secrets/"); !attached[sec] {
					add(name, "%s names /run/secrets/%s, which is not one of its secrets", k, sec)
				}
			}
		}
		gpus := reservesGPU(s)
		switch {
		case gpus && !slices.Contains(pol.GPUServices, name):
			add(name, "reserves GPUs; only %v may", pol.GPUServices)
		case !gpus && pol.RequireGPU && slices.Contains(pol.GPUServices, name):
			add(name, "reserves no GPU")
		}
	}
	if pol.RequireGPU {
		for _, g := range pol.GPUServices {
			if _, ok := p.Services[g]; !ok {
				add(g, "is missing (it must reserve GPUs)")
			}
		}
	}
	sort.Strings(bad)
	return bad
}

func isRoot(user string) bool {
	u, _, _ := strings.Cut(strings.TrimSpace(user), ":")
	return u == "" || u == "0" || u == "root"
}

func isSocket(p string) bool {
	return slices.Contains(dockerSockets, path.Clean(p)) || strings.HasSuffix(p, "/docker.sock")
}

func hostIP(ip string) string {
	if ip == "" {
		return "0.0.0.0"
	}
	return ip
}

func reservesGPU(s types.ServiceConfig) bool {
	if s.Deploy == nil || s.Deploy.Resources.Reservations == nil {
		return false
	}
	for _, d := range s.Deploy.Resources.Reservations.Devices {
		if slices.Contains(d.Capabilities, "gpu") {
			return true
		}
	}
	return false
}
