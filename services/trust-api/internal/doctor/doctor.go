// Package doctor is "trust-api doctor": the checks of trust-api's own
// dependencies, run with its own configuration — the hub (reachability, TLS
// certificate, clock skew against the hub's Date header), the key formats
// with their fingerprints, the internal services it calls, and the journal's
// disk. It prints shared/doctor's line format.
package doctor

import (
	"context"
	"flag"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/config"
	"github.com/flip-trust/node/shared/doctor"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
)

// Thresholds of the checks.
const (
	CertWarnWithin = 21 * 24 * time.Hour
	ClockWarn      = 5 * time.Second
	ClockFail      = time.Minute
	DiskFailBelow  = 256 << 20
	DiskWarnBelow  = 1 << 30
)

// Run runs "trust-api doctor" with args (after "doctor") and the
// environment read through getenv; it returns the exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	timeout := fs.Duration("timeout", 15*time.Second, "bound on each check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(getenv)
	client := httpx.NewClient(*timeout)
	checks := append([]doctor.Check{doctor.Config(err)}, Checks(cfg, client)...)
	return doctor.Run(ctx, stdout, "trust-api", checks, doctor.Options{Timeout: *timeout}).ExitCode()
}

// Checks are trust-api's checks for cfg; client is used for every HTTP probe.
func Checks(cfg config.Config, client *http.Client) []doctor.Check {
	hub := doctor.NewEndpoint(cfg.HubURL, client)
	return []doctor.Check{
		hub.Reachable("hub reachable", "allow outbound HTTPS from this host to the hub's API host (and set HTTPS_PROXY if the site has a proxy); check CENTRAL_HUB_API_URL"),
		hub.TLS("hub TLS certificate", CertWarnWithin),
		hub.Clock("clock skew (hub Date)", ClockWarn, ClockFail),
		aesKey(cfg.AESKeyBase64),
		apiKey(cfg.APIKey, cfg.APIKeyHeader),
		doctor.InternalKey(cfg.InternalKey),
		doctor.NewEndpoint(strings.TrimRight(cfg.DataAccessURL, "/")+"/health", client).Reachable("data-access-api reachable",
			"start data-access-api, or correct DATA_ACCESS_API_URL"),
		doctor.NewEndpoint(strings.TrimRight(cfg.ImagingURL, "/")+"/health", client).Reachable("imaging-api reachable",
			"start imaging-api, or correct IMAGING_API_URL"),
		doctor.DiskSpace("journal disk", "TRUST_API_DATA_DIR", cfg.DataDir, DiskFailBelow, DiskWarnBelow),
	}
}

func aesKey(b64 string) doctor.Check {
	return doctor.Check{Name: "hub envelope key", Run: func(context.Context) doctor.Result {
		const fix = "set AES_KEY_BASE64 (or AES_KEY_BASE64_FILE) to the kit's value: base64 of 32 random bytes"
		if b64 == "" {
			return doctor.Fail(fix, "AES_KEY_BASE64 is not set")
		}
		key, err := envelope.DecodeKey(b64)
		if err != nil {
			return doctor.Fail(fix, "AES_KEY_BASE64: %v", err)
		}
		return doctor.Pass("AES-256 key, fingerprint %s (must equal the hub's aes_key_fingerprint for this trust)", envelope.Fingerprint(key))
	}}
}

func apiKey(key, header string) doctor.Check {
	return doctor.Check{Name: "trust API key", Run: func(context.Context) doctor.Result {
		if key == "" {
			return doctor.Fail("set TRUST_API_KEY (or TRUST_API_KEY_FILE) from the trust's kit", "TRUST_API_KEY is not set")
		}
		if strings.TrimSpace(key) != key || strings.ContainsAny(key, "\r\n") {
			return doctor.Fail("remove the whitespace around TRUST_API_KEY (a secret file must not end with a newline)", "TRUST_API_KEY has leading or trailing whitespace")
		}
		return doctor.Pass("%d characters, sent in %s, fingerprint %s", len(key), header, doctor.Fingerprint([]byte(key)))
	}}
}
