package app

import (
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/services/dev-hub/internal/config"
)

func TestPublicAPIURL(t *testing.T) {
	t.Parallel()
	bound := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40123}
	cases := []struct {
		name string
		cfg  config.Config
		addr net.Addr
		want string
	}{
		{"public url wins", config.Config{PublicURL: "http://dev-hub:8080", Addr: "0.0.0.0:8080"}, bound, "http://dev-hub:8080/api"},
		{"loopback default", config.Config{Addr: "127.0.0.1:8080"}, nil, "http://127.0.0.1:8080/api"},
		{"wildcard host", config.Config{Addr: "0.0.0.0:8080"}, nil, "http://127.0.0.1:8080/api"},
		{"empty host", config.Config{Addr: ":9000"}, nil, "http://127.0.0.1:9000/api"},
		{"port 0 uses the bound port", config.Config{Addr: "127.0.0.1:0"}, bound, "http://127.0.0.1:40123/api"},
		{"named host", config.Config{Addr: "hub.internal:8080"}, nil, "http://hub.internal:8080/api"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := publicAPIURL(c.cfg, c.addr); got != c.want {
				t.Fatalf("got %s, want %s", got, c.want)
			}
		})
	}
}

func TestHoldAnswersRunsAtOnceAndAnswersLate(t *testing.T) {
	t.Parallel()
	var ranAt atomic.Int64
	h := holdAnswers(150 * time.Millisecond)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ranAt.Store(time.Now().UnixNano())
		w.Header().Set("X-Seen", "yes")
		w.WriteHeader(http.StatusAccepted)
		_, _ = w.Write([]byte("done"))
	}))
	start := time.Now()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/cohort", nil))
	if elapsed := time.Since(start); elapsed < 150*time.Millisecond {
		t.Fatalf("answered after %s, want at least the hold", elapsed)
	}
	if ran := time.Unix(0, ranAt.Load()); ran.Sub(start) > 50*time.Millisecond {
		t.Fatalf("handler ran %s after arrival, want at once", ran.Sub(start))
	}
	if rec.Code != http.StatusAccepted || rec.Body.String() != "done" || rec.Header().Get("X-Seen") != "yes" {
		t.Fatalf("held answer %d %q %v", rec.Code, rec.Body.String(), rec.Header())
	}
	start = time.Now()
	h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest(http.MethodGet, "/_standin/requests", nil))
	if time.Since(start) > 50*time.Millisecond {
		t.Fatal("the stand-in's own routes were held")
	}
}
