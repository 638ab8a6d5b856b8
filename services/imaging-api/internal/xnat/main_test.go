package xnat_test

import (
	"bytes"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

// pg is started by the first test that needs it and stopped when the tests
// end.
var pg xnattest.SharedPostgres

func TestMain(m *testing.M) {
	code := m.Run()
	if err := pg.Close(); err != nil {
		fmt.Fprintln(os.Stderr, "stop postgres:", err)
	}
	os.Exit(code)
}

// database returns a pool on the test PostgreSQL's xnat database.
func database(t *testing.T) *pgxpool.Pool { return pg.Pool(t) }

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type fixture struct {
	srv  *xnattest.Server
	cl   *xnat.Client
	logs *syncBuffer
}

// newFixture starts a contract server and a client logged in as its service
// account; db (may be nil) backs both the server's DQR tables and the
// client's status reads.
func newFixture(t *testing.T, opts xnattest.Options, db *pgxpool.Pool, mod ...func(*xnat.Config)) *fixture {
	t.Helper()
	if db != nil {
		opts.DB = db
	}
	srv := xnattest.New(opts)
	t.Cleanup(srv.Close)
	cfg := xnat.Config{BaseURL: srv.URL, Username: xnattest.DefaultUsername, Password: xnattest.DefaultPassword,
		Timeout: 5 * time.Second, ReceiverPort: 8104}
	for _, m := range mod {
		m(&cfg)
	}
	logs := &syncBuffer{}
	var q xnat.Querier
	if db != nil {
		q = db
	}
	cl, err := xnat.New(cfg, q, slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})))
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{srv: srv, cl: cl, logs: logs}
}
