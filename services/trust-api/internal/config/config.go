// Package config is trust-api's configuration: FLIP's environment variable
// names and defaults, every secret also readable from NAME_FILE, all
// problems reported at once, and a redacted view for the startup log.
package config

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/budget"
	"github.com/flip-trust/node/services/trust-api/internal/egress"
	sharedcfg "github.com/flip-trust/node/shared/config"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/sitepolicy"
)

// JournalFile is the journal's file name inside DataDir.
const JournalFile = "journal.db"

// EgressFile is the egress gate's file name inside DataDir.
const EgressFile = "egress.db"

// DefaultReviewAddr is the reviewer API's default listen address.
const DefaultReviewAddr = "127.0.0.1:8021"

// BudgetFile is the privacy budget store's file name inside DataDir.
const BudgetFile = "budget.db"

// Config is trust-api's configuration.
type Config struct {
	Env      string
	LogLevel string
	LokiURL  string
	Release  string

	HubURL          string // CENTRAL_HUB_API_URL, ends in /api
	APIKey          string // TRUST_API_KEY (secret)
	APIKeyHeader    string // TRUST_API_KEY_HEADER
	AESKeyBase64    string // AES_KEY_BASE64 (secret)
	ExpectedTrustID string

	InternalKey       string // TRUST_INTERNAL_SERVICE_KEY (secret)
	InternalKeyHeader string
	InternalAuth      mesh.AuthMode
	CohortAdminHeader string

	DataAccessURL string
	ImagingURL    string
	XNATURL       string
	OMOPHost      string
	OMOPPort      int

	PollInterval       time.Duration
	HeartbeatInterval  time.Duration
	CohortQueryTimeout time.Duration

	HealthCollectInterval time.Duration
	HealthDegraded        time.Duration
	FLClientImageTag      string

	Addr        string
	DataDir     string
	TaskWorkers int
	// DeliveryConcurrency bounds results being delivered at once
	// (DELIVERY_CONCURRENCY, 8).
	DeliveryConcurrency int
	BackoffMin          time.Duration
	BackoffMax          time.Duration
	JournalRetention    time.Duration

	// EgressReview is the review mode per egress channel (EGRESS_REVIEW,
	// "channel=mode,..."; unnamed channels are released).
	EgressReview egress.Policy
	// EgressReviewExpiry is how long an item stays held (EGRESS_REVIEW_EXPIRY, 72h).
	EgressReviewExpiry time.Duration
	// AuditLedgerDir holds the audit ledger (AUDIT_LEDGER_DIR, <data dir>/audit).
	AuditLedgerDir string
	// ReviewAddr is the reviewer API's listener (EGRESS_REVIEW_ADDR).
	ReviewAddr string
	// ReviewAllowRemote admits a non-loopback ReviewAddr (EGRESS_REVIEW_ALLOW_REMOTE).
	ReviewAllowRemote bool
	// ReviewerKey authenticates reviewers (EGRESS_REVIEWER_KEY, secret);
	// empty turns the reviewer API off.
	ReviewerKey string
	// SitePolicy names where the site policy came from
	// ("SITE_POLICY_FILE=<path>" or "defaults").
	SitePolicy string
	// Budgets are the per-project privacy budgets: the site policy file's
	// [budget."<project>"] tables and PRIVACY_BUDGETS, the smaller ε and δ
	// where both name a project.
	Budgets budget.Budgets
}

// Load reads the configuration through getenv and validates it. The error
// lists every problem, one per line.
func Load(getenv func(string) string) (Config, error) {
	l := sharedcfg.NewLoader(getenv)
	c := Config{
		Env:      l.String("ENV", "development"),
		LogLevel: l.String("LOG_LEVEL", "INFO"),
		LokiURL:  l.URL("LOKI_URL", ""),
		Release:  l.String("FLIP_RELEASE", ""),

		HubURL:          l.Required("CENTRAL_HUB_API_URL"),
		APIKey:          l.Secret("TRUST_API_KEY", true),
		APIKeyHeader:    l.String("TRUST_API_KEY_HEADER", hubapi.DefaultKeyHeader),
		AESKeyBase64:    l.Secret("AES_KEY_BASE64", true),
		ExpectedTrustID: l.String("EXPECTED_TRUST_ID", ""),

		InternalKey:       l.Secret("TRUST_INTERNAL_SERVICE_KEY", false),
		InternalKeyHeader: l.String("TRUST_INTERNAL_SERVICE_KEY_HEADER", mesh.HeaderInternalKey),
		CohortAdminHeader: l.String("COHORT_ADMIN_KEY_HEADER", mesh.HeaderCohortAdmin),

		DataAccessURL: l.URL("DATA_ACCESS_API_URL", "http://data-access-api:8000"),
		ImagingURL:    l.URL("IMAGING_API_URL", "http://imaging-api:8000"),
		XNATURL:       l.URL("XNAT_URL", "http://xnat-web:8080"),
		OMOPHost:      l.String("OMOP_DB_HOST", "omop-db"),
		OMOPPort:      l.Int("OMOP_DB_PORT", 5432),

		PollInterval:       l.Seconds("POLL_INTERVAL_SECONDS", 5*time.Second),
		CohortQueryTimeout: l.Seconds("COHORT_QUERY_TIMEOUT_SECONDS", 300*time.Second),

		HealthCollectInterval: l.Seconds("HEALTH_COLLECT_INTERVAL_SECONDS", 30*time.Second),
		HealthDegraded:        time.Duration(l.Int("HEALTH_PROBE_DEGRADED_MS", 1000)) * time.Millisecond,
		FLClientImageTag:      l.String("FL_CLIENT_IMAGE_TAG", ""),

		Addr:                l.String("TRUST_API_ADDR", ":8000"),
		DataDir:             l.String("TRUST_API_DATA_DIR", "/var/lib/trust-api"),
		TaskWorkers:         l.Int("TASK_WORKERS", 4),
		DeliveryConcurrency: l.Int("DELIVERY_CONCURRENCY", 8),
		BackoffMin:          l.Seconds("DELIVERY_BACKOFF_MIN_SECONDS", time.Second),
		BackoffMax:          l.Seconds("DELIVERY_BACKOFF_MAX_SECONDS", 60*time.Second),
		JournalRetention:    time.Duration(l.Int("TRUST_API_JOURNAL_RETENTION_DAYS", 30)) * 24 * time.Hour,
	}
	c.HeartbeatInterval = l.Seconds("HEARTBEAT_INTERVAL_SECONDS", c.PollInterval)
	c.AuditLedgerDir = l.String("AUDIT_LEDGER_DIR", filepath.Join(c.DataDir, "audit"))
	c.ReviewAddr = l.String("EGRESS_REVIEW_ADDR", DefaultReviewAddr)
	c.ReviewAllowRemote = l.Bool("EGRESS_REVIEW_ALLOW_REMOTE", false)
	c.ReviewerKey = l.Secret("EGRESS_REVIEWER_KEY", false)
	// The site policy file (SITE_POLICY_FILE) sets review modes, the review
	// expiry and budgets; EGRESS_REVIEW and PRIVACY_BUDGETS can only make
	// them stricter.
	site := sitepolicy.Default()
	if path := strings.TrimSpace(getenv(sitepolicy.EnvFile)); path != "" {
		if p, err := sitepolicy.Load(path, int64(l.Int("COHORT_QUERY_THRESHOLD", 10))); err != nil {
			l.Problem("%v", err)
		} else {
			site = p
		}
	}
	c.SitePolicy = site.Source
	c.EgressReviewExpiry = site.Expiry
	if v := strings.TrimSpace(getenv("EGRESS_REVIEW_EXPIRY")); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			l.Problem("EGRESS_REVIEW_EXPIRY: %q is not a duration (e.g. 72h)", v)
		} else {
			c.EgressReviewExpiry = d
		}
	}
	filePolicy := egress.Policy{}
	for ch, m := range site.Review {
		if mode, err := egress.ParseMode(m.String()); err == nil && mode != egress.Release {
			filePolicy[egress.Channel(ch)] = mode
		}
	}
	c.EgressReview = filePolicy
	if p, err := egress.ParsePolicy(getenv("EGRESS_REVIEW")); err != nil {
		l.Problem("EGRESS_REVIEW: %v", err)
	} else {
		c.EgressReview = filePolicy.Merge(p)
	}
	budgets, err := budget.ParseBudgets(getenv("PRIVACY_BUDGETS"))
	if err != nil {
		l.Problem("PRIVACY_BUDGETS: %v", err)
		budgets = nil // reported once, here
	}
	c.Budgets = mergeBudgets(site.Budgets, budgets)
	mode, err := mesh.ParseAuthMode(getenv("TRUST_INTERNAL_AUTH"))
	if err != nil {
		l.Problem("TRUST_INTERNAL_AUTH: %q is not one of jwt, key", strings.TrimSpace(getenv("TRUST_INTERNAL_AUTH")))
		mode = mesh.ModeJWT
	}
	c.InternalAuth = mode
	if v := l.Err(); v != nil {
		// Validate would repeat the loader's findings (required values are
		// empty); report its own checks only for values that loaded.
		return c, errors.Join(v, c.validate(false))
	}
	return c, c.Validate()
}

// Validate reports every problem with c at once (nil when there is none).
func (c Config) Validate() error { return c.validate(true) }

func (c Config) validate(requiredToo bool) error {
	var errs []error
	add := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	if c.HubURL == "" {
		if requiredToo {
			add("CENTRAL_HUB_API_URL is required")
		}
	} else if err := sharedcfg.CheckURL(c.HubURL); err != nil {
		add("CENTRAL_HUB_API_URL: %v", err)
	}
	if c.APIKey == "" && requiredToo {
		add("TRUST_API_KEY is required (or set TRUST_API_KEY_FILE)")
	}
	if c.AESKeyBase64 == "" {
		if requiredToo {
			add("AES_KEY_BASE64 is required (or set AES_KEY_BASE64_FILE)")
		}
	} else if _, err := envelope.DecodeKey(c.AESKeyBase64); err != nil {
		add("AES_KEY_BASE64: %v", err)
	}
	for name, h := range map[string]string{
		"TRUST_API_KEY_HEADER": c.APIKeyHeader, "TRUST_INTERNAL_SERVICE_KEY_HEADER": c.InternalKeyHeader, "COHORT_ADMIN_KEY_HEADER": c.CohortAdminHeader,
	} {
		if !validHeaderName(h) {
			add("%s: %q is not a valid HTTP header name", name, h)
		}
	}
	if c.ExpectedTrustID != "" && !hubapi.ValidTaskID(c.ExpectedTrustID) {
		add("EXPECTED_TRUST_ID: %q is not a UUID", c.ExpectedTrustID)
	}
	if c.InternalAuth != mesh.ModeJWT && c.InternalAuth != mesh.ModeKey {
		add("TRUST_INTERNAL_AUTH: %q is not one of jwt, key", c.InternalAuth)
	}
	for name, u := range map[string]string{"DATA_ACCESS_API_URL": c.DataAccessURL, "IMAGING_API_URL": c.ImagingURL, "XNAT_URL": c.XNATURL} {
		if err := sharedcfg.CheckURL(u); err != nil {
			add("%s: %v", name, err)
		}
	}
	if c.OMOPPort < 1 || c.OMOPPort > 65535 {
		add("OMOP_DB_PORT: %d is not a TCP port", c.OMOPPort)
	}
	positive := []struct {
		name string
		d    time.Duration
	}{
		{"POLL_INTERVAL_SECONDS", c.PollInterval},
		{"HEARTBEAT_INTERVAL_SECONDS", c.HeartbeatInterval},
		{"COHORT_QUERY_TIMEOUT_SECONDS", c.CohortQueryTimeout},
		{"HEALTH_COLLECT_INTERVAL_SECONDS", c.HealthCollectInterval},
		{"HEALTH_PROBE_DEGRADED_MS", c.HealthDegraded},
		{"DELIVERY_BACKOFF_MIN_SECONDS", c.BackoffMin},
		{"DELIVERY_BACKOFF_MAX_SECONDS", c.BackoffMax},
	}
	for _, p := range positive {
		if p.d <= 0 {
			add("%s must be greater than zero", p.name)
		}
	}
	if c.BackoffMin > 0 && c.BackoffMax > 0 && c.BackoffMax < c.BackoffMin {
		add("DELIVERY_BACKOFF_MAX_SECONDS (%s) is below DELIVERY_BACKOFF_MIN_SECONDS (%s)", c.BackoffMax, c.BackoffMin)
	}
	if c.TaskWorkers < 1 || c.TaskWorkers > 256 {
		add("TASK_WORKERS: %d must be between 1 and 256", c.TaskWorkers)
	}
	if c.DeliveryConcurrency < 1 || c.DeliveryConcurrency > 64 {
		add("DELIVERY_CONCURRENCY: %d must be between 1 and 64", c.DeliveryConcurrency)
	}
	if c.JournalRetention < 0 {
		add("TRUST_API_JOURNAL_RETENTION_DAYS must not be negative")
	}
	if _, err := logging.ParseLevel(c.LogLevel); err != nil {
		add("LOG_LEVEL: %v", err)
	}
	if c.LokiURL != "" {
		if err := sharedcfg.CheckURL(c.LokiURL); err != nil {
			add("LOKI_URL: %v", err)
		}
	}
	if _, port, err := net.SplitHostPort(c.Addr); err != nil {
		add("TRUST_API_ADDR: %q is not host:port", c.Addr)
	} else if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		add("TRUST_API_ADDR: %q has no valid port", c.Addr)
	}
	if c.DataDir == "" {
		add("TRUST_API_DATA_DIR must not be empty")
	}
	if c.AuditLedgerDir == "" {
		add("AUDIT_LEDGER_DIR must not be empty")
	}
	if c.EgressReviewExpiry <= 0 {
		add("EGRESS_REVIEW_EXPIRY must be greater than zero")
	}
	if c.ReviewerKey != "" && len(c.ReviewerKey) < mesh.MinKeyBytes {
		add("EGRESS_REVIEWER_KEY must be at least %d bytes", mesh.MinKeyBytes)
	}
	if err := CheckReviewAddr(c.ReviewAddr, c.ReviewAllowRemote); err != nil {
		add("EGRESS_REVIEW_ADDR: %v", err)
	}
	if err := c.Budgets.Validate(); err != nil {
		add("PRIVACY_BUDGETS: %v", err)
	}
	return errors.Join(errs...)
}

// CheckReviewAddr checks the reviewer API's address: host:port with a
// loopback host (an IP or localhost) unless allowRemote.
func CheckReviewAddr(addr string, allowRemote bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("%q is not host:port", addr)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q has no valid port", addr)
	}
	if allowRemote {
		return nil
	}
	if host == "localhost" {
		return nil
	}
	if ip := net.ParseIP(host); ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("%q is not a loopback address; the reviewer API is local only (set EGRESS_REVIEW_ALLOW_REMOTE=true to override)", addr)
	}
	return nil
}

// EgressPath is the egress gate's file.
func (c Config) EgressPath() string { return filepath.Join(c.DataDir, EgressFile) }

// validHeaderName reports whether h is an RFC 9110 token.
func validHeaderName(h string) bool {
	if h == "" {
		return false
	}
	for _, r := range h {
		if r > 0x7e || r <= 0x20 || strings.ContainsRune(`"(),/:;<=>?@[\]{}`, r) {
			return false
		}
	}
	return http.CanonicalHeaderKey(h) != ""
}

// InternalKeyUsable reports whether the internal key is long enough for the
// mesh; when it is not, every internal call fails and the app warns at start.
func (c Config) InternalKeyUsable() bool { return mesh.KeyUsable([]byte(c.InternalKey)) }

// BudgetPath is the privacy budget store's file.
func (c Config) BudgetPath() string { return filepath.Join(c.DataDir, BudgetFile) }

// JournalPath is the journal file.
func (c Config) JournalPath() string { return filepath.Join(c.DataDir, JournalFile) }

// Version is the build identity reported in /health and heartbeats.
func (c Config) Version(fallback string) string {
	if c.Release != "" {
		return c.Release
	}
	return fallback
}

// Safe is a redacted view of c for the startup log: secrets are replaced by
// their length, URLs lose any embedded credentials.
func (c Config) Safe() map[string]any {
	return map[string]any{
		"ENV":                               c.Env,
		"LOG_LEVEL":                         c.LogLevel,
		"LOKI_URL":                          safeURL(c.LokiURL),
		"FLIP_RELEASE":                      c.Release,
		"CENTRAL_HUB_API_URL":               safeURL(c.HubURL),
		"TRUST_API_KEY":                     sharedcfg.Redact(c.APIKey),
		"TRUST_API_KEY_HEADER":              c.APIKeyHeader,
		"AES_KEY_BASE64":                    sharedcfg.Redact(c.AESKeyBase64),
		"EXPECTED_TRUST_ID":                 c.ExpectedTrustID,
		"TRUST_INTERNAL_SERVICE_KEY":        sharedcfg.Redact(c.InternalKey),
		"TRUST_INTERNAL_SERVICE_KEY_HEADER": c.InternalKeyHeader,
		"TRUST_INTERNAL_AUTH":               string(c.InternalAuth),
		"COHORT_ADMIN_KEY_HEADER":           c.CohortAdminHeader,
		"DATA_ACCESS_API_URL":               safeURL(c.DataAccessURL),
		"IMAGING_API_URL":                   safeURL(c.ImagingURL),
		"XNAT_URL":                          safeURL(c.XNATURL),
		"OMOP_DB_HOST":                      c.OMOPHost,
		"OMOP_DB_PORT":                      c.OMOPPort,
		"POLL_INTERVAL_SECONDS":             c.PollInterval.Seconds(),
		"HEARTBEAT_INTERVAL_SECONDS":        c.HeartbeatInterval.Seconds(),
		"COHORT_QUERY_TIMEOUT_SECONDS":      c.CohortQueryTimeout.Seconds(),
		"HEALTH_COLLECT_INTERVAL_SECONDS":   c.HealthCollectInterval.Seconds(),
		"HEALTH_PROBE_DEGRADED_MS":          c.HealthDegraded.Milliseconds(),
		"FL_CLIENT_IMAGE_TAG":               c.FLClientImageTag,
		"TRUST_API_ADDR":                    c.Addr,
		"TRUST_API_DATA_DIR":                c.DataDir,
		"TASK_WORKERS":                      c.TaskWorkers,
		"DELIVERY_CONCURRENCY":              c.DeliveryConcurrency,
		"DELIVERY_BACKOFF_MIN_SECONDS":      c.BackoffMin.Seconds(),
		"DELIVERY_BACKOFF_MAX_SECONDS":      c.BackoffMax.Seconds(),
		"TRUST_API_JOURNAL_RETENTION_DAYS":  int(c.JournalRetention / (24 * time.Hour)),
		"EGRESS_REVIEW":                     c.EgressReview.String(),
		"EGRESS_REVIEW_EXPIRY":              c.EgressReviewExpiry.String(),
		"AUDIT_LEDGER_DIR":                  c.AuditLedgerDir,
		"EGRESS_REVIEW_ADDR":                c.ReviewAddr,
		"EGRESS_REVIEW_ALLOW_REMOTE":        c.ReviewAllowRemote,
		"EGRESS_REVIEWER_KEY":               sharedcfg.Redact(c.ReviewerKey),
		"PRIVACY_BUDGETS":                   c.Budgets,
		"SITE_POLICY_FILE":                  c.SitePolicy,
	}
}

// safeURL drops userinfo from a URL.
func safeURL(s string) string {
	u, err := url.Parse(s)
	if err != nil || u.User == nil {
		return s
	}
	u.User = nil
	return u.String()
}

// mergeBudgets joins the site policy file's budgets with PRIVACY_BUDGETS;
// where both name a project the smaller ε and the smaller δ apply.
func mergeBudgets(file map[string]sitepolicy.Budget, env budget.Budgets) budget.Budgets {
	if len(file) == 0 && env == nil {
		return nil
	}
	out := budget.Budgets{}
	for p, b := range file {
		out[p] = budget.Budget{Epsilon: b.Epsilon, Delta: b.Delta}
	}
	for p, b := range env {
		if f, ok := out[p]; ok {
			b = budget.Budget{Epsilon: min(f.Epsilon, b.Epsilon), Delta: min(f.Delta, b.Delta)}
		}
		out[p] = b
	}
	return out
}
