// Package config holds the development hub's settings, read from the
// environment with the shared loader: listen addresses, the admin token, the
// data directory, the shared AES key, and the hub's task and rate-limit
// policy (FLIP's defaults).
package config

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"runtime/debug"
	"sort"
	"strings"
	"time"

	"github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/logging"
)

// Defaults, FLIP's where FLIP has one.
const (
	DefaultAddr          = "127.0.0.1:8080"
	DefaultAdminAddr     = "127.0.0.1:8081"
	DefaultDataDir       = "./dev-hub-data"
	DefaultStaleTimeout  = 30 * time.Minute
	DefaultMaxRetries    = 3
	DefaultSweepInterval = 10 * time.Minute
)

// Config is the development hub's configuration.
type Config struct {
	Addr          string // DEV_HUB_ADDR: the hub API (under /api)
	AdminAddr     string // DEV_HUB_ADMIN_ADDR
	AdminToken    string // DEV_HUB_ADMIN_TOKEN (secret, _FILE ok)
	DataDir       string // DEV_HUB_DATA_DIR; the store is hub.db inside
	PublicURL     string // DEV_HUB_PUBLIC_URL: the hub's URL as trusts reach it, for kits
	AESKeyBase64  string // AES_KEY_BASE64 (secret, _FILE ok)
	Version       string // DEV_HUB_VERSION: reported as hub_version
	StaleTimeout  time.Duration
	MaxRetries    int
	SweepInterval time.Duration
	RatePending   int
	RateHeartbeat int
	RateResult    int
	LogLevel      slog.Level
	LokiURL       string
}

// Load reads the configuration through getenv and validates it, reporting
// every problem at once.
func Load(getenv func(string) string) (Config, error) {
	l := config.NewLoader(getenv)
	c := Config{
		Addr:          l.String("DEV_HUB_ADDR", DefaultAddr),
		AdminAddr:     l.String("DEV_HUB_ADMIN_ADDR", DefaultAdminAddr),
		AdminToken:    l.Secret("DEV_HUB_ADMIN_TOKEN", true),
		DataDir:       l.String("DEV_HUB_DATA_DIR", DefaultDataDir),
		PublicURL:     l.URL("DEV_HUB_PUBLIC_URL", ""),
		AESKeyBase64:  l.Secret("AES_KEY_BASE64", true),
		Version:       l.String("DEV_HUB_VERSION", BuildIdentity()),
		StaleTimeout:  l.Seconds("TASK_STALE_TIMEOUT_SECONDS", DefaultStaleTimeout),
		MaxRetries:    l.Int("TASK_MAX_RETRIES", DefaultMaxRetries),
		SweepInterval: l.Seconds("STALE_SWEEP_INTERVAL_SECONDS", DefaultSweepInterval),
		RatePending:   l.Int("RATE_LIMIT_PENDING_PER_MIN", 30),
		RateHeartbeat: l.Int("RATE_LIMIT_HEARTBEAT_PER_MIN", 30),
		RateResult:    l.Int("RATE_LIMIT_RESULT_PER_MIN", 60),
		LokiURL:       l.URL("LOKI_URL", ""),
	}
	level, err := logging.ParseLevel(l.String("LOG_LEVEL", "INFO"))
	if err != nil {
		l.Problem("LOG_LEVEL: %v", err)
	}
	c.LogLevel = level
	return c, errors.Join(l.Err(), c.Validate())
}

// Validate reports every inconsistency in c at once.
func (c Config) Validate() error {
	var problems []error
	add := func(format string, args ...any) { problems = append(problems, fmt.Errorf(format, args...)) }
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		add("DEV_HUB_ADMIN_TOKEN must be at least 16 characters")
	}
	if c.AESKeyBase64 != "" {
		if _, err := envelope.DecodeKey(c.AESKeyBase64); err != nil {
			add("AES_KEY_BASE64: %v", err)
		}
	}
	for name, addr := range map[string]string{"DEV_HUB_ADDR": c.Addr, "DEV_HUB_ADMIN_ADDR": c.AdminAddr} {
		if _, _, err := net.SplitHostPort(addr); err != nil {
			add("%s %q is not host:port", name, addr)
		}
	}
	if c.Addr == c.AdminAddr && !strings.HasSuffix(c.Addr, ":0") {
		add("DEV_HUB_ADDR and DEV_HUB_ADMIN_ADDR must differ")
	}
	if c.DataDir == "" {
		add("DEV_HUB_DATA_DIR is required")
	}
	if c.StaleTimeout <= 0 {
		add("TASK_STALE_TIMEOUT_SECONDS must be positive")
	}
	if c.SweepInterval <= 0 {
		add("STALE_SWEEP_INTERVAL_SECONDS must be positive")
	}
	if c.MaxRetries < 0 {
		add("TASK_MAX_RETRIES must not be negative")
	}
	for name, v := range map[string]int{
		"RATE_LIMIT_PENDING_PER_MIN": c.RatePending, "RATE_LIMIT_HEARTBEAT_PER_MIN": c.RateHeartbeat, "RATE_LIMIT_RESULT_PER_MIN": c.RateResult,
	} {
		if v < 0 {
			add("%s must not be negative (0 means unlimited)", name)
		}
	}
	sort.Slice(problems, func(i, j int) bool { return problems[i].Error() < problems[j].Error() })
	return errors.Join(problems...)
}

// Safe is the configuration with secrets redacted, for the startup log.
func (c Config) Safe() map[string]any {
	return map[string]any{
		"DEV_HUB_ADDR":                 c.Addr,
		"DEV_HUB_ADMIN_ADDR":           c.AdminAddr,
		"DEV_HUB_ADMIN_TOKEN":          config.Redact(c.AdminToken),
		"DEV_HUB_DATA_DIR":             c.DataDir,
		"DEV_HUB_PUBLIC_URL":           c.PublicURL,
		"AES_KEY_BASE64":               config.Redact(c.AESKeyBase64),
		"DEV_HUB_VERSION":              c.Version,
		"TASK_STALE_TIMEOUT_SECONDS":   c.StaleTimeout.Seconds(),
		"TASK_MAX_RETRIES":             c.MaxRetries,
		"STALE_SWEEP_INTERVAL_SECONDS": c.SweepInterval.Seconds(),
		"RATE_LIMIT_PENDING_PER_MIN":   c.RatePending,
		"RATE_LIMIT_HEARTBEAT_PER_MIN": c.RateHeartbeat,
		"RATE_LIMIT_RESULT_PER_MIN":    c.RateResult,
		"LOG_LEVEL":                    c.LogLevel.String(),
		"LOKI_URL":                     c.LokiURL,
	}
}

// BuildIdentity is the binary's version: the module version when built from a
// tagged module, otherwise "dev".
func BuildIdentity() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
