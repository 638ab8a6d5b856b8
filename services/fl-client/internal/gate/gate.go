// Package gate is fl-client's side of the trust's egress gate (trust-api,
// docs/egress.md): before a DP job runs it spends the project's privacy
// budget, and before metrics or a model update leave for the FL server it
// asks trust-api to release them, waiting while a local reviewer holds them.
//
// A Client is safe for concurrent use. Every refusal — a budget exceeded or
// missing, an item refused, rejected or expired — is an error wrapping
// ErrRefused with trust-api's reason; anything else (trust-api unreachable,
// a bad answer) is a plain error, and nothing leaves either way.
package gate

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/flip-trust/node/shared/mesh"
)

// ErrRefused marks the site's refusal: the job may not run, or the item may
// not leave.
var ErrRefused = errors.New("refused by the site's egress gate")

// Audience is trust-api's mesh name.
const Audience = "trust-api"

// Channels of what fl-client sends.
const (
	ChannelMetrics = "fl_metrics"
	ChannelWeights = "fl_weights"
)

// MaxInline is the largest item whose bytes travel to the gate (a reviewer
// can read them); larger items are announced by size and SHA-256 only.
const MaxInline = 16 << 20

// Client talks to trust-api's egress gate.
type Client struct {
	// BaseURL is trust-api's URL (TRUST_API_URL).
	BaseURL   string
	Signer    *mesh.Signer
	Mode      mesh.AuthMode
	KeyHeader string
	// HTTP bounds every call; nil means a client with a 60 s timeout.
	HTTP *http.Client
	// PollMin and PollMax bound the wait between polls of a held item
	// (1 s doubling to 60 s by default).
	PollMin, PollMax time.Duration
	Logger           *slog.Logger
}

// Spend is a job's request to spend its project's privacy budget.
type Spend struct {
	EncryptedProjectID string  `json:"encrypted_project_id"`
	JobID              string  `json:"job_id"`
	NoiseMultiplier    float64 `json:"noise_multiplier"`
	SampleRate         float64 `json:"sample_rate"`
	Steps              int64   `json:"steps"`
}

// Receipt is trust-api's answer to an accepted spend.
type Receipt struct {
	EpsilonJob       float64 `json:"epsilon_job"`
	EpsilonSpent     float64 `json:"epsilon_spent"`
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	Repeat           bool    `json:"repeat"`
}

// Spend asks trust-api to spend s from the project's budget. A 409 (budget
// exceeded, or none configured) wraps ErrRefused with trust-api's reason.
func (c *Client) Spend(ctx context.Context, s Spend) (Receipt, error) {
	var rec Receipt
	status, body, err := c.call(ctx, http.MethodPost, "/egress/v1/budget/spend", s)
	if err != nil {
		return rec, fmt.Errorf("privacy budget: %w", err)
	}
	switch status {
	case http.StatusOK:
		if err := json.Unmarshal(body, &rec); err != nil {
			return rec, fmt.Errorf("privacy budget: undecodable answer: %w", err)
		}
		return rec, nil
	case http.StatusConflict:
		return rec, fmt.Errorf("%w: %s", ErrRefused, reason(body, "privacy budget exceeded"))
	}
	return rec, fmt.Errorf("privacy budget: trust-api answered %d: %s", status, reason(body, ""))
}

// Item is something that is to leave for the FL server.
type Item struct {
	Channel string
	TaskID  string
	Kind    string
	Rules   []string
	// Content holds the bytes, or Path names the file holding them.
	Content []byte
	Path    string
}

type itemBody struct {
	Channel       string   `json:"channel"`
	TaskID        string   `json:"task_id"`
	Project       string   `json:"project"`
	Kind          string   `json:"kind"`
	ContentBase64 string   `json:"content_base64,omitempty"`
	Size          int64    `json:"size"`
	SHA256        string   `json:"sha256"`
	Rules         []string `json:"rules"`
}

type decision struct {
	Decision string `json:"decision"`
	ID       string `json:"id"`
	State    string `json:"state"`
	Reason   string `json:"reason"`
	Detail   any    `json:"detail"`
}

// Release submits it to the gate and returns nil once it is released: at
// once (200), or after a reviewer approved it (202, then polled with backoff
// until ctx ends). A refusal (403), a rejection or an expiry wraps
// ErrRefused with the reason.
func (c *Client) Release(ctx context.Context, it Item) error {
	b := itemBody{Channel: it.Channel, TaskID: it.TaskID, Kind: it.Kind, Rules: it.Rules}
	if b.Rules == nil {
		b.Rules = []string{}
	}
	content := it.Content
	if it.Path != "" {
		size, sum, err := digestFile(it.Path)
		if err != nil {
			return err
		}
		b.Size, b.SHA256 = size, sum
		if size <= MaxInline {
			if content, err = os.ReadFile(it.Path); err != nil {
				return fmt.Errorf("read %s item: %w", it.Channel, err)
			}
		}
	} else {
		sum := sha256.Sum256(content)
		b.Size, b.SHA256 = int64(len(content)), hex.EncodeToString(sum[:])
	}
	if content != nil && int64(len(content)) <= MaxInline {
		b.ContentBase64 = base64.StdEncoding.EncodeToString(content)
	}
	status, body, err := c.call(ctx, http.MethodPost, "/egress/v1/items", b)
	if err != nil {
		return fmt.Errorf("egress gate: %w", err)
	}
	var d decision
	_ = json.Unmarshal(body, &d)
	switch {
	case status == http.StatusOK && d.Decision == "released":
		return nil
	case status == http.StatusForbidden:
		return fmt.Errorf("%w: %s", ErrRefused, reason(body, "refused by site egress policy"))
	case status == http.StatusAccepted && d.ID != "":
		c.logger().Info("egress item held for review", "channel", it.Channel, "task", it.TaskID, "item", d.ID)
		return c.await(ctx, d.ID)
	}
	return fmt.Errorf("egress gate: trust-api answered %d: %s", status, reason(body, ""))
}

// await polls a held item until it is released, rejected or expired.
func (c *Client) await(ctx context.Context, id string) error {
	wait, most := c.PollMin, c.PollMax
	if wait <= 0 {
		wait = time.Second
	}
	if most <= 0 {
		most = time.Minute
	}
	for {
		t := time.NewTimer(wait/2 + rand.N(wait/2+1))
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("egress item %s still held for review when the task's time ran out: %w", id, context.Cause(ctx))
		case <-t.C:
		}
		wait = min(wait*2, most)
		status, body, err := c.call(ctx, http.MethodGet, "/egress/v1/items/"+url.PathEscape(id), nil)
		if err != nil {
			if ctx.Err() != nil {
				continue // reported at the top of the loop
			}
			c.logger().Warn("polling a held egress item failed", "item", id, "error", err.Error())
			continue
		}
		if status != http.StatusOK {
			if status >= 500 || status == http.StatusTooManyRequests {
				continue
			}
			return fmt.Errorf("egress gate: item %s: trust-api answered %d: %s", id, status, reason(body, ""))
		}
		var d decision
		if err := json.Unmarshal(body, &d); err != nil {
			return fmt.Errorf("egress gate: item %s: undecodable answer: %w", id, err)
		}
		switch d.State {
		case "released":
			return nil
		case "rejected", "expired":
			why := d.Reason
			if why == "" {
				why = "no reason given"
			}
			return fmt.Errorf("%w: item %s: %s by the site's reviewer: %s", ErrRefused, id, d.State, why)
		case "held":
		default:
			return fmt.Errorf("egress gate: item %s is in unknown state %q", id, d.State)
		}
	}
}

func (c *Client) logger() *slog.Logger {
	if c.Logger == nil {
		return slog.New(slog.DiscardHandler)
	}
	return c.Logger
}

// call makes one authenticated call and returns the status and body (at
// most 1 MiB).
func (c *Client) call(ctx context.Context, method, path string, in any) (int, []byte, error) {
	var body io.Reader
	if in != nil {
		raw, err := json.Marshal(in)
		if err != nil {
			return 0, nil, err
		}
		body = bytes.NewReader(raw)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(c.BaseURL, "/")+path, body)
	if err != nil {
		return 0, nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if err := c.Signer.Apply(req, Audience, c.Mode, c.KeyHeader); err != nil {
		return 0, nil, fmt.Errorf("mesh auth: %w", err)
	}
	hc := c.HTTP
	if hc == nil {
		hc = &http.Client{Timeout: time.Minute}
	}
	resp, err := hc.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return 0, nil, fmt.Errorf("read answer: %w", err)
	}
	return resp.StatusCode, raw, nil
}

// reason is the human text of an answer: its reason, detail or error field.
func reason(body []byte, fallback string) string {
	var m map[string]any
	if json.Unmarshal(body, &m) == nil {
		for _, k := range []string{"reason", "detail", "error"} {
			if s, ok := m[k].(string); ok && s != "" {
				return truncate(s)
			}
		}
	}
	if fallback != "" {
		return fallback
	}
	return truncate(strings.TrimSpace(string(body)))
}

func truncate(s string) string {
	if len(s) > 300 {
		return s[:300]
	}
	return s
}

func digestFile(path string) (int64, string, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, "", fmt.Errorf("open egress item: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", fmt.Errorf("digest egress item: %w", err)
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
