package flproto

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"runtime"
	"sync"
)

// MaxChunkRefetch is how many times a chunk that fails its digest is fetched
// again before the transfer fails.
const MaxChunkRefetch = 3

// chunkError is a chunk whose bytes did not match their digest.
type chunkError struct {
	n         int
	got, want string
}

func (e *chunkError) Error() string {
	return fmt.Sprintf("chunk %d has SHA-256 %s, the manifest says %s", e.n, e.got, e.want)
}

// ErrCorrupt is wrapped by the error of a transfer that gave up on a chunk
// that kept failing its digest, or whose whole file did not match.
var ErrCorrupt = errors.New("corrupt transfer")

// downloadProgress is the file beside a part file that says which chunks
// of which artifact it holds.
type downloadProgress struct {
	ID        string `json:"id"`
	Size      int64  `json:"size"`
	ChunkSize int64  `json:"chunk_size"`
	Done      string `json:"done"` // one '0' or '1' per chunk
}

// PartSuffix and ProgressSuffix name the files a download keeps beside its
// destination until it is complete.
const (
	PartSuffix     = ".part"
	ProgressSuffix = ".part.json"
)

// Manifest fetches artifact id's manifest and checks that it describes id.
func (c *Client) Manifest(ctx context.Context, id string) (Manifest, error) {
	if _, err := ParseArtifactID(id); err != nil {
		return Manifest{}, err
	}
	var m Manifest
	err := c.retry(ctx, "get manifest", func(ctx context.Context) error {
		return c.callJSON(ctx, http.MethodGet, c.route(PathArtifact, id, 0), nil, &m)
	})
	if err != nil {
		return Manifest{}, fmt.Errorf("manifest of %s: %w", id, err)
	}
	if err := m.Validate(); err != nil {
		return Manifest{}, fmt.Errorf("manifest of %s: %w", id, err)
	}
	if m.ID != id {
		return Manifest{}, fmt.Errorf("manifest of %s names %s", id, m.ID)
	}
	return m, nil
}

// Download fetches artifact id into dstPath and returns its manifest.
//
// Chunks are written into dstPath+".part" at their offsets and counted once
// their digest matches; which chunks are done is recorded in
// dstPath+".part.json". A Download that finds those files (after an
// interruption, by this process or another) re-verifies the chunks recorded
// as done and fetches only the others. The whole file's SHA-256 is checked
// before the part file is renamed to dstPath. Transient failures are retried
// under c.Retry; a chunk that fails its digest is fetched again up to
// MaxChunkRefetch times. Memory stays a few copy buffers per parallel chunk,
// whatever the artifact's size.
func (c *Client) Download(ctx context.Context, id, dstPath string) (Manifest, error) {
	m, err := c.Manifest(ctx, id)
	if err != nil {
		return Manifest{}, fmt.Errorf("download: %w", err)
	}
	part, progPath := dstPath+PartSuffix, dstPath+ProgressSuffix
	f, done, err := openPart(part, progPath, m)
	if err != nil {
		return Manifest{}, fmt.Errorf("download %s: %w", id, err)
	}
	defer f.Close()

	d := &download{c: c, m: m, f: f, progPath: progPath, done: done, changed: make(chan struct{}, 1)}
	for n, ok := range done {
		if ok {
			_, l := m.ChunkSpan(n)
			d.bytes += l
		}
	}
	c.report(d.bytes, m.Size)

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	whole := make(chan wholeResult, 1)
	go func() { whole <- d.hashInOrder(ctx) }()

	var missing []int
	for n, ok := range done {
		if !ok {
			missing = append(missing, n)
		}
	}
	err = c.parallel(ctx, missing, d.fetch)
	if err != nil {
		cancel()
		<-whole
		return Manifest{}, fmt.Errorf("download %s: %w", id, err)
	}
	wr := <-whole
	if wr.err != nil {
		return Manifest{}, fmt.Errorf("download %s: %w", id, wr.err)
	}
	if wr.sum != m.SHA256 {
		_ = os.Remove(part)
		_ = os.Remove(progPath)
		return Manifest{}, fmt.Errorf("download %s: %w: the file has SHA-256 %s", id, ErrCorrupt, wr.sum)
	}
	if err := f.Sync(); err != nil {
		return Manifest{}, fmt.Errorf("download %s: %w", id, err)
	}
	if err := f.Close(); err != nil {
		return Manifest{}, fmt.Errorf("download %s: %w", id, err)
	}
	if err := os.Rename(part, dstPath); err != nil {
		return Manifest{}, fmt.Errorf("download %s: %w", id, err)
	}
	_ = os.Remove(progPath)
	return m, nil
}

// openPart opens (creating it when needed) the part file of m and returns
// which chunks it already holds, re-verified against m.
func openPart(part, progPath string, m Manifest) (*os.File, []bool, error) {
	done := make([]bool, len(m.Chunks))
	var prog downloadProgress
	body, err := os.ReadFile(progPath)
	resume := err == nil && json.Unmarshal(body, &prog) == nil &&
		prog.ID == m.ID && prog.Size == m.Size && prog.ChunkSize == m.ChunkSize && len(prog.Done) == len(m.Chunks)
	flags := os.O_RDWR | os.O_CREATE
	if !resume {
		flags |= os.O_TRUNC
	}
	f, err := os.OpenFile(part, flags, 0o640)
	if err != nil {
		return nil, nil, err
	}
	if err := f.Truncate(m.Size); err != nil {
		f.Close()
		return nil, nil, err
	}
	if resume {
		for n := range done {
			if prog.Done[n] != '1' {
				continue
			}
			off, l := m.ChunkSpan(n)
			sum, err := hashSection(f, off, l)
			done[n] = err == nil && sum == m.Chunks[n]
		}
	}
	return f, done, nil
}

type wholeResult struct {
	sum string
	err error
}

// download is one Download's shared state; mu guards done, bytes and the
// progress file.
type download struct {
	c        *Client
	m        Manifest
	f        *os.File
	progPath string

	mu      sync.Mutex
	done    []bool
	bytes   int64
	changed chan struct{} // a chunk got done (buffered, 1)
}

// fetch gets chunk n into the part file, with retries and refetches.
func (d *download) fetch(ctx context.Context, n int) error {
	corrupt := 0
	err := d.c.retry(ctx, fmt.Sprintf("chunk %d", n), func(ctx context.Context) error {
		err := d.fetchOnce(ctx, n)
		var ce *chunkError
		if errors.As(err, &ce) {
			corrupt++
			if corrupt > MaxChunkRefetch {
				return fmt.Errorf("%w: %v", ErrCorrupt, err) // not %w: no longer worth a retry
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	_, l := d.m.ChunkSpan(n)
	d.mu.Lock()
	d.done[n] = true
	d.bytes += l
	err = d.saveProgress()
	d.c.report(d.bytes, d.m.Size)
	d.mu.Unlock()
	select {
	case d.changed <- struct{}{}:
	default:
	}
	return err
}

func (d *download) fetchOnce(ctx context.Context, n int) error {
	if d.c.ChunkTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d.c.ChunkTimeout)
		defer cancel()
	}
	req, err := d.c.newRequest(ctx, http.MethodGet, d.c.route(PathChunk, d.m.ID, n), nil)
	if err != nil {
		return err
	}
	resp, err := d.c.do(req)
	if err != nil {
		return fmt.Errorf("get chunk %d: %w", n, err)
	}
	defer resp.Body.Close()
	off, length := d.m.ChunkSpan(n)
	h := sha256.New()
	cnt, err := copyPooled(io.MultiWriter(io.NewOffsetWriter(d.f, off), h), io.LimitReader(resp.Body, length+1))
	if err != nil {
		return fmt.Errorf("get chunk %d: %w", n, err)
	}
	if cnt < length {
		return fmt.Errorf("get chunk %d: %d of %d bytes: %w", n, cnt, length, io.ErrUnexpectedEOF)
	}
	got := hex.EncodeToString(h.Sum(nil))
	if cnt > length || got != d.m.Chunks[n] {
		return &chunkError{n: n, got: got, want: d.m.Chunks[n]}
	}
	return nil
}

// saveProgress records the done chunks beside the part file; d.mu is held.
// It is not synced: a restart re-verifies what it lists.
func (d *download) saveProgress() error {
	b := make([]byte, len(d.done))
	for i, ok := range d.done {
		b[i] = '0'
		if ok {
			b[i] = '1'
		}
	}
	body, err := json.Marshal(downloadProgress{ID: d.m.ID, Size: d.m.Size, ChunkSize: d.m.ChunkSize, Done: string(b)})
	if err != nil {
		return err
	}
	tmp := d.progPath + ".tmp"
	if err := os.WriteFile(tmp, body, 0o640); err != nil {
		return fmt.Errorf("record progress: %w", err)
	}
	if err := os.Rename(tmp, d.progPath); err != nil {
		return fmt.Errorf("record progress: %w", err)
	}
	return nil
}

// hashInOrder digests the part file chunk by chunk, in order, as chunks get
// done (reading them back, from the page cache as a rule), so that the
// whole-file digest is ready soon after the last chunk arrives.
func (d *download) hashInOrder(ctx context.Context) wholeResult {
	h := sha256.New()
	for n := range d.m.Chunks {
		for {
			d.mu.Lock()
			ok := d.done[n]
			d.mu.Unlock()
			if ok {
				break
			}
			select {
			case <-ctx.Done():
				return wholeResult{err: ctx.Err()}
			case <-d.changed:
			}
		}
		off, l := d.m.ChunkSpan(n)
		if _, err := copyPooled(h, io.NewSectionReader(d.f, off, l)); err != nil {
			return wholeResult{err: fmt.Errorf("digest chunk %d: %w", n, err)}
		}
	}
	return wholeResult{sum: hex.EncodeToString(h.Sum(nil))}
}

// parallel runs fn for every item on up to c.Parallel goroutines, which all
// end before it returns. The first error cancels the others and is returned.
func (c *Client) parallel(ctx context.Context, items []int, fn func(ctx context.Context, n int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan int)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		firstErr error
	)
	for range max(1, min(c.Parallel, len(items))) {
		wg.Go(func() {
			for n := range work {
				if err := fn(ctx, n); err != nil {
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
					cancel()
				}
			}
		})
	}
feed:
	for _, n := range items {
		select {
		case work <- n:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	if firstErr == nil {
		firstErr = ctx.Err()
	}
	return firstErr
}

func (c *Client) report(done, total int64) {
	if c.Progress != nil {
		c.Progress(done, total)
	}
}

// Upload sends the file at path to the FL server and returns its artifact
// id. The chunk digests are computed first, chunkSize chunks
// (DefaultChunkSize when 0) hashed in parallel; the upload is announced with
// the whole-file digest deferred, and that digest is computed on one more
// goroutine while the chunks are on the way. The server answers which chunks
// it is missing (only some when this client's earlier upload of the same
// file was interrupted), only those are sent, and the upload is completed
// with the whole-file digest. Transient failures are retried under c.Retry.
// Memory stays one copy buffer per worker whatever the file's size.
func (c *Client) Upload(ctx context.Context, path string, chunkSize int64) (string, error) {
	if chunkSize == 0 {
		chunkSize = DefaultChunkSize
	}
	f, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("upload: %w", err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", path, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// The whole-file digest runs beside everything below; it reads the file
	// once, in order, from the start.
	wholeDone := make(chan wholeResult, 1)
	go func() {
		h := sha256.New()
		n, err := copyPooled(h, io.NewSectionReader(ctxReaderAt{ctx, f}, 0, info.Size()))
		if err == nil && n != info.Size() {
			err = io.ErrUnexpectedEOF
		}
		wholeDone <- wholeResult{sum: hex.EncodeToString(h.Sum(nil)), err: err}
	}()
	chunks, err := ChunkDigests(ctx, f, info.Size(), chunkSize, runtime.GOMAXPROCS(0))
	if err != nil {
		return "", fmt.Errorf("upload %s: %w", path, err)
	}
	m := Manifest{Size: info.Size(), ChunkSize: chunkSize, Chunks: chunks}
	var st UploadState
	err = c.retry(ctx, "open upload", func(ctx context.Context) error {
		return c.callJSON(ctx, http.MethodPost, c.BaseURL+PathUploads, m, &st)
	})
	if err != nil {
		return "", fmt.Errorf("upload %s: open: %w", path, err)
	}
	// wholeSum waits for the whole-file digest once and keeps it in m.
	wholeSum := func() error {
		if m.SHA256 != "" {
			return nil
		}
		w := <-wholeDone
		if w.err != nil {
			return fmt.Errorf("upload %s: hash: %w", path, w.err)
		}
		m.SHA256 = w.sum
		return nil
	}
	for range 3 {
		if st.Artifact != "" {
			break
		}
		if err := c.sendChunks(ctx, f, m, st); err != nil {
			return "", fmt.Errorf("upload %s: %w", path, err)
		}
		if err := wholeSum(); err != nil {
			return "", err
		}
		var done Completed
		err = c.retry(ctx, "complete upload", func(ctx context.Context) error {
			return c.callJSON(ctx, http.MethodPost, c.route(PathComplete, st.ID, 0), CompleteRequest{SHA256: m.SHA256}, &done)
		})
		var he *HTTPError
		if errors.As(err, &he) && he.Status == http.StatusConflict && len(he.Missing) > 0 {
			st.Missing = he.Missing // the server lost chunks (it restarted mid-write): send them again
			continue
		}
		if err != nil {
			return "", fmt.Errorf("upload %s: complete: %w", path, err)
		}
		st.Artifact = done.Artifact
	}
	if err := wholeSum(); err != nil {
		return "", err
	}
	if st.Artifact != ArtifactID(m.SHA256) {
		return "", fmt.Errorf("upload %s: the server stored %q, the file is %s", path, st.Artifact, ArtifactID(m.SHA256))
	}
	return st.Artifact, nil
}

// sendChunks PUTs the chunks st misses.
func (c *Client) sendChunks(ctx context.Context, f io.ReaderAt, m Manifest, st UploadState) error {
	var mu sync.Mutex
	sent := m.Size
	for _, n := range st.Missing {
		if n < 0 || n >= len(m.Chunks) {
			return fmt.Errorf("the server asks for chunk %d of %d", n, len(m.Chunks))
		}
		_, l := m.ChunkSpan(n)
		sent -= l
	}
	c.report(sent, m.Size)
	return c.parallel(ctx, st.Missing, func(ctx context.Context, n int) error {
		err := c.retry(ctx, fmt.Sprintf("chunk %d", n), func(ctx context.Context) error {
			return c.putChunk(ctx, f, m, st.ID, n)
		})
		if err != nil {
			return err
		}
		_, l := m.ChunkSpan(n)
		mu.Lock()
		sent += l
		c.report(sent, m.Size)
		mu.Unlock()
		return nil
	})
}

func (c *Client) putChunk(ctx context.Context, f io.ReaderAt, m Manifest, uploadID string, n int) error {
	if c.ChunkTimeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.ChunkTimeout)
		defer cancel()
	}
	off, length := m.ChunkSpan(n)
	req, err := c.newRequest(ctx, http.MethodPut, c.route(PathUploadPart, uploadID, n), io.NopCloser(io.NewSectionReader(f, off, length)))
	if err != nil {
		return err
	}
	req.ContentLength = length
	if length == 0 {
		req.Body = http.NoBody
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set(HeaderChunkSHA256, m.Chunks[n])
	resp, err := c.do(req)
	if err != nil {
		return fmt.Errorf("put chunk %d: %w", n, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return nil
}
