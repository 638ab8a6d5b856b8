package health

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/shared/mesh"
)

var internalKey = []byte("health-internal-key-health-internal-key")

type meshAuth struct{ s *mesh.Signer }

func (m meshAuth) Apply(r *http.Request, aud string) error {
	return m.s.Apply(r, aud, mesh.ModeJWT, "")
}

func serve(t *testing.T, h http.HandlerFunc) string {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s.URL
}

func answer(code int, body string, delay time.Duration) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
				return
			}
		}
		w.WriteHeader(code)
		_, _ = io.WriteString(w, body)
	}
}

func closedURL(t *testing.T) string {
	s := httptest.NewServer(http.NotFoundHandler())
	s.Close()
	return s.URL
}

func openPort(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func closedPort(t *testing.T) string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	addr := l.Addr().String()
	l.Close()
	return addr
}

// imaging serves /health and an authenticated /imaging/ping_pacs.
func imaging(t *testing.T, health http.HandlerFunc, ping http.HandlerFunc) string {
	v := mesh.NewVerifier("imaging-api", internalKey, "", slog.New(slog.DiscardHandler))
	mux := http.NewServeMux()
	mux.Handle("/health", health)
	mux.Handle("/imaging/ping_pacs", v.Require("trust-api")(ping))
	return serve(t, mux.ServeHTTP)
}

func collector(opts Options) *Collector {
	if opts.Version == "" {
		opts.Version = "v1.0.0"
	}
	return NewCollector(opts, meshAuth{mesh.NewSigner("trust-api", internalKey)}, &http.Client{}, slog.New(slog.DiscardHandler))
}

func TestProbeMapping(t *testing.T) {
	t.Parallel()
	longVersion := strings.Repeat("v", 80)
	tests := []struct {
		name string
		opts func(t *testing.T) Options
		want map[string]string // key -> status
		ver  map[string]string // key -> version ("" = nil)
	}{
		{
			name: "all healthy",
			opts: func(t *testing.T) Options {
				return Options{
					ImagingURL:    imaging(t, answer(200, `{"version":"img-2.0"}`, 0), answer(200, `{"successful":true,"pingTime":1700000000}`, 0)),
					DataAccessURL: serve(t, answer(200, `{"version":"`+longVersion+`"}`, 0)),
					XNATURL:       serve(t, answer(200, `{"version":"1.8.10"}`, 0)),
					OMOPAddr:      openPort(t),
				}
			},
			want: map[string]string{KeyTrustAPI: "healthy", KeyImaging: "healthy", KeyDataAccess: "healthy", KeyXNAT: "healthy", KeyDICOM: "healthy", KeyOMOP: "healthy"},
			ver:  map[string]string{KeyImaging: "img-2.0", KeyDataAccess: strings.Repeat("v", 64), KeyXNAT: "1.8.10", KeyTrustAPI: "v1.0.0"},
		},
		{
			name: "failures",
			opts: func(t *testing.T) Options {
				return Options{
					ImagingURL:    imaging(t, answer(503, `{}`, 0), answer(200, `{"successful":false}`, 0)),
					DataAccessURL: closedURL(t),
					XNATURL:       serve(t, answer(401, ``, 0)),
					OMOPAddr:      closedPort(t),
				}
			},
			want: map[string]string{KeyImaging: "down", KeyDataAccess: "down", KeyXNAT: "healthy", KeyDICOM: "down", KeyOMOP: "down"},
			ver:  map[string]string{KeyXNAT: ""},
		},
		{
			name: "ping chain broken is unknown, xnat 500 down",
			opts: func(t *testing.T) Options {
				return Options{
					ImagingURL:    imaging(t, answer(200, `not json`, 0), answer(500, `{}`, 0)),
					DataAccessURL: closedURL(t),
					XNATURL:       serve(t, answer(500, ``, 0)),
					OMOPAddr:      closedPort(t),
				}
			},
			want: map[string]string{KeyImaging: "healthy", KeyDICOM: "unknown", KeyXNAT: "down"},
			ver:  map[string]string{KeyImaging: ""},
		},
		{
			name: "slow is degraded, fl-client listed",
			opts: func(t *testing.T) Options {
				return Options{
					ImagingURL:       imaging(t, answer(200, `{}`, 80*time.Millisecond), answer(200, `{}`, 0)),
					DataAccessURL:    serve(t, answer(200, `{}`, 0)),
					XNATURL:          serve(t, answer(403, ``, 80*time.Millisecond)),
					OMOPAddr:         openPort(t),
					Degraded:         40 * time.Millisecond,
					FLClientImageTag: "fl-client:1.4",
				}
			},
			want: map[string]string{KeyImaging: "degraded", KeyDataAccess: "healthy", KeyXNAT: "degraded", KeyDICOM: "healthy", KeyFLClient: "unknown"},
			ver:  map[string]string{KeyFLClient: "fl-client:1.4"},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			snap, err := collector(tc.opts(t)).Collect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := snap.Services[KeyFLClient]; ok != (tc.want[KeyFLClient] != "") {
				t.Fatalf("fl-client entry present=%v", ok)
			}
			for key, want := range tc.want {
				got, ok := snap.Services[key]
				if !ok || got.Status != want {
					t.Errorf("%s = %+v, want %s", key, got, want)
				}
				if (want == "healthy" || want == "degraded") && key != KeyTrustAPI && got.ResponseMS == nil {
					t.Errorf("%s has no response_ms", key)
				}
			}
			for key, want := range tc.ver {
				got := snap.Services[key].Version
				if (want == "") != (got == nil) || (got != nil && *got != want) {
					t.Errorf("%s version = %v, want %q", key, got, want)
				}
			}
			if snap.CollectedAt == nil || len(snap.Services) > 16 {
				t.Fatalf("snapshot %+v", snap)
			}
			if _, err := json.Marshal(snap); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestProbeTimeout(t *testing.T) {
	t.Parallel()
	hang := answer(200, `{}`, time.Minute)
	c := collector(Options{
		ImagingURL: imaging(t, hang, hang), DataAccessURL: serve(t, hang), XNATURL: serve(t, hang), OMOPAddr: openPort(t),
		ProbeTimeout: 100 * time.Millisecond, CycleTimeout: 2 * time.Second,
	})
	start := time.Now()
	snap, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > time.Second {
		t.Fatal("probe timeout not applied")
	}
	if snap.Services[KeyImaging].Status != "down" || snap.Services[KeyDICOM].Status != "unknown" || snap.Services[KeyOMOP].Status != "healthy" {
		t.Fatalf("%+v", snap.Services)
	}
}

func TestHungCycleDropsSnapshot(t *testing.T) {
	t.Parallel()
	release := make(chan struct{})
	var calls atomic.Int32
	var hang http.HandlerFunc = func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) > 1 {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, `{}`)
	}
	defer close(release)
	c := collector(Options{
		ImagingURL: imaging(t, answer(200, `{}`, 0), answer(200, `{}`, 0)), DataAccessURL: serve(t, hang),
		XNATURL: serve(t, answer(200, `{}`, 0)), OMOPAddr: openPort(t),
		Interval: 50 * time.Millisecond, ProbeTimeout: time.Minute, CycleTimeout: 150 * time.Millisecond,
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	deadline := time.Now().Add(3 * time.Second)
	for c.Snapshot() == nil {
		if time.Now().After(deadline) {
			t.Fatal("no first snapshot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	for c.Snapshot() != nil {
		if time.Now().After(deadline) {
			t.Fatal("a hung cycle kept the stale snapshot")
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	if c.Snapshot() != nil {
		t.Fatal("snapshot not cleared on exit")
	}
}

func TestReport(t *testing.T) {
	t.Parallel()
	live := &Liveness{}
	ver, fp, match := "hub-1.2", "abc", true
	h := Handler("v9", live, func() hub.StatusView {
		return hub.StatusView{HubVersion: &ver, KeyMatch: &match, KeyFingerprint: &fp}
	})
	code, body := h(context.Background())
	raw, _ := json.Marshal(body)
	if code != 200 || string(raw) != `{"status":"ok","version":"v9","dead_tasks":[],"hub_version":"hub-1.2","hub_key_match":true,"hub_key_fingerprint":"abc"}` {
		t.Fatalf("%d %s", code, raw)
	}
	live.MarkDead("task_poller")
	live.MarkDead("health_collector")
	_, body = Handler("v9", live, func() hub.StatusView { return hub.StatusView{} })(context.Background())
	raw, _ = json.Marshal(body)
	if string(raw) != `{"status":"degraded","version":"v9","dead_tasks":["health_collector","task_poller"],"hub_version":null,"hub_key_match":null,"hub_key_fingerprint":null}` {
		t.Fatalf("%s", raw)
	}
}
