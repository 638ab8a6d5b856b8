package flproto

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// ErrNotFound is returned for an artifact or upload that does not exist (or
// that belongs to another client).
var ErrNotFound = errors.New("not found")

// ArtifactStore keeps content-addressed artifacts in a directory: the bytes
// of artifact sha256:<hex> in <dir>/<hex> and its manifest in
// <dir>/<hex>.json (written last, so an artifact exists once its manifest
// does). Files are written to <dir>/tmp, synced and renamed into place.
//
// An ArtifactStore is safe for concurrent use, by several processes too:
// every write is a rename of a complete file.
type ArtifactStore struct {
	dir       string
	chunkSize int64
}

// NewArtifactStore opens (creating it when needed) the store in dir. Put
// cuts artifacts into chunkSize chunks (DefaultChunkSize when 0).
func NewArtifactStore(dir string, chunkSize int64) (*ArtifactStore, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	if chunkSize < MinChunkSize || chunkSize > MaxChunkSize {
		return nil, fmt.Errorf("artifact store chunk size %d: must be between %d and %d", chunkSize, MinChunkSize, MaxChunkSize)
	}
	if err := os.MkdirAll(filepath.Join(dir, "tmp"), 0o750); err != nil {
		return nil, fmt.Errorf("create artifact store %s: %w", dir, err)
	}
	return &ArtifactStore{dir: dir, chunkSize: chunkSize}, nil
}

// Dir is the store's directory.
func (s *ArtifactStore) Dir() string { return s.dir }

// Put stores everything r yields and returns its manifest. The bytes go to
// a temporary file while both digests are computed, are synced, and the
// file is renamed into place; storing bytes the store already holds keeps
// the existing artifact. ctx cancels the copy.
func (s *ArtifactStore) Put(ctx context.Context, r io.Reader) (Manifest, error) {
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "put-*")
	if err != nil {
		return Manifest{}, fmt.Errorf("put artifact: %w", err)
	}
	defer os.Remove(tmp.Name()) // after the rename this removes nothing
	m, err := ManifestOf(io.TeeReader(ctxReader{ctx, r}, tmp), s.chunkSize)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("put artifact: %w", err)
	}
	if err := s.adopt(tmp.Name(), m); err != nil {
		return Manifest{}, fmt.Errorf("put artifact %s: %w", m.ID, err)
	}
	return m, nil
}

// Adopt moves the complete, synced file at path (whose bytes m describes and
// which the caller has verified) into the store as artifact m.ID. path should
// be on the store's file system; otherwise it is copied.
func (s *ArtifactStore) Adopt(path string, m Manifest) error {
	if err := m.Validate(); err != nil {
		return fmt.Errorf("adopt %s: %w", path, err)
	}
	m.ID = ArtifactID(m.SHA256)
	if err := s.adopt(path, m); err != nil {
		return fmt.Errorf("adopt %s as %s: %w", path, m.ID, err)
	}
	return nil
}

func (s *ArtifactStore) adopt(path string, m Manifest) error {
	hexDigest := m.SHA256
	if s.Has(m.ID) {
		return os.Remove(path)
	}
	data := filepath.Join(s.dir, hexDigest)
	if err := os.Rename(path, data); err != nil {
		if !errors.Is(err, syscall.EXDEV) {
			return err
		}
		if err := s.copyIn(path, data); err != nil {
			return err
		}
		_ = os.Remove(path)
	}
	body, err := json.Marshal(m)
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(s.dir, hexDigest+".json"), body)
}

// copyIn copies src to dst through the store's tmp directory.
func (s *ArtifactStore) copyIn(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Join(s.dir, "tmp"), "copy-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = copyPooled(tmp, in)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

// Has reports whether the store holds artifact id.
func (s *ArtifactStore) Has(id string) bool {
	hexDigest, err := ParseArtifactID(id)
	if err != nil {
		return false
	}
	_, err = os.Stat(filepath.Join(s.dir, hexDigest+".json"))
	return err == nil
}

// Manifest returns the manifest of artifact id: an error wrapping ErrBadID
// for a malformed id, ErrNotFound for an unknown one.
func (s *ArtifactStore) Manifest(id string) (Manifest, error) {
	hexDigest, err := ParseArtifactID(id)
	if err != nil {
		return Manifest{}, err
	}
	body, err := os.ReadFile(filepath.Join(s.dir, hexDigest+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return Manifest{}, fmt.Errorf("artifact %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return Manifest{}, fmt.Errorf("read manifest of %s: %w", id, err)
	}
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return Manifest{}, fmt.Errorf("read manifest of %s: %w", id, err)
	}
	if m.ID != id {
		return Manifest{}, fmt.Errorf("manifest of %s names %s", id, m.ID)
	}
	return m, nil
}

// Open returns artifact id's file, open for reading, and its manifest; the
// caller closes the file. Errors are those of Manifest.
func (s *ArtifactStore) Open(id string) (*os.File, Manifest, error) {
	m, err := s.Manifest(id)
	if err != nil {
		return nil, Manifest{}, err
	}
	f, err := os.Open(filepath.Join(s.dir, m.SHA256))
	if err != nil {
		return nil, Manifest{}, fmt.Errorf("open artifact %s: %w", id, err)
	}
	return f, m, nil
}

// writeFileAtomic writes body to path through a synced temporary file in
// the same directory and a rename.
func writeFileAtomic(path string, body []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(body)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// ctxReader fails reads once ctx is done.
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
