package runner

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flip-trust/node/services/trust-api/internal/delivery"
	"github.com/flip-trust/node/services/trust-api/internal/hub"
	"github.com/flip-trust/node/services/trust-api/internal/journal"
	"github.com/flip-trust/node/services/trust-api/internal/tasks"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/mesh"
)

var (
	aesKey      = base64.StdEncoding.EncodeToString([]byte("runner-test-key-runner-test-key!"))
	internalKey = []byte("runner-internal-key-runner-internal-key")
)

const (
	hubKey    = "hub-api-key-for-runner-tests"
	testTrust = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

// hubTask is a task row in the stand-in hub.
type hubTask struct {
	id, taskType string
	payload      []byte // plaintext JSON; sealed at dispatch like the hub does
	status       hubapi.Status
	results      []hubapi.TaskResult
}

// standinHub is a small FLIP hub: it dispatches PENDING tasks once (marking
// them IN_PROGRESS), accepts one result per dispatch (409 otherwise) and
// records heartbeats and cohort results.
type standinHub struct {
	t      *testing.T
	cipher *envelope.Cipher
	srv    *httptest.Server

	mu         sync.Mutex
	tasks      map[string]*hubTask
	order      []string
	heartbeats []time.Time
	cohort     []json.RawMessage
	override   func(w http.ResponseWriter, r *http.Request) bool // answers instead when it returns true
	trustID    string
}

func newStandinHub(t *testing.T, c *envelope.Cipher) *standinHub {
	h := &standinHub{t: t, cipher: c, tasks: map[string]*hubTask{}, trustID: testTrust}
	h.srv = httptest.NewServer(http.HandlerFunc(h.serve))
	t.Cleanup(h.srv.Close)
	return h
}

func (h *standinHub) add(id string, tt hubapi.TaskType, payload any) {
	raw, _ := json.Marshal(payload)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tasks[id] = &hubTask{id: id, taskType: string(tt), payload: raw, status: hubapi.Pending}
	h.order = append(h.order, id)
}

// reset puts a task back to PENDING, as the hub's stale sweep does.
func (h *standinHub) reset(id string) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.tasks[id].status = hubapi.Pending
}

func (h *standinHub) task(id string) hubTask {
	h.mu.Lock()
	defer h.mu.Unlock()
	tk := *h.tasks[id]
	tk.results = append([]hubapi.TaskResult(nil), tk.results...)
	return tk
}

func (h *standinHub) setOverride(fn func(w http.ResponseWriter, r *http.Request) bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.override = fn
}

func (h *standinHub) heartbeatTimes() []time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]time.Time(nil), h.heartbeats...)
}

func (h *standinHub) cohortBodies() []json.RawMessage {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]json.RawMessage(nil), h.cohort...)
}

func (h *standinHub) identity() string {
	return `"trust_id":"` + h.trustID + `","trust_name":"GSTT"`
}

func (h *standinHub) serve(w http.ResponseWriter, r *http.Request) {
	h.mu.Lock()
	override := h.override
	h.mu.Unlock()
	if override != nil && override(w, r) {
		return
	}
	if r.Header.Get("Authorization") != hubKey {
		w.WriteHeader(401)
		_, _ = io.WriteString(w, `{"detail":"Invalid API Key."}`)
		return
	}
	body, _ := io.ReadAll(r.Body)
	h.mu.Lock()
	defer h.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	switch {
	case r.Method == http.MethodPost && r.URL.Path == "/api/trust/heartbeat":
		h.heartbeats = append(h.heartbeats, time.Now())
		_, _ = io.WriteString(w, `{`+h.identity()+`,"message":"Heartbeat recorded"}`)
	case r.Method == http.MethodGet && r.URL.Path == "/api/tasks/pending":
		var out []hubapi.Task
		for _, id := range h.order {
			tk := h.tasks[id]
			if tk.status != hubapi.Pending {
				continue
			}
			sealed, err := h.cipher.Seal(tk.payload, envelope.TaskContext(tk.taskType))
			if err != nil {
				h.t.Errorf("seal: %v", err)
			}
			tk.status = hubapi.InProgress
			out = append(out, hubapi.Task{ID: id, TaskType: hubapi.TaskType(tk.taskType), Payload: sealed})
		}
		tasksJSON, _ := json.Marshal(out)
		if out == nil {
			tasksJSON = []byte("[]")
		}
		_, _ = io.WriteString(w, `{`+h.identity()+`,"tasks":`+string(tasksJSON)+`}`)
	case r.Method == http.MethodPost && strings.HasPrefix(r.URL.Path, "/api/tasks/") && strings.HasSuffix(r.URL.Path, "/result"):
		id := strings.TrimSuffix(strings.TrimPrefix(r.URL.Path, "/api/tasks/"), "/result")
		tk, ok := h.tasks[id]
		if !ok {
			w.WriteHeader(404)
			return
		}
		if tk.status != hubapi.InProgress {
			w.WriteHeader(409)
			return
		}
		var res hubapi.TaskResult
		if err := json.Unmarshal(body, &res); err != nil {
			w.WriteHeader(422)
			return
		}
		tk.results = append(tk.results, res)
		tk.status = hubapi.Completed
		if !res.Success {
			tk.status = hubapi.Failed
		}
		_, _ = io.WriteString(w, `{`+h.identity()+`,"message":"Task result recorded"}`)
	case r.Method == http.MethodPost && r.URL.Path == "/api/cohort/results":
		h.cohort = append(h.cohort, json.RawMessage(body))
		_, _ = io.WriteString(w, `{"message":"Cohort results processed successfully"}`)
	default:
		w.WriteHeader(404)
	}
}

// service is an internal-service stand-in that authenticates with the real
// mesh verifier, counts requests per "METHOD path" and can block.
type service struct {
	srv   *httptest.Server
	mu    sync.Mutex
	count map[string]int
	block chan struct{} // when non-nil, requests wait on it
	reply func(w http.ResponseWriter, r *http.Request)
}

func newService(t *testing.T, audience string) *service {
	s := &service{count: map[string]int{}}
	v := mesh.NewVerifier(audience, internalKey, "", slog.New(slog.DiscardHandler))
	s.srv = httptest.NewServer(v.Require("trust-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		s.mu.Lock()
		s.count[r.Method+" "+r.URL.Path]++
		block, reply := s.block, s.reply
		s.mu.Unlock()
		if block != nil {
			select {
			case <-block:
			case <-r.Context().Done():
				return
			}
		}
		w.Header().Set("Content-Type", "application/json")
		if reply != nil {
			reply(w, r)
			return
		}
		if r.URL.Path == "/cohort" {
			_, _ = io.WriteString(w, `{"query_id":"q","trust_id":"`+testTrust+`","created":"2025-01-01","record_count":12,"data":[{"name":"Sex","results":[{"value":8532,"count":12}]}],"suppressed":false,"error":null}`)
			return
		}
		_, _ = io.WriteString(w, `{"ok":true}`)
	})))
	t.Cleanup(s.srv.Close)
	return s
}

func (s *service) hits(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count[key]
}

func (s *service) setBlock(ch chan struct{}) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.block = ch
}

// syncBuffer collects log output from many goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// node is one trust-api task engine over a journal file.
type node struct {
	t       *testing.T
	j       *journal.Journal
	client  *hub.Client
	runner  *Runner
	cancel  context.CancelFunc
	done    chan error
	logs    *syncBuffer
	hubURL  string
	metrics *Metrics
}

type nodeOpts struct {
	poll, heartbeat time.Duration
	workers         int
	expected        string
	onHubState      func(bool, string)
}

func startNode(t *testing.T, path string, h *standinHub, data, imaging *service, o nodeOpts) *node {
	t.Helper()
	if o.poll == 0 {
		o.poll = 20 * time.Millisecond
	}
	j, err := journal.Open(path, journal.Options{LockTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	logs := &syncBuffer{}
	logger := slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	cipher, _ := envelope.NewFromBase64(aesKey)
	client := hub.New(hub.Options{BaseURL: h.srv.URL + "/api", Key: hubKey, KeyHeader: "Authorization", ExpectedTrustID: o.expected, OwnFingerprint: cipher.Fingerprint(), Timeout: 2 * time.Second}, logger)
	exec := tasks.NewExecutor(tasks.Config{DataAccessURL: data.srv.URL, ImagingURL: imaging.srv.URL, CohortAdminProof: envelope.CohortAdminProof(aesKey)},
		cipher, tasks.MeshAuthorizer{Signer: mesh.NewSigner("trust-api", internalKey), Mode: mesh.ModeJWT}, &http.Client{}, logger)
	metrics, err := NewMetrics(prometheus.NewRegistry(), j)
	if err != nil {
		t.Fatal(err)
	}
	d := delivery.New(j, client, delivery.Options{BackoffMin: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Retries: metrics.DeliveryRetries}, logger)
	r := New(j, client, exec, d, Options{PollInterval: o.poll, HeartbeatInterval: o.heartbeat, Workers: o.workers, OnHubState: o.onHubState, Metrics: metrics}, logger)
	ctx, cancel := context.WithCancel(context.Background())
	n := &node{t: t, j: j, client: client, runner: r, cancel: cancel, done: make(chan error, 1), logs: logs, hubURL: h.srv.URL, metrics: metrics}
	dctx, dcancel := context.WithCancel(context.Background())
	ddone := make(chan struct{})
	go func() { defer close(ddone); _ = d.Run(dctx) }()
	go func() {
		err := r.Run(ctx)
		dcancel()
		<-ddone
		n.done <- err
	}()
	t.Cleanup(func() { n.stop() })
	return n
}

// stop ends the node like a crash would leave it (running tasks stay
// running) and closes its journal; it returns Run's error.
func (n *node) stop() error {
	if n.cancel == nil {
		return nil
	}
	n.cancel()
	n.cancel = nil
	err := <-n.done
	_ = n.j.Close()
	return err
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func journalPath(t *testing.T) string { return filepath.Join(t.TempDir(), "journal.db") }
