package flproto

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"
)

// Upload errors the HTTP handler maps to status codes; they are wrapped with
// context, so compare with errors.Is.
var (
	// ErrTooLarge: the announced size is over the store's limit (413).
	ErrTooLarge = errors.New("upload too large")
	// ErrInvalid: a malformed manifest, chunk number or chunk (400).
	ErrInvalid = errors.New("invalid upload")
	// ErrDigest: a chunk's bytes do not match the announced digest (400).
	ErrDigest = errors.New("chunk digest mismatch")
)

// MissingError is returned by Complete while chunks are still missing (409).
type MissingError struct {
	Missing []int
}

// Error implements error.
func (e *MissingError) Error() string {
	return fmt.Sprintf("%d chunks are still missing", len(e.Missing))
}

// Uploads keeps the open uploads of every client in a directory, one
// sub-directory per upload (upload.json, the data file, and the list of
// received chunks), so that a restarted server keeps what it had received.
// A completed upload's file moves into the ArtifactStore.
//
// Uploads is safe for concurrent use within one process; two processes must
// not share its directory.
type Uploads struct {
	dir     string
	store   *ArtifactStore
	maxSize int64

	mu    sync.Mutex
	byID  map[string]*upload
	byKey map[uploadKey]*upload
}

// uploadKey finds a client's open upload of a file again: by the file's
// SHA-256, or, for an announce whose digest is deferred, by a digest of its
// size, chunk size and chunk digests.
type uploadKey struct{ client, file string }

func keyOf(client string, m Manifest) uploadKey {
	if m.SHA256 != "" {
		return uploadKey{client, m.SHA256}
	}
	h := sha256.New()
	fmt.Fprintf(h, "%d/%d", m.Size, m.ChunkSize)
	for _, c := range m.Chunks {
		h.Write([]byte("/" + c))
	}
	return uploadKey{client, "chunks:" + hex.EncodeToString(h.Sum(nil))}
}

// uploadMeta is upload.json.
type uploadMeta struct {
	ID       string    `json:"id"`
	Client   string    `json:"client"`
	Manifest Manifest  `json:"manifest"`
	Created  time.Time `json:"created"`
	Artifact string    `json:"artifact,omitempty"`
}

// upload is one open (or completed) upload. mu guards every field below it;
// cond signals the end of a chunk write.
type upload struct {
	meta uploadMeta
	dir  string
	key  uploadKey // as announced; fixed for the upload's life

	mu       sync.Mutex
	cond     *sync.Cond
	checked  bool   // received was re-verified against the data file
	received []bool // chunks stored and verified
	busy     []bool // chunks being written now
	// whole is the running SHA-256 of chunks [0, wholeNext) in order, so
	// that an in-order upload need not be read again on completion.
	whole     hash.Hash
	wholeNext int
}

// NewUploads opens (creating it when needed) the upload directory dir;
// completed uploads move into store. Uploads announcing more than maxSize
// bytes are refused (maxSize <= 0: no limit). dir should be on the same
// file system as the store's directory so that completion is a rename.
func NewUploads(dir string, store *ArtifactStore, maxSize int64) (*Uploads, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("create upload directory %s: %w", dir, err)
	}
	u := &Uploads{dir: dir, store: store, maxSize: maxSize, byID: map[string]*upload{}, byKey: map[uploadKey]*upload{}}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read upload directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() || !validUploadID(e.Name()) {
			continue
		}
		up, err := loadUpload(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		u.byID[up.meta.ID] = up
		u.byKey[up.key] = up
	}
	return u, nil
}

func loadUpload(dir string) (*upload, error) {
	body, err := os.ReadFile(filepath.Join(dir, "upload.json"))
	if err != nil {
		return nil, fmt.Errorf("load upload %s: %w", dir, err)
	}
	var meta uploadMeta
	if err := json.Unmarshal(body, &meta); err != nil {
		return nil, fmt.Errorf("load upload %s: %w", dir, err)
	}
	if meta.ID != filepath.Base(dir) {
		return nil, fmt.Errorf("load upload %s: upload.json names %q", dir, meta.ID)
	}
	up := newUpload(meta, dir)
	if meta.Artifact == "" {
		rec, err := os.ReadFile(filepath.Join(dir, "received"))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("load upload %s: %w", dir, err)
		}
		for i := range up.received {
			up.received[i] = i < len(rec) && rec[i] == '1'
		}
	}
	return up, nil
}

func newUpload(meta uploadMeta, dir string) *upload {
	n := len(meta.Manifest.Chunks)
	up := &upload{meta: meta, dir: dir, key: keyOf(meta.Client, meta.Manifest), received: make([]bool, n), busy: make([]bool, n), whole: sha256.New()}
	up.cond = sync.NewCond(&up.mu)
	return up
}

// Open opens an upload of the file m describes for client, or returns the
// client's open upload of the same file. When the store already holds the
// artifact the upload is complete at once (nothing missing, Artifact set).
// m's sha256 may be empty (deferred): Complete then takes it from the client.
func (u *Uploads) Open(ctx context.Context, client string, m Manifest) (UploadState, error) {
	if err := m.ValidateAnnounce(); err != nil {
		return UploadState{}, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if u.maxSize > 0 && m.Size > u.maxSize {
		return UploadState{}, fmt.Errorf("%w: %d bytes announced, the limit is %d", ErrTooLarge, m.Size, u.maxSize)
	}
	m.ID = ""
	u.mu.Lock()
	defer u.mu.Unlock()
	key := keyOf(client, m)
	if up, ok := u.byKey[key]; ok && up.sameFile(m) {
		return up.state(), nil
	} else if ok {
		// Same content announced with another chunking: start afresh.
		if err := u.remove(up); err != nil {
			return UploadState{}, err
		}
	}
	id, err := newUploadID()
	if err != nil {
		return UploadState{}, err
	}
	meta := uploadMeta{ID: id, Client: client, Manifest: m, Created: time.Now().UTC()}
	dir := filepath.Join(u.dir, id)
	if err := os.Mkdir(dir, 0o750); err != nil {
		return UploadState{}, fmt.Errorf("open upload: %w", err)
	}
	if m.SHA256 != "" && u.store.Has(ArtifactID(m.SHA256)) {
		meta.Artifact = ArtifactID(m.SHA256)
	} else {
		f, err := os.Create(filepath.Join(dir, "data"))
		if err == nil {
			err = f.Truncate(m.Size)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			_ = os.RemoveAll(dir)
			return UploadState{}, fmt.Errorf("open upload: %w", err)
		}
	}
	up := newUpload(meta, dir)
	up.checked = true
	if err := up.saveMeta(); err != nil {
		_ = os.RemoveAll(dir)
		return UploadState{}, fmt.Errorf("open upload: %w", err)
	}
	u.byID[id] = up
	u.byKey[key] = up
	return up.state(), nil
}

// remove forgets up and deletes its directory; u.mu is held.
func (u *Uploads) remove(up *upload) error {
	delete(u.byID, up.meta.ID)
	delete(u.byKey, up.key)
	if err := os.RemoveAll(up.dir); err != nil {
		return fmt.Errorf("remove upload %s: %w", up.meta.ID, err)
	}
	return nil
}

func (up *upload) sameFile(m Manifest) bool {
	o := up.meta.Manifest
	return o.Size == m.Size && o.ChunkSize == m.ChunkSize && slices.Equal(o.Chunks, m.Chunks)
}

// get returns client's upload id, or ErrNotFound (also for another client's).
func (u *Uploads) get(client, id string) (*upload, error) {
	if !validUploadID(id) {
		return nil, fmt.Errorf("upload %q: %w", truncate(id, 80), ErrNotFound)
	}
	u.mu.Lock()
	up, ok := u.byID[id]
	u.mu.Unlock()
	if !ok || up.meta.Client != client {
		return nil, fmt.Errorf("upload %s: %w", id, ErrNotFound)
	}
	return up, nil
}

// State returns client's upload id and the chunks it still misses.
func (u *Uploads) State(ctx context.Context, client, id string) (UploadState, error) {
	up, err := u.get(client, id)
	if err != nil {
		return UploadState{}, err
	}
	up.mu.Lock()
	defer up.mu.Unlock()
	if err := up.check(ctx); err != nil {
		return UploadState{}, err
	}
	return up.stateLocked(), nil
}

// PutChunk stores chunk n of client's upload id from r, whose bytes must be
// exactly the chunk's length and match digest, the chunk's announced
// SHA-256 (ErrInvalid, ErrDigest otherwise). A chunk already received is
// verified and not written again. Writes of the same chunk are serialised;
// different chunks are written in parallel.
func (u *Uploads) PutChunk(ctx context.Context, client, id string, n int, digest string, r io.Reader) error {
	up, err := u.get(client, id)
	if err != nil {
		return err
	}
	m := up.meta.Manifest
	if n < 0 || n >= len(m.Chunks) {
		return fmt.Errorf("%w: upload %s has no chunk %d", ErrInvalid, id, n)
	}
	if digest != m.Chunks[n] {
		return fmt.Errorf("%w: chunk %d was announced as %s, the request says %q", ErrDigest, n, m.Chunks[n], truncate(digest, 80))
	}
	off, length := m.ChunkSpan(n)

	up.mu.Lock()
	if err := up.check(ctx); err != nil {
		up.mu.Unlock()
		return err
	}
	for up.busy[n] {
		up.cond.Wait()
	}
	if up.meta.Artifact != "" || up.received[n] {
		up.mu.Unlock()
		got, cnt, err := hashLimited(io.Discard, r, length)
		if err != nil {
			return fmt.Errorf("read chunk %d: %w", n, err)
		}
		return checkChunk(n, got, cnt, length, m.Chunks[n])
	}
	up.busy[n] = true
	// An in-order chunk also feeds the whole-file digest; the hasher is
	// handed over to this write and back below.
	var whole hash.Hash
	if up.wholeNext == n {
		whole = up.whole
		up.whole = nil
	}
	up.mu.Unlock()

	err = up.writeChunk(n, off, length, r, whole)

	up.mu.Lock()
	defer up.mu.Unlock()
	up.busy[n] = false
	up.cond.Broadcast()
	if whole != nil {
		up.whole = whole
		if err != nil {
			// The hasher saw bytes of a refused chunk: restart it from chunk 0.
			up.whole.Reset()
			up.wholeNext = 0
		}
	}
	if err != nil {
		return err
	}
	up.received[n] = true
	if whole != nil {
		up.wholeNext = n + 1
	}
	if err := up.saveReceived(); err != nil {
		up.received[n] = false
		return fmt.Errorf("record chunk %d of upload %s: %w", n, id, err)
	}
	up.advance()
	return nil
}

// advance feeds the whole-file hasher the received chunks that follow those
// it has seen (chunks that arrived out of order), reading them back from the
// data file, so that Complete has little left to read. up.mu is held; it is
// released while reading, with the hasher taken out of up meanwhile.
func (up *upload) advance() {
	if up.whole == nil || up.wholeNext >= len(up.received) || !up.received[up.wholeNext] {
		return
	}
	f, err := os.Open(filepath.Join(up.dir, "data"))
	if err != nil {
		return // Complete reads what is left
	}
	defer f.Close()
	for up.whole != nil && up.wholeNext < len(up.received) && up.received[up.wholeNext] {
		h, n := up.whole, up.wholeNext
		up.whole = nil
		up.mu.Unlock()
		off, length := up.meta.Manifest.ChunkSpan(n)
		_, err := copyPooled(h, io.NewSectionReader(f, off, length))
		up.mu.Lock()
		up.whole = h
		up.cond.Broadcast()
		if err != nil {
			h.Reset()
			up.wholeNext = 0
			return
		}
		up.wholeNext = n + 1
	}
}

// writeChunk copies chunk n from r into the data file, hashing it (and
// feeding whole when not nil), and checks length and digest.
func (up *upload) writeChunk(n int, off, length int64, r io.Reader, whole hash.Hash) error {
	f, err := os.OpenFile(filepath.Join(up.dir, "data"), os.O_WRONLY, 0)
	if err != nil {
		return fmt.Errorf("write chunk %d: %w", n, err)
	}
	defer f.Close()
	var w io.Writer = io.NewOffsetWriter(f, off)
	if whole != nil {
		w = io.MultiWriter(w, whole)
	}
	got, cnt, err := hashLimited(w, r, length)
	if err != nil {
		return fmt.Errorf("write chunk %d: %w", n, err)
	}
	return checkChunk(n, got, cnt, length, up.meta.Manifest.Chunks[n])
}

// hashLimited copies at most length+1 bytes of r to w and returns their
// SHA-256 and count.
func hashLimited(w io.Writer, r io.Reader, length int64) (string, int64, error) {
	h := sha256.New()
	cnt, err := copyPooled(io.MultiWriter(h, w), io.LimitReader(r, length+1))
	return hex.EncodeToString(h.Sum(nil)), cnt, err
}

func checkChunk(n int, got string, cnt, length int64, want string) error {
	if cnt != length {
		return fmt.Errorf("%w: chunk %d must be %d bytes, got %d", ErrInvalid, n, length, cnt)
	}
	if got != want {
		return fmt.Errorf("%w: chunk %d has SHA-256 %s, announced %s", ErrDigest, n, got, want)
	}
	return nil
}

// Complete checks client's upload id against its whole-file SHA-256 and
// moves it into the artifact store, returning the artifact id. Missing
// chunks give a *MissingError; a whole-file mismatch (chunk digests that do
// not add up to the announced file) gives ErrDigest and drops the upload.
// Completing a completed upload returns its artifact again. sha256 is the
// client's whole-file digest: required when the announce deferred it, and
// when given it must equal the announced one (ErrInvalid otherwise).
func (u *Uploads) Complete(ctx context.Context, client, id, sha256Hex string) (artifact string, err error) {
	up, err := u.get(client, id)
	if err != nil {
		return "", err
	}
	// A mismatching upload is dropped after up.mu is released: u.mu is
	// never taken while an upload's mutex is held (Open takes them the other
	// way round).
	drop := false
	defer func() {
		if drop {
			u.mu.Lock()
			err = errors.Join(err, u.remove(up))
			u.mu.Unlock()
		}
	}()
	up.mu.Lock()
	defer up.mu.Unlock()
	if up.meta.Artifact != "" {
		return up.meta.Artifact, nil
	}
	want := up.meta.Manifest.SHA256
	switch {
	case want == "" && !isHexDigest(sha256Hex):
		return "", fmt.Errorf("%w: upload %s deferred its sha256: completing it needs the whole-file sha256 (64 lowercase hex digits)", ErrInvalid, id)
	case want == "":
		want = sha256Hex
	case sha256Hex != "" && sha256Hex != want:
		return "", fmt.Errorf("%w: upload %s was announced with sha256 %s, completed with %q", ErrInvalid, id, want, truncate(sha256Hex, 80))
	}
	if err := up.check(ctx); err != nil {
		return "", err
	}
	if missing := up.missing(); len(missing) > 0 {
		return "", &MissingError{Missing: missing}
	}
	for slices.Contains(up.busy, true) || up.whole == nil {
		up.cond.Wait()
	}
	m := up.meta.Manifest
	data := filepath.Join(up.dir, "data")
	f, err := os.OpenFile(data, os.O_RDWR, 0)
	if err != nil {
		return "", fmt.Errorf("complete upload %s: %w", id, err)
	}
	// Digest what the in-order writes have not seen yet.
	if up.wholeNext > len(m.Chunks) {
		up.whole, up.wholeNext = sha256.New(), 0
	}
	off, _ := m.ChunkSpan(up.wholeNext)
	if up.wholeNext >= len(m.Chunks) {
		off = m.Size
	}
	_, err = copyPooled(up.whole, io.NewSectionReader(ctxReaderAt{ctx, f}, off, m.Size-off))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		up.whole, up.wholeNext = sha256.New(), 0
		return "", fmt.Errorf("complete upload %s: %w", id, err)
	}
	got := hex.EncodeToString(up.whole.Sum(nil))
	up.wholeNext = len(m.Chunks) + 1 // the hasher is spent
	if got != want {
		drop = true
		return "", fmt.Errorf("%w: the uploaded file has SHA-256 %s, announced %s", ErrDigest, got, want)
	}
	m.SHA256 = got
	if err := u.store.Adopt(data, m); err != nil {
		return "", fmt.Errorf("complete upload %s: %w", id, err)
	}
	up.meta.Artifact = ArtifactID(m.SHA256)
	up.meta.Manifest.SHA256 = m.SHA256
	if err := up.saveMeta(); err != nil {
		return "", fmt.Errorf("complete upload %s: %w", id, err)
	}
	_ = os.Remove(filepath.Join(up.dir, "received"))
	return up.meta.Artifact, nil
}

// check re-verifies, once after a restart, every chunk the received file
// lists against the data file; a chunk that does not match (the server
// stopped before the data reached the disk) counts as missing. up.mu is held.
func (up *upload) check(ctx context.Context) error {
	if up.checked || up.meta.Artifact != "" {
		up.checked = true
		return nil
	}
	f, err := os.Open(filepath.Join(up.dir, "data"))
	if err != nil {
		return fmt.Errorf("check upload %s: %w", up.meta.ID, err)
	}
	defer f.Close()
	m := up.meta.Manifest
	for n, ok := range up.received {
		if !ok {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		off, length := m.ChunkSpan(n)
		got, err := hashSection(f, off, length)
		up.received[n] = err == nil && got == m.Chunks[n]
	}
	up.checked = true
	return nil
}

func (up *upload) missing() []int {
	missing := []int{}
	if up.meta.Artifact != "" {
		return missing
	}
	for n, ok := range up.received {
		if !ok {
			missing = append(missing, n)
		}
	}
	return missing
}

func (up *upload) state() UploadState {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.stateLocked()
}

func (up *upload) stateLocked() UploadState {
	return UploadState{ID: up.meta.ID, Missing: up.missing(), Artifact: up.meta.Artifact}
}

func (up *upload) saveMeta() error {
	body, err := json.Marshal(up.meta)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(up.dir, "upload.json"), body)
}

// saveReceived records which chunks arrived: one '0' or '1' per chunk. It
// is not synced: a restart re-verifies the chunks it lists.
func (up *upload) saveReceived() error {
	b := make([]byte, len(up.received))
	for i, ok := range up.received {
		b[i] = '0'
		if ok {
			b[i] = '1'
		}
	}
	path := filepath.Join(up.dir, "received")
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o640); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func newUploadID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("new upload id: %w", err)
	}
	return hex.EncodeToString(b[:]), nil
}

// validUploadID reports whether id is 32 lowercase hex digits (the only
// upload ids ever made, and the only ones used to build a path).
func validUploadID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// ctxReaderAt fails reads once ctx is done.
type ctxReaderAt struct {
	ctx context.Context
	r   io.ReaderAt
}

func (c ctxReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.ReadAt(p, off)
}
