package flproto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"strings"
	"sync"
)

// ErrBadID is returned for an artifact or upload id that is not well formed.
var ErrBadID = errors.New("malformed id")

// ParseArtifactID returns the hex digest of id ("sha256:" and 64 lowercase
// hex digits), or an error wrapping ErrBadID. Only ids that pass are ever
// used to build a path.
func ParseArtifactID(id string) (string, error) {
	hexDigest, ok := strings.CutPrefix(id, "sha256:")
	if !ok || !isHexDigest(hexDigest) {
		return "", fmt.Errorf("artifact id %q: %w", truncate(id, 80), ErrBadID)
	}
	return hexDigest, nil
}

// IsArtifactID reports whether id is a content address "sha256:<64 hex>".
func IsArtifactID(id string) bool {
	hexDigest, ok := strings.CutPrefix(id, "sha256:")
	return ok && isHexDigest(hexDigest)
}

// isHexDigest reports whether s is 64 lowercase hex digits.
func isHexDigest(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// ChunkCount is the number of chunks of a file of size bytes cut into
// chunkSize pieces: ceil(size/chunkSize), zero for an empty file.
func ChunkCount(size, chunkSize int64) int {
	if size <= 0 || chunkSize <= 0 {
		return 0
	}
	return int((size + chunkSize - 1) / chunkSize)
}

// ChunkSpan is the offset and length of chunk n of m.
func (m Manifest) ChunkSpan(n int) (off, length int64) {
	off = int64(n) * m.ChunkSize
	return off, min(m.ChunkSize, m.Size-off)
}

// Validate checks m's shape: chunk size within bounds, a chunk digest for
// every chunk, well-formed digests, and an id (when set) that names sha256.
func (m Manifest) Validate() error { return m.validate(false) }

// ValidateAnnounce is Validate for a manifest announcing an upload, whose
// whole-file sha256 may be left empty: the client then gives it when it
// completes the upload (a deferred digest), so that it can hash the file
// while its chunks are on the way.
func (m Manifest) ValidateAnnounce() error { return m.validate(true) }

func (m Manifest) validate(deferrable bool) error {
	var problems []string
	if m.Size < 0 {
		problems = append(problems, "size must not be negative")
	}
	if m.ChunkSize < MinChunkSize || m.ChunkSize > MaxChunkSize {
		problems = append(problems, fmt.Sprintf("chunk_size must be between %d and %d", MinChunkSize, MaxChunkSize))
	}
	switch {
	case deferrable && m.SHA256 == "":
		if m.ID != "" {
			problems = append(problems, "id must be empty when sha256 is deferred")
		}
	case !isHexDigest(m.SHA256):
		problems = append(problems, "sha256 must be 64 lowercase hex digits")
	case m.ID != "" && m.ID != ArtifactID(m.SHA256):
		problems = append(problems, "id must be sha256:<sha256>")
	}
	if m.Size >= 0 && m.ChunkSize > 0 {
		if want := ChunkCount(m.Size, m.ChunkSize); len(m.Chunks) != want {
			problems = append(problems, fmt.Sprintf("chunks must list %d digests, got %d", want, len(m.Chunks)))
		}
	}
	for i, c := range m.Chunks {
		if !isHexDigest(c) {
			problems = append(problems, fmt.Sprintf("chunks[%d] must be 64 lowercase hex digits", i))
			break
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("invalid manifest: %s", strings.Join(problems, "; "))
	}
	return nil
}

// ManifestOf reads r to its end and returns the manifest of its bytes cut
// into chunkSize chunks (DefaultChunkSize when 0). Memory stays one copy
// buffer whatever the size. The whole-file digest is computed on a second
// goroutine so that both digests run in parallel.
func ManifestOf(r io.Reader, chunkSize int64) (Manifest, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return Manifest{}, fmt.Errorf("chunk size %d: must be between %d and %d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	cw := newChunkHasher(chunkSize)
	whole := newAsyncHasher()
	n, err := copyPooled(io.MultiWriter(cw, whole), r)
	sum := whole.Sum()
	if err != nil {
		return Manifest{}, err
	}
	m := Manifest{Size: n, SHA256: sum, ChunkSize: chunkSize, Chunks: cw.Finish()}
	m.ID = ArtifactID(m.SHA256)
	return m, nil
}

// ChunkDigests returns the SHA-256 of every chunkSize chunk of the size
// bytes of r, hashing up to workers chunks at once (1 when workers < 1).
// Memory stays one copy buffer per worker.
func ChunkDigests(ctx context.Context, r io.ReaderAt, size, chunkSize int64, workers int) ([]string, error) {
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("chunk size %d: must be between %d and %d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	n := ChunkCount(size, chunkSize)
	sums := make([]string, n)
	m := Manifest{Size: size, ChunkSize: chunkSize}
	next := make(chan int)
	errs := make(chan error, 1)
	var wg sync.WaitGroup
	for range max(1, min(workers, n)) {
		wg.Go(func() {
			for i := range next {
				off, length := m.ChunkSpan(i)
				sum, err := hashSection(r, off, length)
				if err != nil {
					select {
					case errs <- fmt.Errorf("hash chunk %d: %w", i, err):
					default:
					}
					continue
				}
				sums[i] = sum
			}
		})
	}
feed:
	for i := range n {
		select {
		case next <- i:
		case <-ctx.Done():
			break feed
		case err := <-errs:
			errs <- err
			break feed
		}
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		return nil, err
	default:
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return sums, nil
}

// chunkHasher is an io.Writer that hashes its input in chunkSize pieces.
type chunkHasher struct {
	size   int64
	filled int64
	h      hash.Hash
	sums   []string
}

func newChunkHasher(size int64) *chunkHasher {
	return &chunkHasher{size: size, h: sha256.New(), sums: []string{}}
}

func (c *chunkHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), c.size-c.filled)
		c.h.Write(p[:take])
		c.filled += take
		p = p[take:]
		if c.filled == c.size {
			c.sums = append(c.sums, hex.EncodeToString(c.h.Sum(nil)))
			c.h.Reset()
			c.filled = 0
		}
	}
	return n, nil
}

// Finish returns the digests of every chunk, the short last one included.
func (c *chunkHasher) Finish() []string {
	if c.filled > 0 {
		c.sums = append(c.sums, hex.EncodeToString(c.h.Sum(nil)))
		c.h.Reset()
		c.filled = 0
	}
	return c.sums
}

// asyncHasher computes a SHA-256 on its own goroutine: Write hands a copy
// of p over (from a small pool of buffers, so memory stays bounded) and
// returns. Sum waits for the goroutine and ends it; the hasher is then done.
type asyncHasher struct {
	in   chan []byte
	free chan []byte
	done chan string
}

const asyncHasherBuffers = 4

func newAsyncHasher() *asyncHasher {
	a := &asyncHasher{in: make(chan []byte, asyncHasherBuffers), free: make(chan []byte, asyncHasherBuffers), done: make(chan string, 1)}
	for range asyncHasherBuffers {
		a.free <- make([]byte, 0, copyBufferSize)
	}
	go func() {
		h := sha256.New()
		for b := range a.in {
			h.Write(b)
			a.free <- b[:0]
		}
		a.done <- hex.EncodeToString(h.Sum(nil))
	}()
	return a
}

func (a *asyncHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		b := <-a.free
		take := min(len(p), cap(b))
		b = append(b, p[:take]...)
		a.in <- b
		p = p[take:]
	}
	return n, nil
}

// Sum ends the hasher and returns the hex digest of everything written.
func (a *asyncHasher) Sum() string {
	close(a.in)
	return <-a.done
}

// copyBufferSize is the size of the buffers every copy in this package uses.
const copyBufferSize = 256 << 10

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, copyBufferSize); return &b }}

// copyPooled is io.Copy through a pooled buffer of copyBufferSize bytes
// (r's WriteTo and w's ReadFrom are deliberately not used, so every copy
// moves large blocks).
func copyPooled(w io.Writer, r io.Reader) (int64, error) {
	bp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bp)
	return io.CopyBuffer(struct{ io.Writer }{w}, struct{ io.Reader }{r}, *bp)
}

// hashSection returns the hex SHA-256 of length bytes of r at off.
func hashSection(r io.ReaderAt, off, length int64) (string, error) {
	h := sha256.New()
	n, err := copyPooled(h, io.NewSectionReader(r, off, length))
	if err != nil {
		return "", err
	}
	if n != length {
		return "", io.ErrUnexpectedEOF
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
