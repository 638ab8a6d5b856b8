package gate

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/mesh"
)

var key = []byte(strings.Repeat("m", 32))

// fakeTrustAPI stands in for trust-api's gate routes, behind real mesh auth
// admitting fl-client only.
func fakeTrustAPI(t *testing.T, h http.HandlerFunc) *Client {
	t.Helper()
	srv := httptest.NewServer(mesh.NewVerifier(Audience, key, "", nil).Require("fl-client")(h))
	t.Cleanup(srv.Close)
	return &Client{BaseURL: srv.URL, Signer: mesh.NewSigner("fl-client", key), Mode: mesh.ModeJWT,
		PollMin: time.Millisecond, PollMax: 4 * time.Millisecond}
}

func write(w http.ResponseWriter, status int, body string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write([]byte(body))
}

func TestSpend(t *testing.T) {
	t.Parallel()
	var got Spend
	c := fakeTrustAPI(t, func(w http.ResponseWriter, r *http.Request) {
		_ = json.NewDecoder(r.Body).Decode(&got)
		if r.URL.Path != "/egress/v1/budget/spend" {
			write(w, 404, `{"detail":"no route"}`)
			return
		}
		if got.JobID == "over" {
			write(w, 409, `{"detail":"privacy budget exceeded: project p has ε 0.1 of 8 left"}`)
			return
		}
		write(w, 200, `{"epsilon_job":1.5,"epsilon_spent":2,"epsilon_remaining":6}`)
	})
	rec, err := c.Spend(context.Background(), Spend{EncryptedProjectID: "e", JobID: "j", NoiseMultiplier: 1.1, SampleRate: 1, Steps: 3})
	if err != nil || rec.EpsilonRemaining != 6 || got.Steps != 3 || got.EncryptedProjectID != "e" {
		t.Fatalf("spend: %+v %v (sent %+v)", rec, err, got)
	}
	_, err = c.Spend(context.Background(), Spend{JobID: "over"})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "privacy budget exceeded: project p") {
		t.Errorf("over budget: %v", err)
	}
}

func TestReleaseAnswers(t *testing.T) {
	t.Parallel()
	var polls atomic.Int32
	var last itemBody
	c := fakeTrustAPI(t, func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			n := polls.Add(1)
			switch {
			case r.URL.Path == "/egress/v1/items/held-ok" && n >= 3:
				write(w, 200, `{"id":"held-ok","state":"released","seq":7}`)
			case r.URL.Path == "/egress/v1/items/held-no" && n >= 2:
				write(w, 200, `{"id":"held-no","state":"rejected","reason":"cell counts too small"}`)
			case n == 1:
				write(w, 503, `{"detail":"busy"}`) // retried
			default:
				write(w, 200, `{"state":"held"}`)
			}
			return
		}
		_ = json.NewDecoder(r.Body).Decode(&last)
		switch last.TaskID {
		case "release":
			write(w, 200, `{"decision":"released","seq":1}`)
		case "refuse":
			write(w, 403, `{"decision":"refused","reason":"refused by site egress policy"}`)
		case "hold-ok":
			write(w, 202, `{"decision":"held","id":"held-ok"}`)
		case "hold-no":
			write(w, 202, `{"decision":"held","id":"held-no"}`)
		case "hold-forever":
			write(w, 202, `{"decision":"held","id":"forever"}`)
		}
	})
	ctx := context.Background()
	if err := c.Release(ctx, Item{Channel: ChannelMetrics, TaskID: "release", Kind: "evaluate_result", Content: []byte(`{"auc":0.7}`)}); err != nil {
		t.Errorf("released: %v", err)
	}
	if raw, _ := base64.StdEncoding.DecodeString(last.ContentBase64); string(raw) != `{"auc":0.7}` || last.Size != 11 || len(last.SHA256) != 64 || last.Channel != ChannelMetrics {
		t.Errorf("item sent: %+v", last)
	}
	err := c.Release(ctx, Item{Channel: ChannelWeights, TaskID: "refuse", Content: []byte("w")})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "refused by site egress policy") {
		t.Errorf("refused: %v", err)
	}
	if err := c.Release(ctx, Item{Channel: ChannelMetrics, TaskID: "hold-ok", Content: []byte("{}")}); err != nil {
		t.Errorf("held then released: %v", err)
	}
	polls.Store(0)
	err = c.Release(ctx, Item{Channel: ChannelMetrics, TaskID: "hold-no", Content: []byte("{}")})
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "cell counts too small") {
		t.Errorf("held then rejected: %v", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	err = c.Release(dctx, Item{Channel: ChannelMetrics, TaskID: "hold-forever", Content: []byte("{}")})
	if err == nil || errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "still held") {
		t.Errorf("held past the deadline: %v", err)
	}
}

func TestLargeItemsGoByDigest(t *testing.T) {
	t.Parallel()
	var last itemBody
	c := fakeTrustAPI(t, func(w http.ResponseWriter, r *http.Request) {
		last = itemBody{}
		_ = json.NewDecoder(r.Body).Decode(&last)
		write(w, 200, `{"decision":"released","seq":1}`)
	})
	dir := t.TempDir()
	small, big := filepath.Join(dir, "small"), filepath.Join(dir, "big")
	_ = os.WriteFile(small, []byte("update"), 0o600)
	_ = os.WriteFile(big, make([]byte, MaxInline+1), 0o600)
	if err := c.Release(context.Background(), Item{Channel: ChannelWeights, TaskID: "t", Path: small}); err != nil || last.ContentBase64 == "" || last.Size != 6 {
		t.Errorf("small update: %v %+v", err, last.Size)
	}
	if err := c.Release(context.Background(), Item{Channel: ChannelWeights, TaskID: "t", Path: big}); err != nil || last.ContentBase64 != "" || last.Size != MaxInline+1 {
		t.Errorf("large update: %v, size %d, content %d bytes", err, last.Size, len(last.ContentBase64))
	}
}

func TestWrongKeyIsNotARefusal(t *testing.T) {
	t.Parallel()
	c := fakeTrustAPI(t, func(w http.ResponseWriter, r *http.Request) { write(w, 200, `{"decision":"released"}`) })
	c.Signer = mesh.NewSigner("fl-client", []byte(strings.Repeat("x", 32)))
	err := c.Release(context.Background(), Item{Channel: ChannelMetrics, TaskID: "t", Content: []byte("{}")})
	if err == nil || errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "401") {
		t.Errorf("unauthenticated: %v", err)
	}
}
