// Package store persists the development hub's state in one bbolt file:
// registered trusts (with only the SHA-256 of their API keys), the trust task
// queue with the FLIP trust_task fields plus delivery evidence, and the cohort
// results trusts post back.
//
// Every mutating method runs in a single bbolt write transaction, so a claim of
// up to fifty tasks or a result is atomic and durable when the call returns.
// A Store is safe for concurrent use. Task creation, claims, results,
// heartbeats and cohort results made at the same time share one transaction
// and one commit (group commit); each call still returns only once its own
// change is durable.
package store

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/boltgroup"

	"github.com/flip-trust/node/shared/hubapi"
)

// Bucket names. The pending and in-progress buckets are indexes whose keys
// order tasks for dispatch and for the stale sweep; their values are empty.
var (
	bucketTrusts     = []byte("trusts")      // trust id -> Trust JSON
	bucketTrustNames = []byte("trust_names") // trust name -> trust id
	bucketTasks      = []byte("tasks")       // task id -> Task JSON
	bucketPending    = []byte("pending")     // trust id(16) | created(8) | seq(8) -> task id
	bucketInProgress = []byte("in_progress") // updated(8) | task id(16) -> nil
	bucketCohort     = []byte("cohort")      // query id | "/" | trust id -> CohortResult JSON
)

// Sentinel errors for domain conditions; compare with errors.Is.
var (
	ErrTrustNotFound = errors.New("trust not found")
	ErrTrustExists   = errors.New("trust name already registered")
	ErrTaskNotFound  = errors.New("task not found")
	ErrNotOwner      = errors.New("task belongs to another trust")
)

// StatusError reports a task whose state does not allow the operation; Status
// is the task's current state.
type StatusError struct {
	Status hubapi.Status
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("task is in state %s", e.Status)
}

// Trust is a registered trust. The API key itself is never stored.
type Trust struct {
	ID               string          `json:"id"`
	Name             string          `json:"name"`
	Code             string          `json:"code"`
	Region           string          `json:"region"`
	APIKeySHA256     string          `json:"api_key_sha256"`
	LastHeartbeat    *time.Time      `json:"last_heartbeat"`
	ServicesHealth   json.RawMessage `json:"services_health,omitempty"`
	ServicesHealthAt *time.Time      `json:"services_health_at"`
	CreatedAt        time.Time       `json:"created_at"`
}

// Task is one row of the hub's task queue. Payload is the plaintext JSON the
// hub seals at dispatch; SealedPayload, when set, is an envelope dispatched
// verbatim instead (a test hook for tampered or mis-bound payloads).
// DispatchedAt, CompletedAt, Dispatches, ResultPosts (accepted results) and
// RefusedPosts (results refused because the task was not IN_PROGRESS) are
// delivery evidence the FLIP hub does not keep.
type Task struct {
	ID                  string          `json:"id"`
	TrustID             string          `json:"trust_id"`
	TaskType            hubapi.TaskType `json:"task_type"`
	Payload             json.RawMessage `json:"payload"`
	SealedPayload       string          `json:"sealed_payload,omitempty"`
	QueryID             *string         `json:"query_id"`
	Status              hubapi.Status   `json:"status"`
	Result              *string         `json:"result"`
	NeedsPostProcessing bool            `json:"needs_post_processing"`
	RetryCount          int             `json:"retry_count"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           *time.Time      `json:"updated_at"`
	DispatchedAt        *time.Time      `json:"dispatched_at"`
	CompletedAt         *time.Time      `json:"completed_at"`
	Dispatches          int             `json:"dispatches"`
	ResultPosts         int             `json:"result_posts"`
	RefusedPosts        int             `json:"refused_posts"`
	Seq                 uint64          `json:"seq"`
}

// CohortData is the stored part of a trust's cohort result, as in FLIP's
// query_result.data column.
type CohortData struct {
	RecordCount int                 `json:"record_count"`
	Data        []hubapi.CohortStat `json:"data"`
	Error       *string             `json:"error"`
	Suppressed  bool                `json:"suppressed"`
}

// CohortResult is the latest result a trust posted for a query.
type CohortResult struct {
	QueryID       string     `json:"query_id"`
	TrustID       string     `json:"trust_id"`
	Created       string     `json:"created"`
	Data          CohortData `json:"data"`
	ReceivedCount int        `json:"received_count"`
	FirstReceived time.Time  `json:"first_received_at"`
	UpdatedAt     time.Time  `json:"updated_at"`
}

// Credential is what trust authentication needs: the key digest and the
// identity it unlocks.
type Credential struct {
	TrustID   string
	TrustName string
	KeyHash   [32]byte
}

// Store is the hub's persistent state.
type Store struct {
	db     *bolt.DB
	writes *boltgroup.Committer

	mu    sync.RWMutex
	creds []Credential // copy-on-write; never mutated after publication
}

// Open opens (creating if needed) the bbolt file at path. It fails rather than
// waits if another process holds the file.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 2 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	s := &Store{db: db, writes: boltgroup.New(db)}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketTrusts, bucketTrustNames, bucketTasks, bucketPending, bucketInProgress, bucketCohort} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return fmt.Errorf("bucket %s: %w", b, err)
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, err
	}
	if err := s.loadCredentials(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return s, nil
}

// Close releases the file.
func (s *Store) Close() error {
	if err := s.db.Close(); err != nil {
		return fmt.Errorf("close store: %w", err)
	}
	return nil
}

// Ping reports whether the store can serve a read transaction.
func (s *Store) Ping() error {
	return s.db.View(func(*bolt.Tx) error { return nil })
}

func (s *Store) loadCredentials() error {
	var creds []Credential
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTrusts).ForEach(func(_, v []byte) error {
			var tr Trust
			if err := json.Unmarshal(v, &tr); err != nil {
				return fmt.Errorf("decode trust: %w", err)
			}
			c, err := credentialOf(tr)
			if err != nil {
				return err
			}
			creds = append(creds, c)
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("load credentials: %w", err)
	}
	s.mu.Lock()
	s.creds = creds
	s.mu.Unlock()
	return nil
}

func credentialOf(tr Trust) (Credential, error) {
	c := Credential{TrustID: tr.ID, TrustName: tr.Name}
	raw, err := hexDecode32(tr.APIKeySHA256)
	if err != nil {
		return c, fmt.Errorf("trust %s key digest: %w", tr.ID, err)
	}
	c.KeyHash = raw
	return c, nil
}

// Credentials returns every trust's key digest. The slice is shared and must
// not be modified.
func (s *Store) Credentials() []Credential {
	s.mu.RLock()
	defer s.mu.RUnlock()
	return s.creds
}

// NewTrust describes a trust to register.
type NewTrust struct {
	Name    string
	Code    string
	Region  string
	KeyHash [32]byte
}

// CreateTrust registers a trust with a fresh id. Names are unique.
func (s *Store) CreateTrust(in NewTrust, now time.Time) (Trust, error) {
	tr := Trust{
		ID:           uuid.NewString(),
		Name:         in.Name,
		Code:         in.Code,
		Region:       in.Region,
		APIKeySHA256: hex.EncodeToString(in.KeyHash[:]),
		CreatedAt:    now.UTC(),
	}
	err := s.db.Update(func(tx *bolt.Tx) error {
		names := tx.Bucket(bucketTrustNames)
		if names.Get([]byte(in.Name)) != nil {
			return ErrTrustExists
		}
		if err := names.Put([]byte(in.Name), []byte(tr.ID)); err != nil {
			return err
		}
		return putJSON(tx.Bucket(bucketTrusts), []byte(tr.ID), tr)
	})
	if err != nil {
		return Trust{}, fmt.Errorf("create trust: %w", err)
	}
	s.mu.Lock()
	next := make([]Credential, len(s.creds), len(s.creds)+1)
	copy(next, s.creds)
	s.creds = append(next, Credential{TrustID: tr.ID, TrustName: tr.Name, KeyHash: in.KeyHash})
	s.mu.Unlock()
	return tr, nil
}

// Trust returns the trust with the given id.
func (s *Store) Trust(id string) (Trust, error) {
	var tr Trust
	err := s.db.View(func(tx *bolt.Tx) error {
		return getJSON(tx.Bucket(bucketTrusts), []byte(id), &tr, ErrTrustNotFound)
	})
	return tr, err
}

// TrustByName returns the trust with the given name.
func (s *Store) TrustByName(name string) (Trust, error) {
	var tr Trust
	err := s.db.View(func(tx *bolt.Tx) error {
		id := tx.Bucket(bucketTrustNames).Get([]byte(name))
		if id == nil {
			return ErrTrustNotFound
		}
		return getJSON(tx.Bucket(bucketTrusts), id, &tr, ErrTrustNotFound)
	})
	return tr, err
}

// Trusts returns every trust ordered by creation time.
func (s *Store) Trusts() ([]Trust, error) {
	var out []Trust
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketTrusts).ForEach(func(_, v []byte) error {
			var tr Trust
			if err := json.Unmarshal(v, &tr); err != nil {
				return fmt.Errorf("decode trust: %w", err)
			}
			out = append(out, tr)
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list trusts: %w", err)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, nil
}

// Heartbeat stamps the trust's last heartbeat. With a non-nil services
// snapshot it also replaces services_health and stamps services_health_at;
// a nil snapshot leaves both untouched.
func (s *Store) Heartbeat(trustID string, services json.RawMessage, now time.Time) (Trust, error) {
	var tr Trust
	now = now.UTC()
	err := s.writes.Do(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketTrusts)
		tr = Trust{}
		if err := getJSON(b, []byte(trustID), &tr, ErrTrustNotFound); err != nil {
			return err
		}
		tr.LastHeartbeat = &now
		if services != nil {
			tr.ServicesHealth = services
			tr.ServicesHealthAt = &now
		}
		return putJSON(b, []byte(trustID), tr)
	})
	if err != nil {
		return Trust{}, fmt.Errorf("heartbeat: %w", err)
	}
	return tr, nil
}

func putJSON(b *bolt.Bucket, key []byte, v any) error {
	raw, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode: %w", err)
	}
	return b.Put(key, raw)
}

func getJSON(b *bolt.Bucket, key []byte, v any, missing error) error {
	raw := b.Get(key)
	if raw == nil {
		return missing
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return nil
}

func hexDecode32(s string) ([32]byte, error) {
	var out [32]byte
	raw, err := hex.DecodeString(s)
	if err != nil {
		return out, fmt.Errorf("decode hex: %w", err)
	}
	if len(raw) != len(out) {
		return out, fmt.Errorf("want 32 bytes, got %d", len(raw))
	}
	copy(out[:], raw)
	return out, nil
}

// uuidBytes returns the 16 raw bytes of a canonical uuid string.
func uuidBytes(id string) ([]byte, error) {
	u, err := uuid.Parse(id)
	if err != nil {
		return nil, fmt.Errorf("id %q: %w", id, err)
	}
	return u[:], nil
}

func u64(v uint64) []byte {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], v)
	return b[:]
}

func timeKey(t time.Time) []byte {
	// Times before 1970 do not occur; clamp to keep the ordering monotone.
	n := t.UnixNano()
	if n < 0 {
		n = 0
	}
	return u64(uint64(n))
}

func concat(parts ...[]byte) []byte {
	return bytes.Join(parts, nil)
}
