// Package config loads fl-client's settings from the environment. Every
// problem is reported at once; secrets may be given as NAME_FILE. fl-client
// fails closed: without an FL server, a client name and its secret it does
// not start.
package config

import (
	"errors"
	"fmt"
	"math"
	"net"
	"regexp"
	"slices"
	"strings"
	"time"

	sharedcfg "github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// Runners.
const (
	RunnerDocker  = "docker"
	RunnerProcess = "process"
	RunnerNone    = "none"
)

// Config is fl-client's configuration.
type Config struct {
	Env, LogLevel, LokiURL, Release string
	// Addr serves /health, /gpus and /metrics inside the trust.
	Addr string
	// WorkDir holds task workspaces and downloaded artifacts.
	WorkDir string

	ServerURL    string
	ClientName   string
	ClientSecret string
	CAFile       string
	CertFile     string
	KeyFile      string
	PollWait     time.Duration

	DataAccessURL string
	ImagingURL    string
	ImagesDir     string
	NetID         string
	InternalKey   string
	KeyHeader     string
	MeshMode      mesh.AuthMode

	// Runner runs container or process jobs; the built-in job always runs.
	Runner        string
	DockerHost    string
	AllowedImages []string
	// SitePolicy names the site policy file applied ("" when none).
	SitePolicy string
	// ProcessJobs maps a job name to the command the process runner runs.
	ProcessJobs map[string][]string
	JobUser     string
	JobMemory   int64
	JobCPUs     float64
	JobTimeout  time.Duration

	// TrustAPIURL is trust-api, the site's egress gate (TRUST_API_URL).
	// Without it nothing is submitted, unless EgressGate is off.
	TrustAPIURL string
	// EgressGate is "on" or "off" (EGRESS_GATE; off only in development).
	EgressGate string

	ClipNorm        float64
	NoiseMultiplier float64
	AllowMetrics    []string
	CountMetrics    []string
	MinCount        int64
}

var clientName = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Load reads the configuration through getenv and validates it.
func Load(getenv func(string) string) (Config, error) {
	l := sharedcfg.NewLoader(getenv)
	c := Config{
		Env:      l.String("ENV", "development"),
		LogLevel: l.String("LOG_LEVEL", "INFO"),
		LokiURL:  l.URL("LOKI_URL", ""),
		Release:  l.String("FLIP_RELEASE", ""),
		Addr:     l.String("FL_CLIENT_ADDR", ":8000"),
		WorkDir:  l.String("FL_WORK_DIR", "/var/lib/fl-client"),

		ServerURL:    l.URL("FL_SERVER_URL", ""),
		ClientName:   l.Required("FL_CLIENT_NAME"),
		ClientSecret: l.Secret("FL_CLIENT_SECRET", true),
		CAFile:       l.String("FL_CA_FILE", ""),
		CertFile:     l.String("FL_CLIENT_CERT_FILE", ""),
		KeyFile:      l.String("FL_CLIENT_KEY_FILE", ""),
		PollWait:     l.Seconds("FL_POLL_WAIT_SECONDS", 30*time.Second),

		DataAccessURL: l.URL("DATA_ACCESS_API_URL", "http://data-access-api:8000"),
		ImagingURL:    l.URL("IMAGING_API_URL", "http://imaging-api:8000"),
		ImagesDir:     l.String("IMAGES_DIR", "/app/data/images"),
		NetID:         l.String("NET_ID", "net-1"),
		InternalKey:   l.Secret("TRUST_INTERNAL_SERVICE_KEY", true),
		KeyHeader:     l.String("TRUST_INTERNAL_SERVICE_KEY_HEADER", mesh.HeaderInternalKey),

		Runner:        l.String("FL_RUNNER", RunnerDocker),
		DockerHost:    l.String("DOCKER_HOST", ""),
		AllowedImages: list(l.String("FL_ALLOWED_IMAGES", "")),
		JobUser:       l.String("FL_JOB_USER", "65534:65534"),
		JobMemory:     int64(l.Int("FL_JOB_MEMORY_MIB", 8192)) << 20,
		JobCPUs:       l.Float("FL_JOB_CPUS", 2),
		JobTimeout:    l.Seconds("FL_JOB_TIMEOUT_SECONDS", 6*time.Hour),

		TrustAPIURL: l.URL("TRUST_API_URL", ""),
		EgressGate:  strings.ToLower(l.String("EGRESS_GATE", "on")),

		ClipNorm:        l.Float("FL_DP_CLIP_NORM", 0),
		NoiseMultiplier: l.Float("FL_DP_NOISE_MULTIPLIER", 0),
		AllowMetrics:    list(l.String("FL_METRICS_ALLOW", "loss,auc,accuracy,train_loss,sample_count,tp,fp,tn,fn")),
		CountMetrics:    list(l.String("FL_METRICS_COUNTS", "tp,fp,tn,fn")),
		MinCount:        int64(l.Int("FL_MIN_COUNT", 10)),
	}
	if c.ServerURL == "" {
		l.Problem("FL_SERVER_URL is required")
	}
	mode, err := mesh.ParseAuthMode(getenv("TRUST_INTERNAL_AUTH"))
	if err != nil {
		l.Problem("TRUST_INTERNAL_AUTH: %v", err)
	}
	c.MeshMode = mode
	jobs, err := parseProcessJobs(getenv("FL_PROCESS_JOBS"))
	if err != nil {
		l.Problem("FL_PROCESS_JOBS: %v", err)
	}
	c.ProcessJobs = jobs
	if path := strings.TrimSpace(getenv(sitepolicy.EnvFile)); path != "" {
		site, err := sitepolicy.Load(path, int64(l.Int("COHORT_QUERY_THRESHOLD", 10)))
		if err != nil {
			l.Problem("%v", err)
		} else {
			c.applySitePolicy(site, getenv, l)
		}
	}
	return c, errors.Join(l.Err(), c.validate())
}

// applySitePolicy takes the site policy file's DP parameters, floor and
// image digests. The environment may only be stricter: a noise multiplier
// below the file's, or an allowed image the file does not list, is a
// problem; the metrics floor is the larger of FL_MIN_COUNT and the file's.
func (c *Config) applySitePolicy(site *sitepolicy.Policy, getenv func(string) string, l *sharedcfg.Loader) {
	c.SitePolicy = site.Source
	if site.DP.Set {
		if strings.TrimSpace(getenv("FL_DP_CLIP_NORM")) == "" {
			c.ClipNorm = site.DP.ClipNorm
		}
		if strings.TrimSpace(getenv("FL_DP_NOISE_MULTIPLIER")) == "" {
			c.NoiseMultiplier = site.DP.NoiseMultiplier
		} else if c.NoiseMultiplier < site.DP.NoiseMultiplier {
			l.Problem("FL_DP_NOISE_MULTIPLIER: %v is below the site policy's dp.noise_multiplier %v", c.NoiseMultiplier, site.DP.NoiseMultiplier)
		}
	}
	c.MinCount = max(c.MinCount, site.Floor)
	if len(site.Images) == 0 {
		return
	}
	if len(c.AllowedImages) == 0 {
		c.AllowedImages = slices.Clone(site.Images)
		return
	}
	for _, ref := range c.AllowedImages {
		i := strings.Index(ref, "sha256:")
		if i < 0 || !slices.Contains(site.Images, ref[i:]) {
			l.Problem("FL_ALLOWED_IMAGES: %q is not among the site policy's [images] allowed digests", ref)
		}
	}
}

// list splits a comma-separated value, dropping empty items.
func list(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseProcessJobs reads "name=command args;name2=command2": the jobs the
// process runner may run, by the name a task gives.
func parseProcessJobs(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, item := range strings.Split(s, ";") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, cmd, ok := strings.Cut(item, "=")
		name = strings.TrimSpace(name)
		argv := strings.Fields(cmd)
		if !ok || name == "" || len(argv) == 0 {
			return nil, fmt.Errorf("%q is not name=command", item)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("job %q named twice", name)
		}
		out[name] = argv
	}
	return out, nil
}

func (c Config) validate() error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Env != "development" && c.Env != "production" {
		add("ENV: %q is not one of development, production", c.Env)
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		add("LOG_LEVEL: %v", err)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		add("FL_CLIENT_ADDR: %v", err)
	}
	if c.ClientName != "" && !clientName.MatchString(c.ClientName) {
		add("FL_CLIENT_NAME: %q must be 1-64 letters, digits, '_', '.' or '-' (the kit slot name)", c.ClientName)
	}
	if c.ClientSecret != "" && len(c.ClientSecret) < 32 {
		add("FL_CLIENT_SECRET: must be at least 32 characters")
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		add("FL_CLIENT_CERT_FILE and FL_CLIENT_KEY_FILE: set both or neither")
	}
	if c.PollWait < time.Second || c.PollWait > 60*time.Second {
		add("FL_POLL_WAIT_SECONDS: must be between 1 and 60")
	}
	if c.InternalKey != "" && !mesh.KeyUsable([]byte(c.InternalKey)) {
		add("TRUST_INTERNAL_SERVICE_KEY: must be at least %d bytes", mesh.MinKeyBytes)
	}
	switch c.Runner {
	case RunnerDocker, RunnerProcess, RunnerNone:
	default:
		add("FL_RUNNER: %q is not one of docker, process, none", c.Runner)
	}
	for _, ref := range c.AllowedImages {
		if !strings.Contains(ref, "sha256:") {
			add("FL_ALLOWED_IMAGES: %q is not pinned by digest (name@sha256:... or sha256:...)", ref)
		}
	}
	if c.JobMemory <= 0 {
		add("FL_JOB_MEMORY_MIB: must be positive")
	}
	if c.JobCPUs <= 0 {
		add("FL_JOB_CPUS: must be positive")
	}
	if c.JobTimeout <= 0 {
		add("FL_JOB_TIMEOUT_SECONDS: must be positive")
	}
	if c.ClipNorm < 0 || math.IsNaN(c.ClipNorm) || math.IsInf(c.ClipNorm, 0) {
		add("FL_DP_CLIP_NORM: must be a finite number >= 0")
	}
	if c.NoiseMultiplier < 0 || math.IsNaN(c.NoiseMultiplier) || math.IsInf(c.NoiseMultiplier, 0) {
		add("FL_DP_NOISE_MULTIPLIER: must be a finite number >= 0")
	}
	if c.NoiseMultiplier > 0 && c.ClipNorm == 0 {
		add("FL_DP_NOISE_MULTIPLIER: noise needs a clipping norm (set FL_DP_CLIP_NORM)")
	}
	switch c.EgressGate {
	case "on":
	case "off":
		if c.Env == "production" {
			add("EGRESS_GATE: off is for development only (ENV=production)")
		}
	default:
		add("EGRESS_GATE: %q is not one of on, off", c.EgressGate)
	}
	if c.MinCount < 1 {
		add("FL_MIN_COUNT: must be at least 1")
	}
	return errors.Join(errs...)
}

// Logging returns LOG_LEVEL, LOKI_URL and ENV.
func (c Config) Logging() (level, lokiURL, env string) { return c.LogLevel, c.LokiURL, c.Env }

// Version is FLIP_RELEASE when set, else fallback.
func (c Config) Version(fallback string) string {
	if c.Release != "" {
		return c.Release
	}
	return fallback
}

// Safe is a redacted view of c for the startup log.
func (c Config) Safe() map[string]any {
	jobs := make([]string, 0, len(c.ProcessJobs))
	for name := range c.ProcessJobs {
		jobs = append(jobs, name)
	}
	return map[string]any{
		"ENV": c.Env, "LOG_LEVEL": c.LogLevel, "FL_CLIENT_ADDR": c.Addr, "FL_WORK_DIR": c.WorkDir,
		"FL_SERVER_URL": c.ServerURL, "FL_CLIENT_NAME": c.ClientName,
		"FL_CLIENT_SECRET": sharedcfg.Redact(c.ClientSecret), "FL_CA_FILE": c.CAFile,
		"FL_CLIENT_CERT_FILE": c.CertFile, "FL_POLL_WAIT_SECONDS": c.PollWait.Seconds(),
		"DATA_ACCESS_API_URL": c.DataAccessURL, "IMAGING_API_URL": c.ImagingURL, "IMAGES_DIR": c.ImagesDir,
		"NET_ID": c.NetID, "TRUST_INTERNAL_SERVICE_KEY": sharedcfg.Redact(c.InternalKey),
		"FL_RUNNER": c.Runner, "FL_ALLOWED_IMAGES": c.AllowedImages, "FL_PROCESS_JOBS": jobs, "SITE_POLICY_FILE": c.SitePolicy,
		"FL_JOB_USER": c.JobUser, "FL_JOB_MEMORY_MIB": c.JobMemory >> 20, "FL_JOB_CPUS": c.JobCPUs,
		"FL_JOB_TIMEOUT_SECONDS": c.JobTimeout.Seconds(), "FL_DP_CLIP_NORM": c.ClipNorm,
		"FL_DP_NOISE_MULTIPLIER": c.NoiseMultiplier, "FL_METRICS_ALLOW": c.AllowMetrics,
		"FL_METRICS_COUNTS": c.CountMetrics, "FL_MIN_COUNT": c.MinCount,
		"TRUST_API_URL": c.TrustAPIURL, "EGRESS_GATE": c.EgressGate,
	}
}
