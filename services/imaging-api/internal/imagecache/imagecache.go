// Package imagecache stages an accession's images on the shared images volume
// for FL jobs: <base>/<net>/<project>/<accession>/, filled from a zip the
// backend streams, extracted with containment and zip-slip checks, and
// marked complete with a sentinel file only once fully in place. Concurrent
// requests for one accession share a single download; a sweeper removes
// accessions unused for longer than the retention time.
package imagecache

import (
	"archive/zip"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/flip-trust/node/shared/logging"
)

// SentinelPrefix starts the name of the file that marks an accession
// directory complete for one assessor type and resource type.
const SentinelPrefix = ".flip_complete-"

// Temporary entries (a zip being downloaded, a directory being extracted)
// start with this prefix; the sweeper removes stale ones.
const tempPrefix = ".flip-tmp-"

// Limits on what one archive may expand to.
const (
	MaxFiles     = 200_000
	MaxTotalSize = 64 << 30
)

// Errors returned by Get.
var (
	ErrInvalidKey = errors.New("invalid download request")
	ErrUnsafeZip  = errors.New("archive entry escapes the accession directory")
	// ErrInvalidUpload: a file to upload is named outside the upload directory.
	ErrInvalidUpload = errors.New("invalid upload file")
	// ErrNotFound: a file to upload does not exist.
	ErrNotFound = errors.New("file not found")
)

// Key names one cached accession.
type Key struct {
	Net, Project, Accession string
	// Assessor and Resource select what was fetched (scan/assessor, NIFTI/DICOM/SEG/ALL).
	Assessor, Resource string
}

// ValidSegment reports whether s is a single RFC 3986 unreserved-character
// path segment ([A-Za-z0-9._~-]+), other than "." and "..".
func ValidSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '~', r == '-':
		default:
			return false
		}
	}
	return true
}

// Fetch streams the accession's zip archive into w.
type Fetch func(ctx context.Context, w io.Writer) error

// Cache is the images volume.
type Cache struct {
	base   string
	logger *slog.Logger
	now    func() time.Time

	mu       sync.Mutex
	inflight map[string]*call
}

type call struct {
	done chan struct{}
	dir  string
	err  error
}

// New opens the cache rooted at base, creating it if needed.
func New(base string, logger *slog.Logger) (*Cache, error) {
	if base == "" {
		return nil, errors.New("imagecache: base directory is required")
	}
	abs, err := filepath.Abs(base)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o755); err != nil {
		return nil, fmt.Errorf("imagecache: %w", err)
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	if logger == nil {
		logger = logging.Discard()
	}
	return &Cache{base: abs, logger: logger, now: time.Now, inflight: map[string]*call{}}, nil
}

// Base is the cache's root directory.
func (c *Cache) Base() string { return c.base }

// Dir returns the accession directory of k after checking every segment and
// that the result stays inside the base directory.
func (c *Cache) Dir(k Key) (string, error) {
	for _, s := range []struct{ name, v string }{{"net id", k.Net}, {"project id", k.Project}, {"accession id", k.Accession},
		{"assessor type", k.Assessor}, {"resource type", k.Resource}} {
		if !ValidSegment(s.v) {
			return "", fmt.Errorf("%w: %s is not a single path segment of [A-Za-z0-9._~-]", ErrInvalidKey, s.name)
		}
	}
	dir := filepath.Join(c.base, k.Net, k.Project, k.Accession)
	if !within(c.base, dir) {
		return "", fmt.Errorf("%w: path escapes the images directory", ErrInvalidKey)
	}
	return dir, nil
}

func (c *Cache) sentinel(dir string, k Key) string {
	return filepath.Join(dir, SentinelPrefix+k.Assessor+"-"+k.Resource)
}

// Get returns the accession directory of k, downloading and extracting it
// with fetch unless a complete copy is cached (or force is set). Concurrent
// calls for the same key share one download.
func (c *Cache) Get(ctx context.Context, k Key, force bool, fetch Fetch) (string, error) {
	dir, err := c.Dir(k)
	if err != nil {
		return "", err
	}
	sentinel := c.sentinel(dir, k)
	id := dir + "\x00" + k.Assessor + "\x00" + k.Resource
	c.mu.Lock() // the sweeper holds it while it decides and removes
	if !force {
		if _, err := os.Stat(sentinel); err == nil {
			now := c.now()
			_ = os.Chtimes(sentinel, now, now) // the last-used clock of the sweeper
			c.mu.Unlock()
			return dir, nil
		}
	}
	if cl, ok := c.inflight[id]; ok {
		c.mu.Unlock()
		select {
		case <-cl.done:
			return cl.dir, cl.err
		case <-ctx.Done():
			return "", ctx.Err()
		}
	}
	cl := &call{done: make(chan struct{})}
	c.inflight[id] = cl
	c.mu.Unlock()

	cl.dir, cl.err = c.download(ctx, k, dir, sentinel, force, fetch)
	c.mu.Lock()
	delete(c.inflight, id)
	c.mu.Unlock()
	close(cl.done)
	return cl.dir, cl.err
}

func (c *Cache) download(ctx context.Context, k Key, dir, sentinel string, force bool, fetch Fetch) (string, error) {
	parent := filepath.Dir(dir)
	if err := os.MkdirAll(parent, 0o755); err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	if force {
		_ = os.Remove(sentinel)
	}
	zipPath := filepath.Join(parent, tempPrefix+randomSuffix()+".zip")
	f, err := os.OpenFile(zipPath, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	defer func() { _ = f.Close(); _ = os.Remove(zipPath) }()
	if err := fetch(ctx, f); err != nil {
		return "", err
	}
	size, err := f.Seek(0, io.SeekEnd)
	if err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	zr, err := zip.NewReader(f, size)
	if err != nil {
		return "", fmt.Errorf("the archive is not a valid zip: %w", err)
	}
	tmp, err := os.MkdirTemp(parent, tempPrefix)
	if err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := extract(zr, tmp); err != nil {
		return "", err
	}
	root := tmp
	if entries, err := os.ReadDir(tmp); err == nil && len(entries) == 1 && entries[0].IsDir() {
		root = filepath.Join(tmp, entries[0].Name()) // the archive's own top-level folder
	}
	// Replace any earlier (incomplete or refreshed) copy, then mark complete.
	if _, err := os.Lstat(dir); err == nil {
		old := filepath.Join(parent, tempPrefix+randomSuffix())
		if err := os.Rename(dir, old); err != nil {
			return "", fmt.Errorf("trust-side storage: %w", err)
		}
		defer os.RemoveAll(old)
	}
	if err := os.Rename(root, dir); err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	if err := os.WriteFile(sentinel, nil, 0o644); err != nil {
		return "", fmt.Errorf("trust-side storage: %w", err)
	}
	c.logger.Info("accession staged for FL", "net", k.Net, "accession_hash", logging.QueryHash(k.Accession),
		"resource", k.Resource, "files", len(zr.File))
	return dir, nil
}

// extract writes every regular file of zr under dst, refusing entries that
// would land outside it (absolute paths, "..", symlinks) and archives that
// expand beyond MaxFiles or MaxTotalSize.
func extract(zr *zip.Reader, dst string) error {
	if len(zr.File) > MaxFiles {
		return fmt.Errorf("archive has %d entries (limit %d)", len(zr.File), MaxFiles)
	}
	var total uint64
	for _, zf := range zr.File {
		name := filepath.FromSlash(zf.Name)
		target := filepath.Join(dst, name)
		if filepath.IsAbs(name) || !within(dst, target) || strings.Contains(zf.Name, "\\") {
			return fmt.Errorf("%w: %q", ErrUnsafeZip, zf.Name)
		}
		mode := zf.Mode()
		switch {
		case mode.IsDir():
			if err := os.MkdirAll(target, 0o755); err != nil {
				return err
			}
			continue
		case !mode.IsRegular():
			return fmt.Errorf("%w: %q is not a regular file", ErrUnsafeZip, zf.Name)
		}
		total += zf.UncompressedSize64
		if total > MaxTotalSize {
			return fmt.Errorf("archive expands beyond %d bytes", uint64(MaxTotalSize))
		}
		if err := os.MkdirAll(filepath.Dir(target), 0o755); err != nil {
			return err
		}
		if err := writeEntry(zf, target); err != nil {
			return err
		}
	}
	return nil
}

func writeEntry(zf *zip.File, target string) error {
	rc, err := zf.Open()
	if err != nil {
		return fmt.Errorf("archive entry %q: %w", zf.Name, err)
	}
	defer rc.Close()
	out, err := os.OpenFile(target, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("trust-side storage: %w", err)
	}
	// The declared size bounds the copy: a lying header cannot fill the disk.
	n, err := io.Copy(out, io.LimitReader(rc, int64(zf.UncompressedSize64)+1))
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("archive entry %q: %w", zf.Name, err)
	}
	if uint64(n) != zf.UncompressedSize64 {
		return fmt.Errorf("archive entry %q: size differs from its header", zf.Name)
	}
	return nil
}

// within reports whether path is dir or lies below it (lexically).
func within(dir, path string) bool {
	rel, err := filepath.Rel(dir, path)
	return err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) && !filepath.IsAbs(rel)
}

func randomSuffix() string {
	b := make([]byte, 6)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// SweepStats reports one sweep.
type SweepStats struct {
	Accessions, TempEntries, ProjectDirs int
	Bytes                                int64
	Errors                               int
}

// Sweep removes accession directories whose last use (the newest sentinel's
// modification time, else the directory's) is older than ttl, stale temporary
// entries, and project directories left empty. It never follows symbolic
// links, never touches <net>/upload, and tolerates concurrent removal.
func (c *Cache) Sweep(ttl time.Duration) SweepStats {
	var st SweepStats
	cutoff := c.now().Add(-ttl)
	nets, err := os.ReadDir(c.base)
	if err != nil {
		st.Errors++
		return st
	}
	for _, n := range nets {
		if !n.IsDir() || n.Type()&fs.ModeSymlink != 0 {
			continue
		}
		netDir := filepath.Join(c.base, n.Name())
		projects, err := os.ReadDir(netDir)
		if err != nil {
			st.Errors++
			continue
		}
		for _, p := range projects {
			if p.Name() == "upload" || !p.IsDir() || p.Type()&fs.ModeSymlink != 0 {
				continue
			}
			projectDir := filepath.Join(netDir, p.Name())
			c.sweepProject(projectDir, cutoff, &st)
			if entries, err := os.ReadDir(projectDir); err == nil && len(entries) == 0 {
				if os.Remove(projectDir) == nil {
					st.ProjectDirs++
				}
			}
		}
	}
	return st
}

func (c *Cache) sweepProject(projectDir string, cutoff time.Time, st *SweepStats) {
	entries, err := os.ReadDir(projectDir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			st.Errors++
		}
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock() // no download starts or finishes in this project while it is swept
	for _, e := range entries {
		path := filepath.Join(projectDir, e.Name())
		info, err := os.Lstat(path)
		if err != nil || info.Mode()&fs.ModeSymlink != 0 || !within(c.base, path) {
			continue
		}
		if c.busy(path) {
			continue
		}
		if strings.HasPrefix(e.Name(), tempPrefix) {
			if info.ModTime().Before(cutoff) {
				st.Bytes += size(path)
				if os.RemoveAll(path) == nil {
					st.TempEntries++
				}
			}
			continue
		}
		if !info.IsDir() || !lastUsed(path, info).Before(cutoff) {
			continue
		}
		st.Bytes += size(path)
		if err := os.RemoveAll(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			st.Errors++
			continue
		}
		st.Accessions++
	}
}

// busy reports whether a download for the accession directory path is in
// flight; c.mu is held.
func (c *Cache) busy(path string) bool {
	for id := range c.inflight {
		if strings.HasPrefix(id, path+"\x00") {
			return true
		}
	}
	return false
}

func lastUsed(dir string, info fs.FileInfo) time.Time {
	last := info.ModTime()
	matches, _ := filepath.Glob(filepath.Join(dir, SentinelPrefix+"*"))
	for _, m := range matches {
		if si, err := os.Lstat(m); err == nil && si.ModTime().After(last) {
			last = si.ModTime()
		}
	}
	return last
}

func size(path string) int64 {
	var n int64
	_ = filepath.WalkDir(path, func(_ string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// RunSweeper sweeps every interval until ctx ends. failing is called with
// the count of consecutive sweeps that met errors (0 after a clean one).
func (c *Cache) RunSweeper(ctx context.Context, interval, ttl time.Duration, failing func(consecutive int)) {
	if interval < time.Minute {
		interval = time.Minute
	}
	consecutive := 0
	for {
		st := c.Sweep(ttl)
		if st.Errors > 0 {
			consecutive++
		} else {
			consecutive = 0
		}
		if failing != nil {
			failing(consecutive)
		}
		c.logger.Info("image cache swept", "accessions", st.Accessions, "temp_entries", st.TempEntries,
			"project_dirs", st.ProjectDirs, "bytes_freed", st.Bytes, "errors", st.Errors)
		select {
		case <-ctx.Done():
			return
		case <-time.After(interval):
		}
	}
}

// UploadDir is the directory under a net from which FL jobs upload files.
const UploadDir = "upload"

// UploadPath resolves rel, a path relative to <base>/<net>/upload/, to the
// file an FL job asks to upload. It must be a regular file that stays inside
// that directory once symbolic links are resolved.
func (c *Cache) UploadPath(net, rel string) (string, error) {
	if !ValidSegment(net) {
		return "", fmt.Errorf("%w: net id is not a single path segment of [A-Za-z0-9._~-]", ErrInvalidUpload)
	}
	root := filepath.Join(c.base, net, UploadDir)
	if rel == "" || filepath.IsAbs(rel) || strings.ContainsRune(rel, 0) {
		return "", fmt.Errorf("%w: file %q must be a path relative to the upload directory", ErrInvalidUpload, rel)
	}
	p := filepath.Join(root, rel)
	if !within(root, p) || p == root {
		return "", fmt.Errorf("%w: file %q escapes the upload directory", ErrInvalidUpload, rel)
	}
	realRoot, err := filepath.EvalSymlinks(root)
	if err != nil {
		return "", fmt.Errorf("%w: the upload directory of %s does not exist", ErrNotFound, net)
	}
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", fmt.Errorf("%w: file %q does not exist", ErrNotFound, rel)
	}
	if !within(realRoot, real) {
		return "", fmt.Errorf("%w: file %q escapes the upload directory", ErrInvalidUpload, rel)
	}
	info, err := os.Stat(real)
	if err != nil || !info.Mode().IsRegular() {
		return "", fmt.Errorf("%w: %q is not a regular file", ErrInvalidUpload, rel)
	}
	return real, nil
}

// Invalidate removes the completion markers of a project's accession under
// every net, so the next download fetches it again; it returns how many.
func (c *Cache) Invalidate(project, accession string) int {
	if !ValidSegment(project) || !ValidSegment(accession) {
		return 0
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	marks, _ := filepath.Glob(filepath.Join(c.base, "*", project, accession, SentinelPrefix+"*"))
	n := 0
	for _, m := range marks {
		if within(c.base, m) && os.Remove(m) == nil {
			n++
		}
	}
	return n
}
