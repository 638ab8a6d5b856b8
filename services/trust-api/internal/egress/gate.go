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
//	  ├──────────────────────────▶ released    (mode release)
//	  └──▶ refused                             (mode refuse)
//
// approved is transient: it is written before the ledger append, released
// after it. An item of a channel in mode release is ledgered first and then
// stored once, as released, with its dedupe key. Open finishes both: an
// approved item whose ledger entry was written (the ledger carries the item
// id) is marked released with that entry's seq, any other is appended then;
// a ledger entry whose item the store does not know is stored as released
// from the entry (channel, task, kind and SHA-256, the dedupe key, are all
// in it). The store keeps a high-water mark below which every item entry is
// known to the store, so Open reads only the ledger's tail. So a kill
// between any two steps neither loses an item nor lets one leave
// unledgered or ledgered twice.
//
// A Gate is safe for concurrent use. Submissions of the same item (channel,
// task, kind, SHA-256) are serialized; different items go through at the
// same time and share ledger fsyncs and store commits. Decisions on held
// items are serialized among themselves.
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

	"github.com/flip-trust/node/shared/boltgroup"
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
	db     *bolt.DB
	writes *boltgroup.Committer
	led    *ledger.Ledger
	opts   Options
	// mu serializes decisions on held items (approve, reject, expire).
	mu sync.Mutex
	// keys serializes submissions of the same item.
	keys keyLocks
	// marks tracks ledger entries not yet in the store.
	marks watermark
	// stranded holds, by dedupe key, new items that were ledgered but
	// whose store commit failed: a retry stores them, never appends again.
	strandedMu sync.Mutex
	stranded   map[string]strandedItem
	// failpoint, set by tests, stops a release after a named step
	// ("stored", "ledgered") as a kill of the process would, or fails the
	// store commit of a released item ("commit").
	failpoint func(step string, it Item) error
}

type strandedItem struct {
	it  Item
	tok uint64
}

func (g *Gate) fail(step string, it Item) error {
	if g.failpoint == nil {
		return nil
	}
	return g.failpoint(step, it)
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
	g := &Gate{db: db, writes: boltgroup.New(db), led: led, opts: opts, stranded: map[string]strandedItem{}}
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

// recover finishes approved items and stores released items whose
// ledger entry was written but not their store record (see the package
// comment). It raises the high-water mark only once everything is stored,
// so a kill during recovery is recovered the same way.
func (g *Gate) recover() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	var high uint64
	pending := map[string]bool{}
	if err := g.db.View(func(tx *bolt.Tx) error {
		high = readMark(tx)
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
	var unknown []ledger.Entry
	if err := ledger.Walk(g.led.Dir(), func(e ledger.Entry) error {
		if e.Seq <= high || e.Item == "" {
			return nil
		}
		if pending[e.Item] {
			ledgered[e.Item] = e.Seq
			return nil
		}
		if _, err := g.get(e.Item); errors.Is(err, ErrNotFound) {
			unknown = append(unknown, e)
		} else if err != nil {
			return err
		}
		return nil
	}); err != nil {
		return fmt.Errorf("read audit ledger: %w", err)
	}
	for _, e := range unknown {
		if err := g.restore(e); err != nil {
			return err
		}
	}
	for id := range pending {
		it, err := g.get(id)
		if err != nil {
			return err
		}
		if seq, ok := ledgered[id]; ok {
			it.State, it.Seq = Released, seq
			if err := g.storeReleased(it, nil, 0, false); err != nil {
				return err
			}
			continue
		}
		// Appended now, without raising the mark: an approved item not
		// finished yet may have its entry anywhere above it.
		if _, err := g.release(it, false, false); err != nil {
			return err
		}
	}
	last := g.led.Last().Seq
	if err := g.writes.Do(func(tx *bolt.Tx) error { return writeMark(tx, last) }); err != nil {
		return fmt.Errorf("store egress high-water mark: %w", err)
	}
	return nil
}

// restore stores the item of ledger entry e, which the store does not
// know, as released: it was ledgered, then the process stopped before its
// store commit.
func (g *Gate) restore(e ledger.Entry) error {
	it := Item{
		ID: e.Item, Channel: Channel(e.Channel), TaskID: e.TaskID, Project: e.Project, Kind: e.Kind,
		Size: e.Size, SHA256: e.SHA256, Rules: e.Rules, State: Released, Seq: e.Seq, CreatedAt: e.Time,
		Reviewer: e.ApprovedBy,
	}
	if n := len(it.Rules); n > 0 && it.Rules[n-1] == ruleNotice {
		it.Rules, it.Notice = it.Rules[:n-1], true
	}
	key := (&Request{Channel: it.Channel, TaskID: it.TaskID, Kind: it.Kind, SHA256: it.SHA256}).key()
	if err := g.writes.Do(func(tx *bolt.Tx) error {
		if tx.Bucket(bucketKeys).Get(key) == nil {
			if err := tx.Bucket(bucketKeys).Put(key, []byte(it.ID)); err != nil {
				return err
			}
		}
		return putItem(tx, it)
	}); err != nil {
		return fmt.Errorf("restore egress item %s from the ledger: %w", it.ID, err)
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
	key := r.key()
	defer g.keys.lock(string(key))()
	if it, ok, err := g.retryStranded(key); ok {
		return it, err
	}
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
			g.mu.Lock()
			defer g.mu.Unlock()
			if it, err = g.get(existing); err != nil || it.State != Held {
				return it, err
			}
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
		// Ledgered first, then stored once as released with its key.
		return g.release(it, true, true)
	}
	if err := g.writes.Do(func(tx *bolt.Tx) error {
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
	return it, nil
}

// retryStranded stores a new item that was ledgered but whose store commit
// failed; ok is false when key has none. The caller holds key's lock.
func (g *Gate) retryStranded(key []byte) (Item, bool, error) {
	g.strandedMu.Lock()
	s, ok := g.stranded[string(key)]
	g.strandedMu.Unlock()
	if !ok {
		return Item{}, false, nil
	}
	if err := g.storeReleased(s.it, key, s.tok, true); err != nil {
		return Item{}, true, err
	}
	g.strandedMu.Lock()
	delete(g.stranded, string(key))
	g.strandedMu.Unlock()
	return s.it, true, nil
}

// release ledgers an item and stores it as released. A new item (fresh)
// is stored with its dedupe key, an approved one was stored before. With
// mark set the commit raises the high-water mark (recovery leaves it). The
// caller holds the item's key lock (fresh) or mu.
func (g *Gate) release(it Item, fresh, mark bool) (Item, error) {
	if !fresh {
		if err := g.fail("stored", it); err != nil {
			return Item{}, err
		}
	}
	rules := slices.Clone(it.Rules)
	if it.Notice {
		rules = append(rules, ruleNotice)
	}
	// From here until the store holds the item, its entry may exist on
	// disk without a store record: the high-water mark stays below it (and
	// does for good if anything fails, so that Open looks at it again).
	tok := g.marks.begin(g.led.Last().Seq)
	e, err := g.led.Append(ledger.Record{
		Channel: string(it.Channel), TaskID: it.TaskID, Project: it.Project, Kind: it.Kind, Item: it.ID,
		Size: it.Size, SHA256: it.SHA256, Rules: rules, ApprovedBy: it.Reviewer,
	})
	if err != nil {
		return Item{}, fmt.Errorf("ledger egress item %s: %w", it.ID, err)
	}
	g.marks.ledgered(tok, e.Seq)
	if err := g.fail("ledgered", it); err != nil {
		return Item{}, err
	}
	it.State, it.Seq = Released, e.Seq
	var key []byte
	if fresh {
		key = (&Request{Channel: it.Channel, TaskID: it.TaskID, Kind: it.Kind, SHA256: it.SHA256}).key()
	}
	if err := g.storeReleased(it, key, tok, mark); err != nil {
		if fresh {
			g.strandedMu.Lock()
			g.stranded[string(key)] = strandedItem{it: it, tok: tok}
			g.strandedMu.Unlock()
		}
		return Item{}, err
	}
	return it, nil
}

// storeReleased commits a released item (and its dedupe key when key is
// set) and ends tok's watch (0: none). With mark set it raises the
// high-water mark as far as the ledger entries still on their way to the
// store allow.
func (g *Gate) storeReleased(it Item, key []byte, tok uint64, mark bool) error {
	if err := g.writes.Do(func(tx *bolt.Tx) error {
		if err := g.fail("commit", it); err != nil {
			return err
		}
		if key != nil {
			if err := tx.Bucket(bucketKeys).Put(key, []byte(it.ID)); err != nil {
				return err
			}
		}
		if mark {
			if err := writeMark(tx, g.marks.storing(tok, tx, g.led.Last().Seq)); err != nil {
				return err
			}
		}
		return putItem(tx, it)
	}); err != nil {
		return fmt.Errorf("mark egress item %s released: %w", it.ID, err)
	}
	if tok != 0 {
		g.marks.done(tok)
	}
	return nil
}

// readMark returns the high-water mark: every ledger entry of an item up to
// this seq is known to the store.
func readMark(tx *bolt.Tx) uint64 {
	if v := tx.Bucket(bucketMeta).Get(keyLedgerSeq); len(v) == 8 {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

// writeMark raises the high-water mark to seq; it never lowers it.
func writeMark(tx *bolt.Tx, seq uint64) error {
	if readMark(tx) >= seq {
		return nil
	}
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], seq)
	return tx.Bucket(bucketMeta).Put(keyLedgerSeq, b[:])
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
	it, err = g.release(it, false, true)
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
		if err := g.writes.Do(func(tx *bolt.Tx) error { return putItem(tx, it) }); err != nil {
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
	if err := g.writes.Do(func(tx *bolt.Tx) error { return putItem(tx, it) }); err != nil {
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

// ruleNotice is added to the ledgered rules of a failure notice.
const ruleNotice = "egress_notice"

// key identifies a request: the same bytes for the same task, channel and
// kind are one item.
func (r *Request) key() []byte {
	return fmt.Appendf(nil, "%s\x00%s\x00%s\x00%s", r.Channel, r.TaskID, r.Kind, r.SHA256)
}

// keyLocks serializes the submissions of one item; each key's lock exists
// while someone holds or waits for it.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	mu    sync.Mutex
	users int
}

// lock takes key's lock and returns its unlock.
func (k *keyLocks) lock(key string) func() {
	k.mu.Lock()
	if k.m == nil {
		k.m = map[string]*keyLock{}
	}
	l := k.m[key]
	if l == nil {
		l = &keyLock{}
		k.m[key] = l
	}
	l.users++
	k.mu.Unlock()
	l.mu.Lock()
	return func() {
		l.mu.Unlock()
		k.mu.Lock()
		if l.users--; l.users == 0 {
			delete(k.m, key)
		}
		k.mu.Unlock()
	}
}

// watermark tracks the ledger entries being written whose items are not in
// the store yet, so that the high-water mark never passes one of them. Each
// watch bounds the mark: by the ledger's last seq before its append (its
// entry comes after), then by its entry's seq - 1, until its item is
// stored. Items stored in one transaction (a group commit) do not bound
// the mark that transaction writes: they are committed with it or not at
// all.
type watermark struct {
	mu      sync.Mutex
	next    uint64
	watches map[uint64]*watch
}

type watch struct {
	bound uint64   // highest seq the mark may reach while this item is not stored
	tx    *bolt.Tx // the transaction storing the item, once one does
}

// begin starts a watch before an append to a ledger whose last seq is last.
func (w *watermark) begin(last uint64) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.watches == nil {
		w.watches = map[uint64]*watch{}
	}
	w.next++
	w.watches[w.next] = &watch{bound: last}
	return w.next
}

// ledgered notes the seq of tok's entry.
func (w *watermark) ledgered(tok, seq uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.watches[tok].bound = seq - 1
}

// done ends tok's watch once its item is stored.
func (w *watermark) done(tok uint64) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.watches, tok)
}

// storing notes that tx stores tok's item and returns the highest seq the
// mark may reach in tx: last (the ledger's last seq), bounded by every
// watch whose item tx does not store.
func (w *watermark) storing(tok uint64, tx *bolt.Tx, last uint64) uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	if wt := w.watches[tok]; wt != nil {
		wt.tx = tx
	}
	m := last
	for _, wt := range w.watches {
		if wt.tx != tx {
			m = min(m, wt.bound)
		}
	}
	return m
}
