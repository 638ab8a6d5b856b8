// Package health has trust-api's two health views: the Collector, which
// probes the trust's services and builds the snapshot sent with each
// heartbeat (FLIP's roster, statuses and timing rules), and the /health
// report of trust-api itself (status, build, dead background tasks and what
// the hub said about itself).
package health

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/flip-trust/node/shared/hubapi"
)

// Authorizer adds trust-internal authentication to a request (ping_pacs).
type Authorizer interface {
	Apply(req *http.Request, audience string) error
}

// Service keys of the snapshot.
const (
	KeyTrustAPI   = "trust-api"
	KeyImaging    = "imaging-api"
	KeyDataAccess = "data-access-api"
	KeyXNAT       = "xnat"
	KeyDICOM      = "dicom"
	KeyOMOP       = "omop"
	KeyFLClient   = "fl-client"
)

// DefaultProbeTimeout bounds one probe.
const DefaultProbeTimeout = 5 * time.Second

// maxVersion is the hub's bound on a version string.
const maxVersion = 64

// Options configure a Collector.
type Options struct {
	ImagingURL    string
	DataAccessURL string
	XNATURL       string
	// OMOPAddr is host:port of the OMOP database (a TCP connect probe).
	OMOPAddr string
	// Version is trust-api's own build identity.
	Version string
	// FLClientImageTag adds an fl-client entry when set.
	FLClientImageTag string
	// Interval between cycles (30 s), ProbeTimeout per probe (5 s),
	// CycleTimeout for a whole cycle (15 s), Degraded threshold (1 s).
	Interval     time.Duration
	ProbeTimeout time.Duration
	CycleTimeout time.Duration
	Degraded     time.Duration
	// Now replaces time.Now in tests.
	Now func() time.Time
}

// Collector probes the trust's services. Snapshot is safe for concurrent
// use; Run is called once.
type Collector struct {
	opts   Options
	auth   Authorizer
	client *http.Client
	logger *slog.Logger

	mu   sync.Mutex
	snap *hubapi.HealthSnapshot
}

// NewCollector returns a Collector. client should carry no overall timeout:
// probes get their own deadlines.
func NewCollector(opts Options, auth Authorizer, client *http.Client, logger *slog.Logger) *Collector {
	if opts.Interval <= 0 {
		opts.Interval = 30 * time.Second
	}
	if opts.ProbeTimeout <= 0 {
		opts.ProbeTimeout = DefaultProbeTimeout
	}
	if opts.CycleTimeout <= 0 {
		opts.CycleTimeout = 15 * time.Second
	}
	if opts.Degraded <= 0 {
		opts.Degraded = time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	opts.ImagingURL = strings.TrimRight(opts.ImagingURL, "/")
	opts.DataAccessURL = strings.TrimRight(opts.DataAccessURL, "/")
	opts.XNATURL = strings.TrimRight(opts.XNATURL, "/")
	return &Collector{opts: opts, auth: auth, client: client, logger: logger}
}

// Snapshot returns the latest snapshot, nil when there is none (before the
// first cycle, after a failed one, after Run returned).
func (c *Collector) Snapshot() *hubapi.HealthSnapshot {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.snap
}

func (c *Collector) set(s *hubapi.HealthSnapshot) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.snap = s
}

// Run collects every Interval until ctx ends, then clears the snapshot and
// returns nil. A failed or hung cycle drops the snapshot, so the next
// heartbeat goes bodyless rather than re-sending stale health.
func (c *Collector) Run(ctx context.Context) error {
	defer c.set(nil)
	ticker := time.NewTicker(c.opts.Interval)
	defer ticker.Stop()
	for {
		snap, err := c.Collect(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			c.logger.Warn("Health collection cycle failed; heartbeats go without a snapshot", "error", err.Error())
		}
		c.set(snap)
		select {
		case <-ctx.Done():
			return nil
		case <-ticker.C:
		}
	}
}

type probeResult struct {
	key string
	sh  hubapi.ServiceHealth
}

type probe struct {
	key string
	fn  func(ctx context.Context) hubapi.ServiceHealth
}

// Collect runs one cycle: every probe concurrently, each bounded by
// ProbeTimeout, the whole bounded by CycleTimeout. A probe that panics
// costs only its own entry (unknown); a cycle that overruns is an error.
func (c *Collector) Collect(ctx context.Context) (*hubapi.HealthSnapshot, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.CycleTimeout)
	defer cancel()
	probes := []probe{
		{KeyImaging, func(ctx context.Context) hubapi.ServiceHealth {
			return c.serviceHealth(ctx, c.opts.ImagingURL+"/health")
		}},
		{KeyDataAccess, func(ctx context.Context) hubapi.ServiceHealth {
			return c.serviceHealth(ctx, c.opts.DataAccessURL+"/health")
		}},
		{KeyXNAT, c.xnat},
		{KeyDICOM, c.pingPACS},
		{KeyOMOP, c.omop},
	}
	results := make(chan probeResult, len(probes))
	for _, p := range probes {
		go func() {
			defer func() {
				if r := recover(); r != nil {
					c.logger.Error("health probe panicked", "probe", p.key)
					results <- probeResult{p.key, hubapi.ServiceHealth{Status: hubapi.HealthUnknown}}
				}
			}()
			pctx, pcancel := context.WithTimeout(ctx, c.opts.ProbeTimeout)
			defer pcancel()
			results <- probeResult{p.key, p.fn(pctx)}
		}()
	}
	version := truncate(c.opts.Version)
	services := map[string]hubapi.ServiceHealth{
		KeyTrustAPI: {Status: hubapi.HealthHealthy, Version: &version},
	}
	if c.opts.FLClientImageTag != "" {
		tag := truncate(c.opts.FLClientImageTag)
		services[KeyFLClient] = hubapi.ServiceHealth{Status: hubapi.HealthUnknown, Version: &tag}
	}
	for range probes {
		select {
		case r := <-results:
			services[r.key] = r.sh
		case <-ctx.Done():
			return nil, fmt.Errorf("health cycle exceeded %s: %w", c.opts.CycleTimeout, ctx.Err())
		}
	}
	at := c.opts.Now().UTC()
	return &hubapi.HealthSnapshot{Services: services, CollectedAt: &at}, nil
}

// timed grades a successful probe by its round trip.
func (c *Collector) timed(elapsed time.Duration, version *string) hubapi.ServiceHealth {
	ms := int(elapsed.Milliseconds())
	status := hubapi.HealthHealthy
	if elapsed > c.opts.Degraded {
		status = hubapi.HealthDegraded
	}
	return hubapi.ServiceHealth{Status: status, Version: version, ResponseMS: &ms}
}

func down() hubapi.ServiceHealth { return hubapi.ServiceHealth{Status: hubapi.HealthDown} }

// get performs a GET and returns the status, the body (first 64 KiB) and the
// round trip.
func (c *Collector) get(ctx context.Context, url string, audience string) (int, []byte, time.Duration, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, nil, 0, err
	}
	req.Header.Set("Accept", "application/json")
	if audience != "" {
		if err := c.auth.Apply(req, audience); err != nil {
			return 0, nil, 0, err
		}
	}
	start := time.Now()
	resp, err := c.client.Do(req)
	if err != nil {
		return 0, nil, 0, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	elapsed := time.Since(start)
	if err != nil {
		return 0, nil, 0, err
	}
	return resp.StatusCode, body, elapsed, nil
}

// serviceHealth probes a /health endpoint: non-2xx or no answer is down.
func (c *Collector) serviceHealth(ctx context.Context, url string) hubapi.ServiceHealth {
	code, body, elapsed, err := c.get(ctx, url, "")
	if err != nil || code < 200 || code > 299 {
		return down()
	}
	return c.timed(elapsed, versionOf(body))
}

// xnat probes XNAT's buildInfo: 2xx gives the version, 401/403 means alive
// without one, anything else is down.
func (c *Collector) xnat(ctx context.Context) hubapi.ServiceHealth {
	code, body, elapsed, err := c.get(ctx, c.opts.XNATURL+"/xapi/siteConfig/buildInfo", "")
	switch {
	case err != nil:
		return down()
	case code >= 200 && code <= 299:
		return c.timed(elapsed, versionOf(body))
	case code == http.StatusUnauthorized || code == http.StatusForbidden:
		return c.timed(elapsed, nil)
	}
	return down()
}

// pingPACS asks imaging-api to ping the PACS: a failed probe is unknown,
// {"successful": false} is down, otherwise graded by the probe's own round
// trip (the PACS' pingTime is a timestamp, not a duration).
func (c *Collector) pingPACS(ctx context.Context) hubapi.ServiceHealth {
	code, body, elapsed, err := c.get(ctx, c.opts.ImagingURL+"/imaging/ping_pacs", "imaging-api")
	if err != nil || code < 200 || code > 299 {
		return hubapi.ServiceHealth{Status: hubapi.HealthUnknown}
	}
	var reply struct {
		Successful *bool `json:"successful"`
	}
	if json.Unmarshal(body, &reply) != nil {
		return hubapi.ServiceHealth{Status: hubapi.HealthUnknown}
	}
	if reply.Successful != nil && !*reply.Successful {
		return down()
	}
	return c.timed(elapsed, nil)
}

// omop connects to the database port.
func (c *Collector) omop(ctx context.Context) hubapi.ServiceHealth {
	start := time.Now()
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", c.opts.OMOPAddr)
	elapsed := time.Since(start)
	if err != nil {
		return down()
	}
	_ = conn.SetDeadline(time.Now().Add(time.Second))
	_ = conn.Close()
	return c.timed(elapsed, nil)
}

// versionOf reads a string "version" from a JSON body.
func versionOf(body []byte) *string {
	var v struct {
		Version any `json:"version"`
	}
	if json.Unmarshal(body, &v) != nil {
		return nil
	}
	s, ok := v.Version.(string)
	if !ok || s == "" {
		return nil
	}
	s = truncate(s)
	return &s
}

func truncate(s string) string {
	if len(s) <= maxVersion {
		return s
	}
	n := maxVersion
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
