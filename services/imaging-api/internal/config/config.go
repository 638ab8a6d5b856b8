// Package config loads imaging-api's settings from the environment. Every
// problem is reported at once; secrets may be given as NAME_FILE.
package config

import (
	"errors"
	"fmt"
	"net"
	"time"

	sharedcfg "github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/disclosure"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// Backends.
const (
	BackendOrthanc = "orthanc"
	BackendXNAT    = "xnat"
)

// Config is imaging-api's configuration.
type Config struct {
	Env, LogLevel, LokiURL, Release string
	Addr                            string
	// DataDir holds the import state (bbolt).
	DataDir string
	Backend string

	// Orthanc backend: the staging Orthanc's REST API, the PACS as the
	// staging Orthanc names it (DicomModalities), and staging's own AE title
	// (the C-MOVE destination).
	OrthancURL, OrthancUser, OrthancPassword string
	PACSModality, StagingAET                 string

	// XNAT backend.
	XNATURL, XNATUser, XNATPassword, XNATDatabaseURL string
	XNATDatabasePassword, XNATAETitle, Dcm2niixImage string
	XNATPort, PACSID                                 int

	DataAccessURL string
	ImagesDir     string

	ImportConcurrency int
	ImportAttempts    int
	ImportStall       time.Duration
	ImportBackoffMin  time.Duration
	ImportBackoffMax  time.Duration

	ReimportEnabled      bool
	CacheRetention       bool
	CacheRetentionPeriod time.Duration
	CacheSweepInterval   time.Duration

	AESKeyBase64      string
	InternalKey       string
	InternalKeyHeader string

	// Threshold is the trust's disclosure floor (COHORT_QUERY_THRESHOLD).
	Threshold int
	// SitePolicyFile is the site policy TOML (SITE_POLICY_FILE); "" means
	// the defaults.
	SitePolicyFile string
	// Disclosure is the floor and rounding import status counts pass:
	// COHORT_QUERY_THRESHOLD raised by the site policy.
	Disclosure disclosure.Policy
}

// Load reads the configuration through getenv and validates it.
func Load(getenv func(string) string) (Config, error) {
	l := sharedcfg.NewLoader(getenv)
	c := Config{
		Env:      l.String("ENV", "development"),
		LogLevel: l.String("LOG_LEVEL", "INFO"),
		LokiURL:  l.URL("LOKI_URL", ""),
		Release:  l.String("FLIP_RELEASE", ""),
		Addr:     l.String("IMAGING_API_ADDR", ":8000"),
		DataDir:  l.String("IMAGING_API_DATA_DIR", "/var/lib/imaging-api"),
		Backend:  l.String("IMAGING_BACKEND", BackendOrthanc),

		OrthancURL:      l.URL("ORTHANC_URL", "http://orthanc-staging:8042"),
		OrthancUser:     l.String("ORTHANC_USERNAME", ""),
		OrthancPassword: l.Secret("ORTHANC_PASSWORD", false),
		PACSModality:    l.String("PACS_AETITLE", "PACS"),
		StagingAET:      l.String("STAGING_AETITLE", "STAGING"),

		XNATURL:              l.URL("XNAT_URL", "http://xnat-web:8080"),
		XNATUser:             l.String("XNAT_SERVICE_USER", ""),
		XNATPassword:         l.Secret("XNAT_SERVICE_PASSWORD", false),
		XNATDatabaseURL:      l.String("XNAT_DATABASE_URL", "postgres://xnat@xnat-db:5432/xnat"),
		XNATDatabasePassword: l.Secret("XNAT_DATASOURCE_PASSWORD", false),
		XNATAETitle:          l.String("XNAT_AETITLE", "XNAT"),
		Dcm2niixImage:        l.String("DCM2NIIX_IMAGE", "ghcr.io/londonaicentre/xnat-dcm2niix:v1.0.20260724"),
		XNATPort:             l.Int("XNAT_PORT", 8104),
		PACSID:               l.Int("PACS_ID", 1),

		DataAccessURL: l.URL("DATA_ACCESS_API_URL", "http://data-access-api:8000"),
		ImagesDir:     l.Required("BASE_IMAGES_DOWNLOAD_DIR"),

		ImportConcurrency: l.Int("IMPORT_CONCURRENCY", 4),
		ImportAttempts:    l.Int("IMPORT_MAX_ATTEMPTS", 3),
		ImportStall:       l.Seconds("IMPORT_STALL_SECONDS", 300*time.Second),
		ImportBackoffMin:  l.Seconds("IMPORT_BACKOFF_MIN_SECONDS", 5*time.Second),
		ImportBackoffMax:  l.Seconds("IMPORT_BACKOFF_MAX_SECONDS", 300*time.Second),

		ReimportEnabled:      l.Bool("REIMPORT_STUDIES_ENABLED", true),
		CacheRetention:       l.Bool("IMAGE_CACHE_RETENTION_ENABLED", true),
		CacheRetentionPeriod: time.Duration(l.Float("IMAGE_CACHE_RETENTION_HOURS", 168) * float64(time.Hour)),
		CacheSweepInterval:   time.Duration(l.Float("IMAGE_CACHE_SWEEP_INTERVAL_MINUTES", 60) * float64(time.Minute)),

		AESKeyBase64:      l.Secret("AES_KEY_BASE64", true),
		InternalKey:       l.Secret("TRUST_INTERNAL_SERVICE_KEY", false),
		InternalKeyHeader: l.String("TRUST_INTERNAL_SERVICE_KEY_HEADER", mesh.HeaderInternalKey),
	}
	c.Threshold = l.Int("COHORT_QUERY_THRESHOLD", 10)
	c.SitePolicyFile = l.String(sitepolicy.EnvFile, "")
	err := errors.Join(l.Err(), c.validate())
	if c.Threshold <= 0 {
		err = errors.Join(err, fmt.Errorf("COHORT_QUERY_THRESHOLD: must be a positive integer (got %d)", c.Threshold))
	} else if site, serr := sitepolicy.Load(c.SitePolicyFile, int64(c.Threshold)); serr != nil {
		err = errors.Join(err, serr)
	} else if c.Disclosure, serr = site.Disclosure(int64(c.Threshold)); serr != nil {
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
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		add("IMAGING_API_ADDR: %v", err)
	}
	switch c.Backend {
	case BackendOrthanc:
		if c.PACSModality == "" || c.StagingAET == "" {
			add("PACS_AETITLE and STAGING_AETITLE are required with IMAGING_BACKEND=orthanc")
		}
	case BackendXNAT:
		if c.XNATUser == "" || c.XNATPassword == "" {
			add("XNAT_SERVICE_USER and XNAT_SERVICE_PASSWORD are required with IMAGING_BACKEND=xnat")
		}
		if c.XNATPort < 1 || c.XNATPort > 65535 {
			add("XNAT_PORT: must be the DICOM receiver's port, 1-65535 (got %d)", c.XNATPort)
		}
		if c.PACSID < 1 {
			add("PACS_ID: must be positive (got %d)", c.PACSID)
		}
	default:
		add("IMAGING_BACKEND: %q is not one of orthanc, xnat", c.Backend)
	}
	if c.ImportConcurrency < 1 || c.ImportConcurrency > 64 {
		add("IMPORT_CONCURRENCY: must be between 1 and 64 (got %d)", c.ImportConcurrency)
	}
	if c.ImportAttempts < 1 {
		add("IMPORT_MAX_ATTEMPTS: must be at least 1")
	}
	if c.ImportStall <= 0 || c.ImportBackoffMin <= 0 || c.ImportBackoffMax < c.ImportBackoffMin {
		add("IMPORT_STALL_SECONDS and IMPORT_BACKOFF_*_SECONDS must be positive, with MIN <= MAX")
	}
	if c.CacheSweepInterval < time.Minute {
		add("IMAGE_CACHE_SWEEP_INTERVAL_MINUTES: must be at least 1")
	}
	if c.CacheRetentionPeriod <= 0 {
		add("IMAGE_CACHE_RETENTION_HOURS: must be positive")
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
	return map[string]any{
		"ENV": c.Env, "LOG_LEVEL": c.LogLevel, "IMAGING_API_ADDR": c.Addr,
		"COHORT_QUERY_THRESHOLD": c.Threshold, "SITE_POLICY_FILE": c.SitePolicyFile, "IMAGING_API_DATA_DIR": c.DataDir,
		"IMAGING_BACKEND": c.Backend, "ORTHANC_URL": c.OrthancURL, "ORTHANC_USERNAME": c.OrthancUser,
		"ORTHANC_PASSWORD": sharedcfg.Redact(c.OrthancPassword), "PACS_AETITLE": c.PACSModality,
		"STAGING_AETITLE": c.StagingAET, "XNAT_URL": c.XNATURL, "XNAT_SERVICE_USER": c.XNATUser,
		"XNAT_SERVICE_PASSWORD": sharedcfg.Redact(c.XNATPassword), "DATA_ACCESS_API_URL": c.DataAccessURL,
		"BASE_IMAGES_DOWNLOAD_DIR": c.ImagesDir, "IMPORT_CONCURRENCY": c.ImportConcurrency,
		"IMPORT_MAX_ATTEMPTS": c.ImportAttempts, "IMPORT_STALL_SECONDS": c.ImportStall.Seconds(),
		"REIMPORT_STUDIES_ENABLED": c.ReimportEnabled, "IMAGE_CACHE_RETENTION_HOURS": c.CacheRetentionPeriod.Hours(),
		"AES_KEY_BASE64": sharedcfg.Redact(c.AESKeyBase64), "TRUST_INTERNAL_SERVICE_KEY": sharedcfg.Redact(c.InternalKey),
		"TRUST_INTERNAL_SERVICE_KEY_HEADER": c.InternalKeyHeader,
	}
}
