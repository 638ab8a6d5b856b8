// Package hub is trust-api's client for the FLIP hub's trust-facing API:
// heartbeat, task polling, result and cohort-results posts. Every call sends
// the trust API key raw in the configured header and is bounded by a
// timeout. The client checks the hub's view of this trust's identity against
// EXPECTED_TRUST_ID on the first identity-bearing reply and keeps the hub's
// status (version, key fingerprint) for /health.
//
// A Client is safe for concurrent use. Failed calls return a *StatusError
// for an HTTP answer the caller must act on, *IdentityMismatchError when the
// hub names another trust, and a wrapped transport error otherwise.
package hub

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/flip-trust/node/shared/hubapi"
)

// DefaultTimeout bounds every hub call, as FLIP's poller does.
const DefaultTimeout = 30 * time.Second

// maxReplyBytes bounds what is read from a hub reply (a pending batch holds
// up to 50 sealed payloads).
const maxReplyBytes = 64 << 20

// StatusError is a hub answer outside 2xx.
type StatusError struct {
	Op     string
	Code   int
	Body   string // the first 500 bytes
	Header http.Header
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("hub %s: HTTP %d", e.Op, e.Code)
}

// RetryAfter returns the delay the hub asked for with Retry-After (seconds
// or an HTTP date), and false when there is none.
func (e *StatusError) RetryAfter(now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(e.Header.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	if secs, err := strconv.ParseFloat(v, 64); err == nil && secs >= 0 {
		return time.Duration(secs * float64(time.Second)), true
	}
	if at, err := http.ParseTime(v); err == nil {
		d := at.Sub(now)
		if d < 0 {
			d = 0
		}
		return d, true
	}
	return 0, false
}

// IdentityMismatchError reports that the hub identifies this host as a
// different trust than EXPECTED_TRUST_ID: the wrong kit is deployed here.
type IdentityMismatchError struct {
	Expected  string
	TrustID   string
	TrustName string
}

func (e *IdentityMismatchError) Error() string {
	return fmt.Sprintf("hub identifies this host as trust %q (%s), kit declares EXPECTED_TRUST_ID=%s", e.TrustName, e.TrustID, e.Expected)
}

// Options configure a Client.
type Options struct {
	// BaseURL is CENTRAL_HUB_API_URL (it already ends in /api).
	BaseURL string
	// Key and KeyHeader authenticate the trust (the key goes raw, no scheme).
	Key       string
	KeyHeader string
	// ExpectedTrustID, when set, must match the hub's trust_id.
	ExpectedTrustID string
	// OwnFingerprint is this trust's AES key fingerprint; "" when unknown.
	OwnFingerprint string
	// Timeout bounds each call (default 30 s).
	Timeout time.Duration
	// Transport replaces http.DefaultTransport (tests).
	Transport http.RoundTripper
}

// Client talks to the hub.
type Client struct {
	base      string
	key       string
	keyHeader string
	http      *http.Client
	logger    *slog.Logger
	identity  *identityCheck
	status    *Status
}

// New returns a Client.
func New(opts Options, logger *slog.Logger) *Client {
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultTimeout
	}
	if opts.KeyHeader == "" {
		opts.KeyHeader = hubapi.DefaultKeyHeader
	}
	return &Client{
		base:      strings.TrimRight(opts.BaseURL, "/"),
		key:       opts.Key,
		keyHeader: opts.KeyHeader,
		http:      &http.Client{Timeout: opts.Timeout, Transport: opts.Transport},
		logger:    logger,
		identity:  &identityCheck{expected: opts.ExpectedTrustID, logger: logger},
		status:    newStatus(opts.OwnFingerprint, logger),
	}
}

// Status returns the hub-status record fed by heartbeats.
func (c *Client) Status() *Status { return c.status }

// reply is a completed hub exchange.
type reply struct {
	code int
	body []byte
}

func (c *Client) do(ctx context.Context, op, method, path string, body []byte) (reply, error) {
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, rd)
	if err != nil {
		return reply{}, fmt.Errorf("hub %s: build request: %w", op, err)
	}
	req.Header.Set(c.keyHeader, c.key)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return reply{}, fmt.Errorf("hub %s: %w", op, err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxReplyBytes))
	if err != nil {
		return reply{}, fmt.Errorf("hub %s: read reply: %w", op, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return reply{code: resp.StatusCode, body: raw}, &StatusError{Op: op, Code: resp.StatusCode, Body: cut(string(raw), 500), Header: resp.Header.Clone()}
	}
	return reply{code: resp.StatusCode, body: raw}, nil
}

// Heartbeat posts the snapshot (or no body when snap is nil). A snapshot the
// hub rejects with 422 is logged and the heartbeat is retried once without a
// body, so a bad snapshot never costs the trust its liveness. Other
// rejections are not retried. A 2xx JSON reply feeds the identity check and
// the hub status; a failed heartbeat forgets the hub status.
func (c *Client) Heartbeat(ctx context.Context, snap *hubapi.HealthSnapshot) error {
	var body []byte
	if snap != nil {
		b, err := json.Marshal(snap)
		if err != nil {
			return fmt.Errorf("hub heartbeat: encode snapshot: %w", err)
		}
		body = b
	}
	r, err := c.do(ctx, "heartbeat", http.MethodPost, hubapi.PathHeartbeat, body)
	var se *StatusError
	if body != nil && errors.As(err, &se) && se.Code == http.StatusUnprocessableEntity {
		c.logger.Error("Hub rejected health snapshot (HTTP 422): " + cut(string(r.body), 500))
		r, err = c.do(ctx, "heartbeat", http.MethodPost, hubapi.PathHeartbeat, nil)
	}
	if err != nil {
		c.status.Forget()
		return err
	}
	var rep hubapi.HeartbeatReply
	if json.Unmarshal(r.body, &rep) != nil {
		return nil // a non-JSON 2xx is tolerated
	}
	if err := c.identity.check(rep.Identity); err != nil {
		return err
	}
	c.status.Record(rep)
	return nil
}

// Pending fetches the tasks the hub hands out now. Any failure yields no
// tasks and an error describing it (a non-200 answer is a *StatusError).
func (c *Client) Pending(ctx context.Context) ([]hubapi.Task, error) {
	r, err := c.do(ctx, "poll", http.MethodGet, hubapi.PathPending, nil)
	if err != nil {
		return nil, err
	}
	if r.code != http.StatusOK {
		return nil, &StatusError{Op: "poll", Code: r.code}
	}
	var rep hubapi.PendingReply
	if err := json.Unmarshal(r.body, &rep); err != nil {
		return nil, fmt.Errorf("hub poll: decode reply: %w", err)
	}
	if err := c.identity.check(rep.Identity); err != nil {
		return nil, err
	}
	return rep.Tasks, nil
}

// PostResult reports a task's result.
func (c *Client) PostResult(ctx context.Context, taskID string, res hubapi.TaskResult) error {
	if !hubapi.ValidTaskID(taskID) {
		return fmt.Errorf("hub result: task id is not a UUID")
	}
	body, err := json.Marshal(res)
	if err != nil {
		return fmt.Errorf("hub result: encode: %w", err)
	}
	return c.PostResultBody(ctx, taskID, body)
}

// PostResultBody posts body, an encoded hubapi.TaskResult, byte for byte:
// delivery ledgers exactly these bytes before it sends them.
func (c *Client) PostResultBody(ctx context.Context, taskID string, body []byte) error {
	if !hubapi.ValidTaskID(taskID) {
		return fmt.Errorf("hub result: task id is not a UUID")
	}
	_, err := c.do(ctx, "result", http.MethodPost, hubapi.PathResult(taskID), body)
	return err
}

// PostCohortResults posts a cohort statistics (or error) body.
func (c *Client) PostCohortResults(ctx context.Context, body json.RawMessage) error {
	_, err := c.do(ctx, "cohort results", http.MethodPost, hubapi.PathCohortResults, body)
	return err
}

// identityCheck runs FLIP's identity self-check once.
type identityCheck struct {
	expected string
	logger   *slog.Logger
	mu       sync.Mutex
	done     bool
}

func (ic *identityCheck) check(id hubapi.Identity) error {
	if id.TrustID == "" || id.TrustName == "" {
		return nil
	}
	ic.mu.Lock()
	defer ic.mu.Unlock()
	if ic.done {
		return nil
	}
	if ic.expected != "" && !strings.EqualFold(ic.expected, id.TrustID) {
		ic.logger.Error(fmt.Sprintf("Hub identifies this host as trust %q (%s); kit declares EXPECTED_TRUST_ID=%s. Wrong kit deployed to this host? Exiting.",
			id.TrustName, id.TrustID, ic.expected), "trust_id", id.TrustID, "trust_name", id.TrustName)
		return &IdentityMismatchError{Expected: ic.expected, TrustID: id.TrustID, TrustName: id.TrustName}
	}
	ic.done = true
	ic.logger.Info(fmt.Sprintf("Authenticated to hub as trust %q (%s).", id.TrustName, id.TrustID), "trust_id", id.TrustID, "trust_name", id.TrustName)
	return nil
}

// cut returns at most n bytes of s, on a rune boundary.
func cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return s[:n]
}
