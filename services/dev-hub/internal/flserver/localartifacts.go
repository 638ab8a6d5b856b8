package flserver

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/flip-trust/node/shared/flproto"
)

// LocalArtifacts is a minimal content-addressed artifact directory: each
// artifact is the file <dir>/<hex> with its manifest beside it as
// <hex>.json. It is the stand-in that dev-hub wires until the chunked,
// resumable artifact store of shared/flproto takes its place; it serves the
// Artifacts interface only. Safe for concurrent use.
type LocalArtifacts struct {
	dir string
}

var _ Artifacts = (*LocalArtifacts)(nil)

// ErrArtifactNotFound is returned by LocalArtifacts.Open for an unknown id.
var ErrArtifactNotFound = errors.New("artifact not found")

// NewLocalArtifacts returns the artifact directory dir, creating it.
func NewLocalArtifacts(dir string) (*LocalArtifacts, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("artifact dir: %w", err)
	}
	return &LocalArtifacts{dir: dir}, nil
}

// chunker digests a stream chunk by chunk.
type chunker struct {
	size   int64
	filled int64
	cur    hash.Hash
	chunks []string
}

func (c *chunker) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		if c.cur == nil {
			c.cur = sha256.New()
		}
		k := min(int64(len(p)), c.size-c.filled)
		c.cur.Write(p[:k])
		c.filled += k
		p = p[k:]
		if c.filled == c.size {
			c.flush()
		}
	}
	return n, nil
}

func (c *chunker) flush() {
	if c.cur != nil && c.filled > 0 {
		c.chunks = append(c.chunks, hex.EncodeToString(c.cur.Sum(nil)))
	}
	c.cur, c.filled = nil, 0
}

// Put stores r's bytes and returns their manifest.
func (a *LocalArtifacts) Put(ctx context.Context, r io.Reader) (flproto.Manifest, error) {
	tmp, err := os.CreateTemp(a.dir, ".put-*")
	if err != nil {
		return flproto.Manifest{}, fmt.Errorf("store artifact: %w", err)
	}
	defer os.Remove(tmp.Name())
	whole := sha256.New()
	ch := &chunker{size: flproto.DefaultChunkSize}
	size, err := io.Copy(io.MultiWriter(tmp, whole, ch), ctxReader{ctx: ctx, r: r})
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return flproto.Manifest{}, fmt.Errorf("store artifact: %w", err)
	}
	ch.flush()
	sum := hex.EncodeToString(whole.Sum(nil))
	m := flproto.Manifest{ID: flproto.ArtifactID(sum), Size: size, SHA256: sum, ChunkSize: flproto.DefaultChunkSize, Chunks: ch.chunks}
	if m.Chunks == nil {
		m.Chunks = []string{}
	}
	mj, err := json.Marshal(m)
	if err != nil {
		return flproto.Manifest{}, fmt.Errorf("encode manifest: %w", err)
	}
	if err := os.WriteFile(filepath.Join(a.dir, sum+".json"), mj, 0o600); err != nil {
		return flproto.Manifest{}, fmt.Errorf("store manifest: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(a.dir, sum)); err != nil {
		return flproto.Manifest{}, fmt.Errorf("store artifact: %w", err)
	}
	return m, nil
}

// Open opens artifact id for reading; the caller closes the file.
func (a *LocalArtifacts) Open(id string) (*os.File, flproto.Manifest, error) {
	hexSum, ok := a.name(id)
	if !ok {
		return nil, flproto.Manifest{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, id)
	}
	mj, err := os.ReadFile(filepath.Join(a.dir, hexSum+".json"))
	if errors.Is(err, os.ErrNotExist) {
		return nil, flproto.Manifest{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, id)
	}
	if err != nil {
		return nil, flproto.Manifest{}, fmt.Errorf("read manifest: %w", err)
	}
	var m flproto.Manifest
	if err := json.Unmarshal(mj, &m); err != nil {
		return nil, flproto.Manifest{}, fmt.Errorf("decode manifest of %s: %w", id, err)
	}
	f, err := os.Open(filepath.Join(a.dir, hexSum))
	if errors.Is(err, os.ErrNotExist) {
		return nil, flproto.Manifest{}, fmt.Errorf("%w: %s", ErrArtifactNotFound, id)
	}
	if err != nil {
		return nil, flproto.Manifest{}, fmt.Errorf("open artifact: %w", err)
	}
	return f, m, nil
}

// Has reports whether artifact id is stored.
func (a *LocalArtifacts) Has(id string) bool {
	hexSum, ok := a.name(id)
	if !ok {
		return false
	}
	_, err := os.Stat(filepath.Join(a.dir, hexSum))
	return err == nil
}

func (a *LocalArtifacts) name(id string) (string, bool) {
	if !ValidArtifactID(id) {
		return "", false
	}
	return strings.TrimPrefix(id, "sha256:"), true
}

// ctxReader stops a copy when ctx is done.
type ctxReader struct {
	ctx context.Context
	r   io.Reader
}

func (c ctxReader) Read(p []byte) (int, error) {
	if err := c.ctx.Err(); err != nil {
		return 0, err
	}
	return c.r.Read(p)
}
