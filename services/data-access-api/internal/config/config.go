// Package config loads data-access-api's settings from the environment. Every
// problem is reported at once; a value given as NAME_FILE is read from that
// file (for Docker and Swarm secrets).
package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	sharedcfg "github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// Config is data-access-api's configuration.
type Config struct {
	Env      string
	LogLevel string
	LokiURL  string
	Release  string
	Addr     string

	// Threshold is the trust's disclosure floor (COHORT_QUERY_THRESHOLD).
	Threshold int
	// QueryTimeout bounds each cohort query in the database.
	QueryTimeout time.Duration
	// PolicyFile is the governance TOML (ACCESS_POLICY_FILE); "" means none.
	PolicyFile string
	// SitePolicyFile is the site policy TOML (SITE_POLICY_FILE); "" means
	// the defaults. It may be the same file as PolicyFile.
	SitePolicyFile string
	// Site is the loaded site policy (its floor and rounding govern every
	// released count).
	Site *sitepolicy.Policy
	// SnapshotDir holds frozen cohorts; "" disables them.
	SnapshotDir      string
	SnapshotMaxBytes int64

	DBHost     string
	DBPort     int
	DBUser     string
	DBPassword string
	DBName     string
	DBSSLMode  string
	// DBMaxConns bounds the pool; keep it under the role's CONNECTION LIMIT (5).
	DBMaxConns int

	AESKeyBase64      string
	InternalKey       string
	InternalKeyHeader string
	CohortAdminHeader string
}

// Load reads the configuration through getenv and validates it.
func Load(getenv func(string) string) (Config, error) {
	l := sharedcfg.NewLoader(getenv)
	c := Config{
		Env:      l.String("ENV", "development"),
		LogLevel: l.String("LOG_LEVEL", "INFO"),
		LokiURL:  l.URL("LOKI_URL", ""),
		Release:  l.String("FLIP_RELEASE", ""),
		Addr:     l.String("DATA_ACCESS_API_ADDR", ":8000"),

		Threshold:        l.Int("COHORT_QUERY_THRESHOLD", 10),
		QueryTimeout:     l.Seconds("COHORT_QUERY_TIMEOUT_SECONDS", 300*time.Second),
		PolicyFile:       l.String("ACCESS_POLICY_FILE", ""),
		SitePolicyFile:   l.String(sitepolicy.EnvFile, ""),
		SnapshotDir:      l.String("COHORT_SNAPSHOT_DIR", ""),
		SnapshotMaxBytes: int64(l.Int("SNAPSHOT_MAX_BYTES", 512<<20)),

		DBHost:     l.String("OMOP_DB_SERVICE_NAME", "omop-db"),
		DBPort:     l.Int("OMOP_DB_PORT", 5432),
		DBUser:     l.Required("DATA_ACCESS_POSTGRES_USER"),
		DBPassword: l.Secret("DATA_ACCESS_POSTGRES_PASSWORD", true),
		DBName:     l.Required("OMOP_POSTGRES_DB"),
		DBSSLMode:  l.String("OMOP_DB_SSLMODE", "prefer"),
		DBMaxConns: l.Int("OMOP_DB_MAX_CONNS", 4),

		AESKeyBase64:      l.Secret("AES_KEY_BASE64", true),
		InternalKey:       l.Secret("TRUST_INTERNAL_SERVICE_KEY", false),
		InternalKeyHeader: l.String("TRUST_INTERNAL_SERVICE_KEY_HEADER", mesh.HeaderInternalKey),
		CohortAdminHeader: l.String("COHORT_ADMIN_KEY_HEADER", mesh.HeaderCohortAdmin),
	}
	err := errors.Join(l.Err(), c.validate())
	if c.Threshold > 0 {
		site, serr := sitepolicy.Load(c.SitePolicyFile, int64(c.Threshold))
		c.Site = site
		err = errors.Join(err, serr)
	}
	return c, err
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
	if c.Threshold <= 0 {
		add("COHORT_QUERY_THRESHOLD: must be a positive integer (got %d)", c.Threshold)
	}
	if c.QueryTimeout <= 0 {
		add("COHORT_QUERY_TIMEOUT_SECONDS: must be positive")
	}
	if c.SnapshotMaxBytes <= 0 {
		add("SNAPSHOT_MAX_BYTES: must be a positive integer")
	}
	if c.DBPort <= 0 || c.DBPort > 65535 {
		add("OMOP_DB_PORT: %d is not a TCP port", c.DBPort)
	}
	if c.DBMaxConns < 1 || c.DBMaxConns > 100 {
		add("OMOP_DB_MAX_CONNS: must be between 1 and 100 (got %d)", c.DBMaxConns)
	}
	switch c.DBSSLMode {
	case "disable", "allow", "prefer", "require", "verify-ca", "verify-full":
	default:
		add("OMOP_DB_SSLMODE: %q is not a libpq sslmode", c.DBSSLMode)
	}
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		add("DATA_ACCESS_API_ADDR: %v", err)
	}
	return errors.Join(errs...)
}

// DSN is the connection string for the OMOP database; credentials are escaped.
func (c Config) DSN() string {
	u := url.URL{
		Scheme:   "postgres",
		User:     url.UserPassword(c.DBUser, c.DBPassword),
		Host:     net.JoinHostPort(c.DBHost, strconv.Itoa(c.DBPort)),
		Path:     "/" + c.DBName,
		RawQuery: url.Values{"sslmode": {c.DBSSLMode}, "application_name": {"data-access-api"}}.Encode(),
	}
	return u.String()
}

// Logging returns LOG_LEVEL, LOKI_URL and ENV.
func (c Config) Logging() (level, lokiURL, env string) { return c.LogLevel, c.LokiURL, c.Env }

// Version is FLIP_RELEASE when set, else fallback (the build's version).
func (c Config) Version(fallback string) string {
	if c.Release != "" {
		return c.Release
	}
	return fallback
}

// Safe is a redacted view of c for the startup log.
func (c Config) Safe() map[string]any {
	return map[string]any{
		"ENV":                               c.Env,
		"LOG_LEVEL":                         c.LogLevel,
		"FLIP_RELEASE":                      c.Release,
		"DATA_ACCESS_API_ADDR":              c.Addr,
		"COHORT_QUERY_THRESHOLD":            c.Threshold,
		"COHORT_QUERY_TIMEOUT_SECONDS":      c.QueryTimeout.Seconds(),
		"ACCESS_POLICY_FILE":                c.PolicyFile,
		"SITE_POLICY_FILE":                  c.SitePolicyFile,
		"COHORT_SNAPSHOT_DIR":               c.SnapshotDir,
		"SNAPSHOT_MAX_BYTES":                c.SnapshotMaxBytes,
		"OMOP_DB_SERVICE_NAME":              c.DBHost,
		"OMOP_DB_PORT":                      c.DBPort,
		"DATA_ACCESS_POSTGRES_USER":         c.DBUser,
		"DATA_ACCESS_POSTGRES_PASSWORD":     sharedcfg.Redact(c.DBPassword),
		"OMOP_POSTGRES_DB":                  c.DBName,
		"OMOP_DB_SSLMODE":                   c.DBSSLMode,
		"OMOP_DB_MAX_CONNS":                 c.DBMaxConns,
		"AES_KEY_BASE64":                    sharedcfg.Redact(c.AESKeyBase64),
		"TRUST_INTERNAL_SERVICE_KEY":        sharedcfg.Redact(c.InternalKey),
		"TRUST_INTERNAL_SERVICE_KEY_HEADER": c.InternalKeyHeader,
		"COHORT_ADMIN_KEY_HEADER":           c.CohortAdminHeader,
	}
}
