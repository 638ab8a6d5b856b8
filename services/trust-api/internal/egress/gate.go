// Package egress is trust-api's egress gate (the airlock): every body that
// leaves the node, task results and cohort results posted by delivery and
// the FL submissions fl-client announces over the mesh, is submitted here
// first. Per channel the site releases it, holds it for a local reviewer, or
// refuses it (Policy). A released item is written to the audit ledger before
// the caller may send it, exactly once per item, even across restarts.
//
// Items live in a bbolt file. An item moves through these states, each
// change committed before the next step is taken:
//
//	(new) ─▶ held ─▶ approved ─▶ released      (ledgered; the bytes may leave)
//	  │        ├──▶ rejected                   (by a reviewer, with a reason)
//	  │        └──▶ expired                    (nobody decided within the expiry)
//	  ├────────────▶ approved ─▶ released      (mode release)
//	  └──▶ refused                             (mode refuse)
//
// approved is transient: it is written before the ledger append, released
// after it. Open finishes every approved item: an item whose ledger entry
// was written (the ledger carries the item id) is marked released with that
// entry's seq, any other is appended then. So a kill between any two steps
// neither loses an item nor lets one leave unledgered or ledgered twice.
//
// A Gate is safe for concurrent use; state changes are serialized.
package egress

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"
	bolt "go.etcd.io/bbolt"

	"github.com/flip-trust/node/shared/ledger"
)

// State is where an item stands.
type State string

// Item states.
const (
	Held     State = "held"
	Approved State = "approved"
	Released State = "released"
	Rejected State = "rejected"
	Expired  State = "expired"
	Refused  State = "refused"
)

// Reasons given for items that do not leave.
const (
	ReasonRefused = "refused by site egress policy"
	ReasonExpired = "expired without review"
)

// MaxContent bounds the bytes an item may carry for review (16 MiB).
const MaxContent = 16 << 20

// Errors for the domain conditions; compare with errors.Is.
var (
	ErrNotFound  = errors.New("egress item not found")
	ErrDecided   = errors.New("egress item is not held")
	ErrNoContent = errors.New("egress item carries no content")
	ErrInvalid   = errors.New("invalid egress item")
)

// Item is one egress item.
type Item struct {
	ID      string   `json:"id"`
	Channel Channel  `json:"channel"`
	TaskID  string   `json:"task_id"`
	Project string   `json:"project"`
	Kind    string   `json:"kind"`
	Size    int64    `json:"size"`
	SHA256  string   `json:"sha256"`
	Rules   []string `json:"rules"`
	// HasContent is set when the exact bytes are stored for review.
	HasContent bool  `json:"has_content"`
	State      State `json:"state"`
	// Reason explains a rejected, expired or refused item.
	Reason string `json:"reason,omitempty"`
	// Reviewer and Note record the decision on a held item.
	Reviewer string `json:"reviewer,omitempty"`
	Note     string `json:"note,omitempty"`
	// Seq is the ledger entry of a released item.
	Seq       uint64     `json:"seq,omitempty"`
	CreatedAt time.Time  `json:"created_at"`
	ExpiresAt *time.Time `json:"expires_at,omitempty"`
	DecidedAt *time.Time `json:"decided_at,omitempty"`
	// Notice marks the node's own failure notice for an item that did not
	// leave: it is released whatever the channel's mode, and ledgered.
	Notice bool `json:"notice,omitempty"`
}

// Leaves reports whether the item's bytes may be sent.
func (i Item) Leaves() bool { return i.State == Released }

// Final reports whether the item will never leave.
func (i Item) Final() bool {
	return i.State == Rejected || i.State == Expired || i.State == Refused
}

// Request submits an item. Content carries the exact bytes (required for
// channels held for review unless the item is larger than MaxContent, when
// Size and SHA256 describe it). The same channel, task, kind and SHA-256
// submitted again is the same item.
type Request struct {
	Channel Channel
	TaskID  string
	Project string
	Kind    string
	Content []byte
	Size    int64
	SHA256  string
	Rules   []string
	Notice  bool
}

// Options tune a Gate.
type Options struct {
	Policy Policy
	// Expiry is how long an item stays held (72 h).
	Expiry time.Duration
	// OnDecision is called, outside the gate's lock, after a held item was
	// approved, rejected or expired. May be nil.
	OnDecision func(Item)
	// LockTimeout bounds the wait for the file lock (5 s).
	LockTimeout time.Duration
	Now         func() time.Time
	NewID       func() string
}

// Buckets: items by id; keys maps the dedupe key to the id; content holds
// the reviewable bytes by id; meta holds the highest ledger seq recorded.
var (
	bucketItems   = []byte("items")
	bucketKeys    = []byte("keys")
	bucketContent = []byte("content")
	bucketMeta    = []byte("meta")
	keyLedgerSeq  = []byte("ledger_seq")
)

// Gate is the airlock.
type Gate struct {
	db   *bolt.DB
	led  *ledger.Ledger
	opts Options
	mu   sync.Mutex
	// failpoint, set by tests, stops a release after a named step
	// ("stored", "ledgered") as a kill of the process would.
	failpoint func(step string) error
}

func (g *Gate) fail(step string) error {
	if g.failpoint == nil {
		return nil
	}
	return g.failpoint(step)
}

// Open opens (creating) the gate's file at path, writing to led, and
// finishes any release a crash interrupted.
func Open(path string, led *ledger.Ledger, opts Options) (*Gate, error) {
	if opts.Expiry <= 0 {
		opts.Expiry = 72 * time.Hour
	}
	if opts.LockTimeout <= 0 {
		opts.LockTimeout = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NewID == nil {
		opts.NewID = func() string { return uuid.NewString() }
	}
	db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: opts.LockTimeout})
	if err != nil {
		return nil, fmt.Errorf("open egress store %s: %w", path, err)
	}
	if err := db.Update(func(tx *bolt.Tx) error {
		for _, b := range [][]byte{bucketItems, bucketKeys, bucketContent, bucketMeta} {
			if _, err := tx.CreateBucketIfNotExists(b); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("init egress store: %w", err)
	}
	g := &Gate{db: db, led: led, opts: opts}
	if err := g.recover(); err != nil {
		_ = db.Close()
		return nil, err
	}
	return g, nil
}

// Close closes the store (not the ledger).
func (g *Gate) Close() error { return g.db.Close() }

// Policy is the gate's policy.
func (g *Gate) Policy() Policy { return g.opts.Policy }

// recover finishes approved items (see the package comment).
func (g *Gate) recover() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var high uint64
	pending := map[string]bool{}
	if err := g.db.View(func(tx *bolt.Tx) error {
		if v := tx.Bucket(bucketMeta).Get(keyLedgerSeq); len(v) == 8 {
			high = binary.BigEndian.Uint64(v)
		}
		return tx.Bucket(bucketItems).ForEach(func(k, v []byte) error {
			var it Item
			if err := json.Unmarshal(v, &it); err != nil {
				return err
			}
			if it.State == Approved {
				pending[it.ID] = true
			}
			return nil
		})
	}); err != nil {
		return fmt.Errorf("read egress store: %w", err)
	}
	if len(pending) == 0 && g.led.Last().Seq <= high {
		return nil
	}
	ledgered := map[string]uint64{}
	if err := ledger.Walk(g.led.Dir(), func(e ledger.Entry) error {
		if e.Seq > high && e.Item != "" && pending[e.Item] {
			ledgered[e.Item] = e.Seq
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read audit ledger: %w", err)
	}
	for id := range pending {
		it, err := g.get(id)
		if err != nil {
			return err
		}
		if seq, ok := ledgered[id]; ok {
			if _, err := g.markReleased(it, seq); err != nil {
				return err
			}
			continue
		}
		if _, err := g.release(it); err != nil {
			return err
		}
	}
	return nil
}

// Submit passes r through the gate and returns its item: released (send
// it now), held (ask again later, or wait for OnDecision), or refused. A
// request seen before returns the existing item unchanged.
func (g *Gate) Submit(r Request) (Item, error) {
	if err := r.normalise(); err != nil {
		return Item{}, err
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	key := r.key()
	var existing string
	if err := g.db.View(func(tx *bolt.Tx) error {
		existing = string(tx.Bucket(bucketKeys).Get(key))
		return nil
	}); err != nil {
		return Item{}, fmt.Errorf("read egress store: %w", err)
	}
	if existing != "" {
		it, err := g.get(existing)
		if err != nil {
			return Item{}, err
		}
		if it.State == Held && !g.opts.Now().Before(*it.ExpiresAt) {
			return g.expire(it)
		}
		return it, nil
	}
	now := g.opts.Now().UTC()
	it := Item{
		ID: g.opts.NewID(), Channel: r.Channel, TaskID: r.TaskID, Project: r.Project, Kind: r.Kind,
		Size: r.Size, SHA256: r.SHA256, Rules: r.Rules, CreatedAt: now, Notice: r.Notice,
	}
	mode := g.opts.Policy.Mode(r.Channel)
	if r.Notice {
		mode = Release
	}
	var content []byte
	switch mode {
	case Refuse:
		it.State, it.Reason, it.DecidedAt = Refused, ReasonRefused, &now
	case Hold:
		exp := now.Add(g.opts.Expiry)
		it.State, it.ExpiresAt = Held, &exp
		if r.Content != nil {
			it.HasContent, content = true, r.Content
		}
	default:
		it.State = Approved
	}
	if err := g.db.Update(func(tx *bolt.Tx) error {
		if err := tx.Bucket(bucketKeys).Put(key, []byte(it.ID)); err != nil {
			return err
		}
		if content != nil {
			if err := tx.Bucket(bucketContent).Put([]byte(it.ID), content); err != nil {
				return err
			}
		}
		return putItem(tx, it)
	}); err != nil {
		return Item{}, fmt.Errorf("store egress item: %w", err)
	}
	if it.State == Approved {
		return g.release(it)
	}
	return it, nil
}

// release ledgers an approved item and marks it released.
func (g *Gate) release(it Item) (Item, error) {
	if err := g.fail("stored"); err != nil {
		return Item{}, err
	}
	approvedBy := it.Reviewer
	rules := slices.Clone(it.Rules)
	if it.Notice {
		rules = append(rules, "egress_notice")
	}
	e, err := g.led.Append(ledger.Record{
		Channel: string(it.Channel), TaskID: it.TaskID, Project: it.Project, Kind: it.Kind, Item: it.ID,
		Size: it.Size, SHA256: it.SHA256, Rules: rules, ApprovedBy: approvedBy,
	})
	if err != nil {
		return Item{}, fmt.Errorf("ledger egress item %s: %w", it.ID, err)
	}
	if err := g.fail("ledgered"); err != nil {
		return Item{}, err
	}
	return g.markReleased(it, e.Seq)
}

func (g *Gate) markReleased(it Item, seq uint64) (Item, error) {
	it.State, it.Seq = Released, seq
	if err := g.db.Update(func(tx *bolt.Tx) error {
		meta := tx.Bucket(bucketMeta)
		if v := meta.Get(keyLedgerSeq); len(v) != 8 || binary.BigEndian.Uint64(v) < seq {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], seq)
			if err := meta.Put(keyLedgerSeq, b[:]); err != nil {
				return err
			}
		}
		return putItem(tx, it)
	}); err != nil {
		return Item{}, fmt.Errorf("mark egress item %s released: %w", it.ID, err)
	}
	return it, nil
}

// Approve releases a held item on a reviewer's word: it is ledgered with
// the reviewer as approved_by. An item past its expiry is expired instead
// (ErrDecided).
func (g *Gate) Approve(id, reviewer, note string) (Item, error) {
	if reviewer == "" {
		return Item{}, fmt.Errorf("%w: reviewer is required", ErrInvalid)
	}
	it, err := g.decide(id, func(it *Item, now time.Time) {
		it.State, it.Reviewer, it.Note = Approved, reviewer, note
	})
	if err != nil {
		return it, err
	}
	g.mu.Lock()
	it, err = g.release(it)
	g.mu.Unlock()
	if err != nil {
		return Item{}, err
	}
	g.notify(it)
	return it, nil
}

// Reject refuses a held item for good, with the reviewer's reason.
func (g *Gate) Reject(id, reviewer, reason string) (Item, error) {
	if reviewer == "" || reason == "" {
		return Item{}, fmt.Errorf("%w: reviewer and reason are required", ErrInvalid)
	}
	it, err := g.decide(id, func(it *Item, now time.Time) {
		it.State, it.Reviewer, it.Reason = Rejected, reviewer, reason
	})
	if err != nil {
		return it, err
	}
	g.notify(it)
	return it, nil
}

// decide applies fn to a held item in one commit. An expired item is marked
// expired and ErrDecided returned.
func (g *Gate) decide(id string, fn func(*Item, time.Time)) (Item, error) {
	var expired bool
	it, err := func() (Item, error) {
		g.mu.Lock()
		defer g.mu.Unlock()
		it, err := g.get(id)
		if err != nil {
			return Item{}, err
		}
		if it.State != Held {
			return it, fmt.Errorf("%w: it is %s", ErrDecided, it.State)
		}
		now := g.opts.Now().UTC()
		if !now.Before(*it.ExpiresAt) {
			if it, err = g.expire(it); err != nil {
				return Item{}, err
			}
			expired = true
			return it, fmt.Errorf("%w: it expired at %s", ErrDecided, it.ExpiresAt.Format(time.RFC3339))
		}
		fn(&it, now)
		it.DecidedAt = &now
		if err := g.db.Update(func(tx *bolt.Tx) error { return putItem(tx, it) }); err != nil {
			return Item{}, fmt.Errorf("decide egress item %s: %w", id, err)
		}
		return it, nil
	}()
	if expired {
		g.notify(it)
	}
	return it, err
}

// expire marks a held item expired; the caller holds mu.
func (g *Gate) expire(it Item) (Item, error) {
	now := g.opts.Now().UTC()
	it.State, it.Reason, it.DecidedAt = Expired, ReasonExpired, &now
	if err := g.db.Update(func(tx *bolt.Tx) error { return putItem(tx, it) }); err != nil {
		return Item{}, fmt.Errorf("expire egress item %s: %w", it.ID, err)
	}
	return it, nil
}

// ExpireDue expires every held item past its expiry and returns them.
func (g *Gate) ExpireDue() ([]Item, error) {
	held, err := g.List(Held)
	if err != nil {
		return nil, err
	}
	now := g.opts.Now()
	var out []Item
	for _, it := range held {
		if now.Before(*it.ExpiresAt) {
			continue
		}
		g.mu.Lock()
		cur, err := g.get(it.ID)
		if err == nil && cur.State == Held {
			cur, err = g.expire(cur)
			if err == nil {
				out = append(out, cur)
			}
		}
		g.mu.Unlock()
		if err != nil {
			return out, err
		}
	}
	for _, it := range out {
		g.notify(it)
	}
	return out, nil
}

// Run expires held items on time until ctx ends; it returns nil then.
func (g *Gate) Run(ctx context.Context, onError func(error)) error {
	every := min(max(g.opts.Expiry/4, 100*time.Millisecond), 30*time.Second)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := g.ExpireDue(); err != nil && onError != nil {
			onError(err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (g *Gate) notify(it Item) {
	if g.opts.OnDecision != nil {
		g.opts.OnDecision(it)
	}
}

// Get returns the item id.
func (g *Gate) Get(id string) (Item, error) { return g.get(id) }

func (g *Gate) get(id string) (Item, error) {
	var it Item
	err := g.db.View(func(tx *bolt.Tx) error {
		raw := tx.Bucket(bucketItems).Get([]byte(id))
		if raw == nil {
			return ErrNotFound
		}
		return json.Unmarshal(raw, &it)
	})
	if err != nil {
		return Item{}, fmt.Errorf("get egress item %s: %w", id, err)
	}
	return it, nil
}

// Content returns the exact bytes of an item held with its content.
func (g *Gate) Content(id string) ([]byte, error) {
	var out []byte
	err := g.db.View(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketItems).Get([]byte(id)) == nil {
			return ErrNotFound
		}
		v := tx.Bucket(bucketContent).Get([]byte(id))
		if v == nil {
			return ErrNoContent
		}
		out = slices.Clone(v)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("egress item %s content: %w", id, err)
	}
	return out, nil
}

// List returns the items in any of states (all when none), oldest first.
func (g *Gate) List(states ...State) ([]Item, error) {
	var out []Item
	err := g.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketItems).ForEach(func(_, v []byte) error {
			var it Item
			if err := json.Unmarshal(v, &it); err != nil {
				return err
			}
			if len(states) == 0 || slices.Contains(states, it.State) {
				out = append(out, it)
			}
			return nil
		})
	})
	if err != nil {
		return nil, fmt.Errorf("list egress items: %w", err)
	}
	slices.SortStableFunc(out, func(a, b Item) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

func putItem(tx *bolt.Tx, it Item) error {
	raw, err := json.Marshal(it)
	if err != nil {
		return err
	}
	return tx.Bucket(bucketItems).Put([]byte(it.ID), raw)
}

func (r *Request) normalise() error {
	if !slices.Contains(Channels, r.Channel) {
		return fmt.Errorf("%w: channel %q is not one of %s", ErrInvalid, r.Channel, channelList())
	}
	if r.Kind == "" {
		r.Kind = string(r.Channel)
	}
	if r.Rules == nil {
		r.Rules = []string{}
	}
	if r.Content != nil {
		if len(r.Content) > MaxContent {
			return fmt.Errorf("%w: content is larger than %d bytes; send size and sha256 only", ErrInvalid, MaxContent)
		}
		size, sum := ledger.Digest(r.Content)
		if (r.Size != 0 && r.Size != size) || (r.SHA256 != "" && r.SHA256 != sum) {
			return fmt.Errorf("%w: size or sha256 does not match the content", ErrInvalid)
		}
		r.Size, r.SHA256 = size, sum
		return nil
	}
	if b, err := hex.DecodeString(r.SHA256); err != nil || len(b) != sha256.Size || r.Size < 0 {
		return fmt.Errorf("%w: without content, size and a hex sha256 are required", ErrInvalid)
	}
	return nil
}

// key identifies a request: the same bytes for the same task, channel and
// kind are one item.
func (r *Request) key() []byte {
	return fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s", r.Channel, r.TaskID, r.Kind, r.SHA256)
}
