// Package flserver is dev-hub's reference FL server (docs/fl-protocol.md):
// registered FL clients (only the SHA-256 of each secret is kept), training
// and evaluation jobs run in rounds, long-polled tasks, results, FedAvg
// weighted by sample count, and per-round metrics.
//
// All state lives in one bbolt file and survives a restart: an open round
// resumes with its deadline. A Server owns one goroutine, the round engine,
// which starts pending jobs, closes rounds when every client has answered or
// the deadline passes, aggregates, and opens the next round; Close stops it.
// A Server is safe for concurrent use.
package flserver

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"regexp"
	"sort"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/flproto"
)

// Defaults.
const (
	// DefaultRehandAfter is how long a handed-out task must go without a
	// heartbeat before the same client's next poll gets it again.
	DefaultRehandAfter = 30 * time.Second
	// DefaultRoundTimeout applies when a job names no round timeout.
	DefaultRoundTimeout = 10 * time.Minute
	// MaxRoundTimeout bounds a job's round timeout.
	MaxRoundTimeout = 7 * 24 * time.Hour
	// SecretBytes is the entropy of a client secret.
	SecretBytes = 32
	// lastSeenPersistEvery throttles writes of a client's last-seen time.
	lastSeenPersistEvery = 15 * time.Second
)

// Sentinel errors for domain conditions; compare with errors.Is.
var (
	ErrClosed         = errors.New("fl server closed")
	ErrClientExists   = errors.New("fl client already registered")
	ErrUnknownClient  = errors.New("unknown fl client")
	ErrTaskNotFound   = errors.New("task not found")
	ErrRoundClosed    = errors.New("the round already closed")
	ErrResultConflict = errors.New("a different result was already accepted for this task")
	ErrJobNotFound    = errors.New("job not found")
	ErrJobFinished    = errors.New("job already finished")
)

// ClientNamePattern is what a client (kit slot) name must match.
var ClientNamePattern = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,64}$`)

// Bucket names.
var (
	bucketClients = []byte("fl_clients") // name -> clientRecord JSON
	bucketJobs    = []byte("fl_jobs")    // job id -> Job JSON
)

// Artifacts is the content-addressed artifact store the server reads global
// models and updates from and writes aggregated models to. Implementations
// are safe for concurrent use; Open's file is the caller's to close.
type Artifacts interface {
	Put(ctx context.Context, r io.Reader) (flproto.Manifest, error)
	Open(id string) (*os.File, flproto.Manifest, error)
	Has(id string) bool
}

// Config tunes a Server; zero values take the defaults.
type Config struct {
	// RehandAfter is DefaultRehandAfter when zero.
	RehandAfter time.Duration
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Client is a registered FL client as the admin API shows it.
type Client struct {
	Name      string     `json:"name"`
	CreatedAt time.Time  `json:"created_at"`
	LastSeen  *time.Time `json:"last_seen"`
}

// Credential is what client authentication needs: a name and the SHA-256 of
// its secret.
type Credential struct {
	Name         string
	SecretSHA256 [32]byte
}

type clientRecord struct {
	Name         string     `json:"name"`
	SecretSHA256 string     `json:"secret_sha256"`
	CreatedAt    time.Time  `json:"created_at"`
	LastSeen     *time.Time `json:"last_seen"`

	persistedSeen time.Time
	hash          [32]byte
}

// taskRef locates a task inside its job.
type taskRef struct {
	job    string
	round  int // 1-based
	client int // index into Round.Clients
}

// Server is the FL server.
type Server struct {
	cfg    Config
	db     *bolt.DB
	arts   Artifacts
	logger *slog.Logger

	mu       sync.Mutex
	clients  map[string]*clientRecord
	jobs     map[string]*Job
	tasks    map[string]taskRef
	lastBeat map[string]time.Time     // task id -> last hand-out or heartbeat
	closing  map[string]bool          // job id -> its current round is being closed
	waiters  map[string]chan struct{} // client -> closed when a task may be due
	order    []string                 // job ids by creation

	kick   chan struct{}
	ctx    context.Context // cancelled by Close: stops the engine and long polls
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// Open opens (creating if needed) the FL state at path, loads it, and starts
// the round engine. Close stops the engine and releases the file.
func Open(path string, arts Artifacts, cfg Config, logger *slog.Logger) (*Server, error) {
	if cfg.RehandAfter <= 0 {
		cfg.RehandAfter = DefaultRehandAfter
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open fl state %s: %w", path, err)
	}
	s := &Server{
		cfg: cfg, db: db, arts: arts, logger: logger,
		clients: map[string]*clientRecord{}, jobs: map[string]*Job{}, tasks: map[string]taskRef{},
		lastBeat: map[string]time.Time{}, closing: map[string]bool{}, waiters: map[string]chan struct{}{},
		kick: make(chan struct{}, 1),
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if err := s.load(); err != nil {
		s.cancel()
		_ = db.Close()
		return nil, err
	}
	s.wg.Add(1)
	go s.engine()
	return s, nil
}

func (s *Server) load() error {
	now := s.cfg.Now()
	err := s.db.Update(func(tx *bolt.Tx) error {
		cb, err := tx.CreateBucketIfNotExists(bucketClients)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", bucketClients, err)
		}
		jb, err := tx.CreateBucketIfNotExists(bucketJobs)
		if err != nil {
			return fmt.Errorf("bucket %s: %w", bucketJobs, err)
		}
		if err := cb.ForEach(func(k, v []byte) error {
			c := &clientRecord{}
			if err := json.Unmarshal(v, c); err != nil {
				return fmt.Errorf("decode client %s: %w", k, err)
			}
			h, err := hex.DecodeString(c.SecretSHA256)
			if err != nil || len(h) != sha256.Size {
				return fmt.Errorf("client %s: bad secret digest", k)
			}
			copy(c.hash[:], h)
			if c.LastSeen != nil {
				c.persistedSeen = *c.LastSeen
			}
			s.clients[c.Name] = c
			return nil
		}); err != nil {
			return err
		}
		return jb.ForEach(func(k, v []byte) error {
			j := &Job{}
			if err := json.Unmarshal(v, j); err != nil {
				return fmt.Errorf("decode job %s: %w", k, err)
			}
			s.jobs[j.ID] = j
			s.order = append(s.order, j.ID)
			for ri, r := range j.Rounds {
				for ci, cr := range r.Clients {
					s.tasks[cr.Task] = taskRef{job: j.ID, round: ri + 1, client: ci}
					if cr.Status == StatusRunning {
						// A restart grants a fresh grace period: heartbeats are
						// kept in memory only.
						s.lastBeat[cr.Task] = now
					}
				}
			}
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load fl state: %w", err)
	}
	sort.SliceStable(s.order, func(i, j int) bool {
		return s.jobs[s.order[i]].CreatedAt.Before(s.jobs[s.order[j]].CreatedAt)
	})
	return nil
}

// Close stops the round engine, releases waiting long polls with ErrClosed,
// and closes the file.
func (s *Server) Close() error {
	s.cancel()
	s.wg.Wait()
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close fl state: %w", err)
	}
	return nil
}

// RegisterClient registers name and returns its fresh secret (32 random
// bytes, unpadded URL-safe base64), which is never stored: only its SHA-256.
func (s *Server) RegisterClient(name string) (string, error) {
	if !ClientNamePattern.MatchString(name) {
		return "", fmt.Errorf("client name %q must match %s", name, ClientNamePattern)
	}
	b := make([]byte, SecretBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mint secret: %w", err)
	}
	secret := base64.RawURLEncoding.EncodeToString(b)
	sum := sha256.Sum256([]byte(secret))
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.clients[name]; ok {
		return "", fmt.Errorf("%w: %s", ErrClientExists, name)
	}
	c := &clientRecord{Name: name, SecretSHA256: hex.EncodeToString(sum[:]), CreatedAt: s.cfg.Now().UTC(), hash: sum}
	if err := s.putClient(c); err != nil {
		return "", err
	}
	s.clients[name] = c
	return secret, nil
}

// Clients lists the registered clients by name.
func (s *Server) Clients() []Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Client, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, Client{Name: c.Name, CreatedAt: c.CreatedAt, LastSeen: c.LastSeen})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Credentials returns every client's name and secret digest, for an
// authenticator that compares against all of them.
func (s *Server) Credentials() []Credential {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Credential, 0, len(s.clients))
	for _, c := range s.clients {
		out = append(out, Credential{Name: c.Name, SecretSHA256: c.hash})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SecretSHA256 returns the SHA-256 of name's secret.
func (s *Server) SecretSHA256(name string) ([32]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[name]
	if !ok {
		return [32]byte{}, false
	}
	return c.hash, true
}

// putClient persists c; the caller holds s.mu.
func (s *Server) putClient(c *clientRecord) error {
	v, err := json.Marshal(c)
	if err != nil {
		return fmt.Errorf("encode client: %w", err)
	}
	if err := s.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketClients).Put([]byte(c.Name), v)
	}); err != nil {
		return fmt.Errorf("save client %s: %w", c.Name, err)
	}
	return nil
}

// seen records that client polled; the caller holds s.mu. The time is
// persisted at most every lastSeenPersistEvery.
func (s *Server) seen(c *clientRecord, now time.Time) {
	t := now.UTC()
	c.LastSeen = &t
	if now.Sub(c.persistedSeen) < lastSeenPersistEvery {
		return
	}
	if err := s.putClient(c); err != nil {
		s.logger.Warn("persist client last seen", "client", c.Name, "err", err)
		return
	}
	c.persistedSeen = now
}

// notify wakes client's waiting long polls; the caller holds s.mu.
func (s *Server) notify(client string) {
	if ch, ok := s.waiters[client]; ok {
		close(ch)
		delete(s.waiters, client)
	}
}

// waiter returns the channel closed at client's next notification; the
// caller holds s.mu.
func (s *Server) waiter(client string) chan struct{} {
	ch, ok := s.waiters[client]
	if !ok {
		ch = make(chan struct{})
		s.waiters[client] = ch
	}
	return ch
}

// wake asks the round engine to look at the jobs again.
func (s *Server) wake() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}
