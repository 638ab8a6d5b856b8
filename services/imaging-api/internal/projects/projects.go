// Package projects records the imaging projects a trust holds for the
// native (Orthanc) backend: one per central hub project, created once —
// provisioning the same hub project again returns the same record — and
// kept durably in bbolt with its cohort query and users.
package projects

import (
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"
)

var (
	bucketByID  = []byte("projects")
	bucketByHub = []byte("by_hub_project")
	bucketUsers = []byte("users")
)

// Errors.
var (
	ErrNotFound = errors.New("project not found")
	ErrExists   = errors.New("project already exists")
)

// User is a hub user of a project.
type User struct {
	ID         string `json:"id"`
	Email      string `json:"email"`
	IsDisabled bool   `json:"is_disabled"`
}

// Project is one imaging project.
type Project struct {
	// ID is the imaging project id (a UUID), distinct from the hub's id.
	ID string `json:"ID"`
	// HubProjectID is the central hub's project id (XNAT's secondary_ID).
	HubProjectID string    `json:"secondary_ID"`
	Name         string    `json:"name"`
	Description  string    `json:"description"`
	Query        string    `json:"query,omitempty"`
	Users        []User    `json:"users,omitempty"`
	DicomToNifti bool      `json:"dicom_to_nifti"`
	CreatedAt    time.Time `json:"created_at"`
	// CohortPending marks a project whose cohort has not been queued for
	// import yet; it is cleared by CohortQueued.
	CohortPending bool `json:"cohort_pending,omitempty"`
}

// Store is the durable project registry.
type Store struct{ db *bolt.DB }

// Open opens (or creates) the registry at path.
func Open(path string) (*Store, error) {
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("open project registry: %w", err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketByID, bucketByHub, bucketUsers} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &Store{db: db}, nil
}

// Close closes the registry.
func (s *Store) Close() error { return s.db.Close() }

// Provision returns the project of hub project hubID, creating it from p
// (with a fresh ID) the first time. created reports whether it was new.
func (s *Store) Provision(hubID string, p Project) (out Project, created bool, err error) {
	err = s.db.Update(func(tx *bolt.Tx) error {
		if id := tx.Bucket(bucketByHub).Get([]byte(hubID)); id != nil {
			return json.Unmarshal(tx.Bucket(bucketByID).Get(id), &out)
		}
		p.ID, p.HubProjectID = uuid.NewString(), hubID
		if p.CreatedAt.IsZero() {
			p.CreatedAt = time.Now().UTC()
		}
		if err := put(tx, p); err != nil {
			return err
		}
		out, created = p, true
		return nil
	})
	return out, created, err
}

// CohortQueued records that the cohort of project id is queued for import
// (clears CohortPending); ErrNotFound if the project is absent.
func (s *Store) CohortQueued(id string) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketByID).Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		var p Project
		if err := json.Unmarshal(b, &p); err != nil {
			return err
		}
		if !p.CohortPending {
			return nil
		}
		p.CohortPending = false
		return put(tx, p)
	})
}

// Create adds a bare project with the given id; ErrExists if the id or its
// secondary id is taken.
func (s *Store) Create(p Project) (Project, error) {
	err := s.db.Update(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketByID).Get([]byte(p.ID)) != nil {
			return ErrExists
		}
		if p.HubProjectID != "" && tx.Bucket(bucketByHub).Get([]byte(p.HubProjectID)) != nil {
			return ErrExists
		}
		if p.CreatedAt.IsZero() {
			p.CreatedAt = time.Now().UTC()
		}
		return put(tx, p)
	})
	return p, err
}

func put(tx *bolt.Tx, p Project) error {
	b, err := json.Marshal(p)
	if err != nil {
		return err
	}
	if err := tx.Bucket(bucketByID).Put([]byte(p.ID), b); err != nil {
		return err
	}
	if p.HubProjectID != "" {
		return tx.Bucket(bucketByHub).Put([]byte(p.HubProjectID), []byte(p.ID))
	}
	return nil
}

// Get returns the project with imaging id id.
func (s *Store) Get(id string) (Project, error) {
	var p Project
	err := s.db.View(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketByID).Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		return json.Unmarshal(b, &p)
	})
	return p, err
}

// ByHub returns the project of hub project hubID.
func (s *Store) ByHub(hubID string) (Project, error) {
	var id []byte
	_ = s.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketByHub).Get([]byte(strings.ToLower(hubID))); v != nil {
			id = append([]byte(nil), v...)
		} else if v := tx.Bucket(bucketByHub).Get([]byte(hubID)); v != nil {
			id = append([]byte(nil), v...)
		}
		return nil
	})
	if id == nil {
		return Project{}, ErrNotFound
	}
	return s.Get(string(id))
}

// List returns every project, oldest first.
func (s *Store) List() ([]Project, error) {
	var out []Project
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketByID).ForEach(func(_, v []byte) error {
			var p Project
			if err := json.Unmarshal(v, &p); err != nil {
				return err
			}
			out = append(out, p)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].CreatedAt.Before(out[j].CreatedAt) })
	return out, err
}

// Delete removes a project; ErrNotFound if absent.
func (s *Store) Delete(id string) (Project, error) {
	var p Project
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketByID).Get([]byte(id))
		if b == nil {
			return ErrNotFound
		}
		if err := json.Unmarshal(b, &p); err != nil {
			return err
		}
		if p.HubProjectID != "" {
			if err := tx.Bucket(bucketByHub).Delete([]byte(p.HubProjectID)); err != nil {
				return err
			}
		}
		return tx.Bucket(bucketByID).Delete([]byte(id))
	})
	return p, err
}

// Account is a hub user this node has been told about (the native backend
// keeps no accounts of its own).
type Account struct {
	Email        string    `json:"email"`
	Enabled      bool      `json:"enabled"`
	ID           int       `json:"id"`
	FirstSeen    time.Time `json:"first_seen"`
	LastModified time.Time `json:"last_modified"`
}

// RecordUser records a user's enabled flag, keyed by the email without
// regard to case, and returns the record.
func (s *Store) RecordUser(email string, enabled bool) (Account, error) {
	var a Account
	key := []byte(strings.ToLower(email))
	err := s.db.Update(func(tx *bolt.Tx) error {
		b := tx.Bucket(bucketUsers)
		now := time.Now().UTC()
		if v := b.Get(key); v != nil {
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
		} else {
			seq, err := b.NextSequence()
			if err != nil {
				return err
			}
			a = Account{Email: email, ID: int(seq), FirstSeen: now}
		}
		a.Enabled, a.LastModified = enabled, now
		v, err := json.Marshal(a)
		if err != nil {
			return err
		}
		return b.Put(key, v)
	})
	return a, err
}

// Users returns every recorded user, in order of first appearance.
func (s *Store) Users() ([]Account, error) {
	var out []Account
	err := s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketUsers).ForEach(func(_, v []byte) error {
			var a Account
			if err := json.Unmarshal(v, &a); err != nil {
				return err
			}
			out = append(out, a)
			return nil
		})
	})
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, err
}
