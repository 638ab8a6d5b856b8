package flproto_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/flproto/cutproxy"
)

const chunk = flproto.MinChunkSize

var secrets = map[string]string{
	"Trust_1": "secret-of-trust-1-0123456789abcdef0123456789",
	"Trust_2": "secret-of-trust-2-0123456789abcdef0123456789",
}

// testServer is an FL server's artifact side over a directory, counting the
// chunk requests it serves.
type testServer struct {
	dir     string
	store   *flproto.ArtifactStore
	uploads *flproto.Uploads
	srv     *httptest.Server

	mu      sync.Mutex
	gets    map[int]int // GET chunk n
	puts    map[int]int // PUT chunk n
	corrupt map[int]int // chunk n is served with a flipped byte this many more times
}

func newTestServer(t *testing.T, dir string, maxSize int64) *testServer {
	t.Helper()
	store, err := flproto.NewArtifactStore(filepath.Join(dir, "artifacts"), chunk)
	if err != nil {
		t.Fatal(err)
	}
	uploads, err := flproto.NewUploads(filepath.Join(dir, "uploads"), store, maxSize)
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{dir: dir, store: store, uploads: uploads, gets: map[int]int{}, puts: map[int]int{}, corrupt: map[int]int{}}
	digests := map[string][sha256.Size]byte{}
	for name, s := range secrets {
		digests[name] = flproto.HashSecret(s)
	}
	auth := flproto.NewAuthenticator(digests)
	r := chi.NewRouter()
	r.Use(ts.count, auth.Middleware)
	flproto.NewArtifactHandler(store, uploads).Routes(r)
	ts.srv = httptest.NewServer(r)
	t.Cleanup(ts.srv.Close)
	return ts
}

func chunkOf(path string) (int, bool) {
	i := strings.LastIndex(path, "/chunks/")
	if i < 0 {
		return 0, false
	}
	n, err := strconv.Atoi(path[i+len("/chunks/"):])
	return n, err == nil
}

func (ts *testServer) count(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n, ok := chunkOf(r.URL.Path); ok {
			ts.mu.Lock()
			flip := false
			if r.Method == http.MethodGet {
				ts.gets[n]++
				if ts.corrupt[n] > 0 {
					ts.corrupt[n]--
					flip = true
				}
			} else {
				ts.puts[n]++
			}
			ts.mu.Unlock()
			if flip {
				w = &flipWriter{ResponseWriter: w}
			}
		}
		next.ServeHTTP(w, r)
	})
}

// flipWriter flips the first byte of the body it writes.
type flipWriter struct {
	http.ResponseWriter
	done bool
}

func (f *flipWriter) Write(p []byte) (int, error) {
	if !f.done && len(p) > 0 {
		f.done = true
		q := append([]byte(nil), p...)
		q[0] ^= 0xff
		return f.ResponseWriter.Write(q)
	}
	return f.ResponseWriter.Write(p)
}

func (ts *testServer) requests() (gets, puts int) {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	for _, c := range ts.gets {
		gets += c
	}
	for _, c := range ts.puts {
		puts += c
	}
	return gets, puts
}

func (ts *testServer) restart(t *testing.T, maxSize int64) *testServer {
	t.Helper()
	ts.srv.Close()
	return newTestServer(t, ts.dir, maxSize)
}

func newClient(base, name string) *flproto.Client {
	c := flproto.NewClient(base, name, secrets[name], &http.Client{Timeout: 20 * time.Second})
	c.Retry = flproto.RetryPolicy{Initial: time.Millisecond, Max: 10 * time.Millisecond, Attempts: 10}
	return c
}

func randomFile(t *testing.T, dir, name string, size int, seed uint64) (string, []byte) {
	t.Helper()
	data := make([]byte, size)
	r := rand.New(rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8)}))
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, data
}

func idOf(data []byte) string {
	s := sha256.Sum256(data)
	return flproto.ArtifactID(hex.EncodeToString(s[:]))
}

func sameFile(t *testing.T, path string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: %d bytes differ from the %d expected", path, len(got), len(want))
	}
	for _, sfx := range []string{flproto.PartSuffix, flproto.ProgressSuffix} {
		if _, err := os.Stat(path + sfx); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("%s%s left behind (%v)", path, sfx, err)
		}
	}
}

func TestRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		size int
	}{
		{"empty", 0},
		{"one byte", 1},
		{"one exact chunk", chunk},
		{"many chunks and a tail", 7*chunk + 123},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			ts := newTestServer(t, dir, 0)
			path, data := randomFile(t, dir, "update.bin", tc.size, uint64(tc.size))

			up := newClient(ts.srv.URL, "Trust_1")
			id, err := up.Upload(context.Background(), path, chunk)
			if err != nil {
				t.Fatal(err)
			}
			if id != idOf(data) {
				t.Fatalf("upload id %s, want %s", id, idOf(data))
			}
			if !ts.store.Has(id) {
				t.Fatal("the store does not hold the upload")
			}

			// Another client downloads it; then the store's own Put of the same bytes is the same artifact.
			var last, total int64
			down := newClient(ts.srv.URL, "Trust_2")
			down.Progress = func(done, tot int64) { last, total = done, tot }
			dst := filepath.Join(dir, "model.bin")
			m, err := down.Download(context.Background(), id, dst)
			if err != nil {
				t.Fatal(err)
			}
			sameFile(t, dst, data)
			if m.Size != int64(tc.size) || len(m.Chunks) != flproto.ChunkCount(int64(tc.size), chunk) || m.ID != id {
				t.Fatalf("manifest %+v", m)
			}
			if last != int64(tc.size) || total != int64(tc.size) {
				t.Fatalf("progress ended at %d/%d", last, total)
			}
			pm, err := ts.store.Put(context.Background(), bytes.NewReader(data))
			if err != nil || pm.ID != id {
				t.Fatalf("put: %v %+v", err, pm)
			}
		})
	}
}

func TestStoreRefusesBadIDs(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	if err := os.WriteFile(filepath.Join(dir, "secret.json"), []byte(`{"id":"x"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"", "sha256:", "../secret", "sha256:../../secret", "sha256:" + strings.Repeat("A", 64), "md5:" + strings.Repeat("a", 64), "sha256:" + strings.Repeat("a", 63) + "/"} {
		if _, err := ts.store.Manifest(id); !errors.Is(err, flproto.ErrBadID) {
			t.Errorf("Manifest(%q): %v, want ErrBadID", id, err)
		}
		if _, _, err := ts.store.Open(id); !errors.Is(err, flproto.ErrBadID) {
			t.Errorf("Open(%q): %v, want ErrBadID", id, err)
		}
		if ts.store.Has(id) {
			t.Errorf("Has(%q)", id)
		}
	}
	if _, err := ts.store.Manifest("sha256:" + strings.Repeat("a", 64)); !errors.Is(err, flproto.ErrNotFound) {
		t.Errorf("unknown artifact: %v", err)
	}
	for _, path := range []string{
		"/fl/v1/artifacts/..%2F..%2Fsecret",
		"/fl/v1/artifacts/sha256:..%2F..%2Fsecret",
		"/fl/v1/artifacts/sha256:..%2F..%2Fsecret/chunks/0",
		"/fl/v1/uploads/..%2F..%2Fartifacts",
	} {
		resp := call(t, ts, "Trust_1", http.MethodGet, path, nil, nil)
		if resp.status != http.StatusBadRequest && resp.status != http.StatusNotFound {
			t.Errorf("GET %s: %d %s", path, resp.status, resp.body)
		}
	}
}

func TestDownloadSurvivesThreeCuts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	_, data := randomFile(t, dir, "model.src", 40*chunk+7, 3)
	m, err := ts.store.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := cutproxy.New(strings.TrimPrefix(ts.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.CutEvery(int64(len(data))/4+chunk/2, 3) // mid-chunk, three times

	c := newClient(proxy.URL(), "Trust_1")
	c.Parallel = 3
	dst := filepath.Join(dir, "model.bin")
	if _, err := c.Download(context.Background(), m.ID, dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, dst, data)
	if proxy.Cuts() != 3 {
		t.Fatalf("the proxy cut %d times, want 3", proxy.Cuts())
	}
	if gets, _ := ts.requests(); gets <= len(m.Chunks) || gets > len(m.Chunks)+3*c.Parallel {
		t.Fatalf("%d chunk requests for %d chunks and 3 cuts", gets, len(m.Chunks))
	}
}

func TestUploadSurvivesThreeCuts(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	path, data := randomFile(t, dir, "update.bin", 40*chunk+7, 4)
	proxy, err := cutproxy.New(strings.TrimPrefix(ts.srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	proxy.CutEvery(int64(len(data))/4+chunk/2, 3)

	c := newClient(proxy.URL(), "Trust_1")
	id, err := c.Upload(context.Background(), path, chunk)
	if err != nil {
		t.Fatal(err)
	}
	if proxy.Cuts() != 3 {
		t.Fatalf("the proxy cut %d times, want 3", proxy.Cuts())
	}
	f, m, err := ts.store.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, data) || m.ID != idOf(data) {
		t.Fatal("the stored artifact differs from the file")
	}
	if _, puts := ts.requests(); puts <= len(m.Chunks) || puts > len(m.Chunks)+3*c.Parallel {
		t.Fatalf("%d chunk uploads for %d chunks and 3 cuts", puts, len(m.Chunks))
	}
}

// stopAt returns a Progress that cancels once done reaches at bytes.
func stopAt(at int64, cancel context.CancelFunc) flproto.Progress {
	return func(done, _ int64) {
		if done >= at {
			cancel()
		}
	}
}

func TestDownloadResumesAfterClientAndServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	_, data := randomFile(t, dir, "model.src", 32*chunk, 5)
	m, err := ts.store.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	dst := filepath.Join(dir, "model.bin")

	// The first run stops (the process dies) after about half the chunks.
	ctx, cancel := context.WithCancel(context.Background())
	c := newClient(ts.srv.URL, "Trust_1")
	c.Progress = stopAt(int64(len(data))/2, cancel)
	if _, err := c.Download(ctx, m.ID, dst); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted download: %v", err)
	}
	cancel()
	first, _ := ts.requests()
	if _, err := os.Stat(dst + flproto.PartSuffix); err != nil {
		t.Fatal(err)
	}
	// A chunk recorded as done is damaged on disk meanwhile.
	part, err := os.OpenFile(dst+flproto.PartSuffix, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := part.WriteAt([]byte("damage"), chunk+10); err != nil {
		t.Fatal(err)
	}
	part.Close()

	// The server restarts over the same directory, and a new client resumes.
	ts = ts.restart(t, 0)
	c = newClient(ts.srv.URL, "Trust_1")
	if _, err := c.Download(context.Background(), m.ID, dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, dst, data)
	second, _ := ts.requests()
	if first >= len(m.Chunks) || first+second > len(m.Chunks)+c.Parallel+1 {
		t.Fatalf("%d chunk requests before the restart and %d after, for %d chunks", first, second, len(m.Chunks))
	}
	ts.mu.Lock()
	again := ts.gets[1]
	ts.mu.Unlock()
	if again != 1 {
		t.Fatalf("the damaged chunk 1 was fetched %d times after the restart, want 1", again)
	}
}

func TestUploadResumesAfterClientAndServerRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	path, data := randomFile(t, dir, "update.bin", 32*chunk+1000, 6)

	ctx, cancel := context.WithCancel(context.Background())
	c := newClient(ts.srv.URL, "Trust_1")
	c.Progress = stopAt(int64(len(data))/2, cancel)
	if _, err := c.Upload(ctx, path, chunk); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted upload: %v", err)
	}
	cancel()
	_, first := ts.requests()

	ts = ts.restart(t, 0)
	c = newClient(ts.srv.URL, "Trust_1")
	id, err := c.Upload(context.Background(), path, chunk)
	if err != nil {
		t.Fatal(err)
	}
	_, second := ts.requests()
	total := flproto.ChunkCount(int64(len(data)), chunk)
	if first >= total || second >= total || first+second > total+c.Parallel {
		t.Fatalf("%d chunk uploads before the restart and %d after, for %d chunks", first, second, total)
	}
	f, _, err := ts.store.Open(id)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, data) {
		t.Fatal("the stored artifact differs from the file")
	}

	// Uploading it again sends nothing: the server has the artifact.
	if _, err := c.Upload(context.Background(), path, chunk); err != nil {
		t.Fatal(err)
	}
	if _, third := ts.requests(); third != second {
		t.Fatalf("a repeated upload sent %d chunks", third-second)
	}
}

func TestCorruptChunkIsFetchedAgain(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	_, data := randomFile(t, dir, "model.src", 4*chunk, 7)
	m, err := ts.store.Put(context.Background(), bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	c := newClient(ts.srv.URL, "Trust_1")

	ts.corrupt[2] = 2
	dst := filepath.Join(dir, "ok.bin")
	if _, err := c.Download(context.Background(), m.ID, dst); err != nil {
		t.Fatal(err)
	}
	sameFile(t, dst, data)
	if ts.gets[2] != 3 {
		t.Fatalf("chunk 2 fetched %d times, want 3", ts.gets[2])
	}

	ts.mu.Lock()
	ts.corrupt[1], ts.gets[1] = 100, 0
	ts.mu.Unlock()
	_, err = c.Download(context.Background(), m.ID, filepath.Join(dir, "bad.bin"))
	if !errors.Is(err, flproto.ErrCorrupt) {
		t.Fatalf("always-corrupt chunk: %v", err)
	}
	ts.mu.Lock()
	defer ts.mu.Unlock()
	if ts.gets[1] != 1+flproto.MaxChunkRefetch {
		t.Fatalf("chunk 1 fetched %d times, want %d", ts.gets[1], 1+flproto.MaxChunkRefetch)
	}
}

type answer struct {
	status int
	body   string
}

func call(t *testing.T, ts *testServer, client, method, path string, body []byte, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, ts.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if client != "" {
		req.Header.Set(flproto.HeaderClient, client)
		req.Header.Set("Authorization", "Bearer "+secrets[client])
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, string(b)}
}

func TestRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 10*chunk)
	_, data := randomFile(t, dir, "update.bin", 3*chunk, 8)
	m, err := flproto.ManifestOf(bytes.NewReader(data), chunk)
	if err != nil {
		t.Fatal(err)
	}
	announce, _ := json.Marshal(m)
	open := call(t, ts, "Trust_1", http.MethodPost, flproto.PathUploads, announce, nil)
	if open.status != http.StatusOK {
		t.Fatalf("open: %d %s", open.status, open.body)
	}
	var st flproto.UploadState
	if err := json.Unmarshal([]byte(open.body), &st); err != nil || len(st.Missing) != 3 {
		t.Fatalf("open: %s (%v)", open.body, err)
	}
	again := call(t, ts, "Trust_1", http.MethodPost, flproto.PathUploads, announce, nil)
	if !strings.Contains(again.body, st.ID) {
		t.Fatalf("the same client announcing the same file got another upload: %s", again.body)
	}
	if other := call(t, ts, "Trust_2", http.MethodPost, flproto.PathUploads, announce, nil); strings.Contains(other.body, st.ID) {
		t.Fatalf("another client got the same upload: %s", other.body)
	}
	upload := "/fl/v1/uploads/" + st.ID
	digest := map[string]string{flproto.HeaderChunkSHA256: m.Chunks[0]}
	tooBig := m
	tooBig.Size, tooBig.Chunks = 11*chunk, make([]string, 11)
	for i := range tooBig.Chunks {
		tooBig.Chunks[i] = m.Chunks[0]
	}
	tooBigBody, _ := json.Marshal(tooBig)
	badManifest := m
	badManifest.Chunks = m.Chunks[:2]
	badManifestBody, _ := json.Marshal(badManifest)

	for _, tc := range []struct {
		name         string
		client       string
		method, path string
		body         []byte
		hdr          map[string]string
		want         int
	}{
		{"no credentials", "", http.MethodGet, upload, nil, nil, 401},
		{"wrong secret", "", http.MethodGet, upload, nil, map[string]string{flproto.HeaderClient: "Trust_1", "Authorization": "Bearer " + secrets["Trust_2"]}, 401},
		{"unknown client", "", http.MethodGet, upload, nil, map[string]string{flproto.HeaderClient: "Trust_9", "Authorization": "Bearer " + secrets["Trust_1"]}, 401},
		{"no bearer", "", http.MethodGet, upload, nil, map[string]string{flproto.HeaderClient: "Trust_1", "Authorization": secrets["Trust_1"]}, 401},
		{"another client's upload", "Trust_2", http.MethodGet, upload, nil, nil, 404},
		{"another client's chunk", "Trust_2", http.MethodPut, upload + "/chunks/0", data[:chunk], digest, 404},
		{"another client's complete", "Trust_2", http.MethodPost, upload + "/complete", nil, nil, 404},
		{"wrong bytes", "Trust_1", http.MethodPut, upload + "/chunks/0", data[chunk : 2*chunk], digest, 400},
		{"wrong digest header", "Trust_1", http.MethodPut, upload + "/chunks/1", data[chunk : 2*chunk], digest, 400},
		{"short chunk", "Trust_1", http.MethodPut, upload + "/chunks/0", data[:chunk-1], digest, 400},
		{"no such chunk", "Trust_1", http.MethodPut, upload + "/chunks/3", data[:chunk], digest, 400},
		{"over the limit", "Trust_1", http.MethodPost, flproto.PathUploads, tooBigBody, nil, 413},
		{"inconsistent manifest", "Trust_1", http.MethodPost, flproto.PathUploads, badManifestBody, nil, 400},
		{"complete with chunks missing", "Trust_1", http.MethodPost, upload + "/complete", nil, nil, 409},
		{"unknown artifact", "Trust_1", http.MethodGet, "/fl/v1/artifacts/sha256:" + strings.Repeat("0", 64), nil, nil, 404},
		{"good chunk", "Trust_1", http.MethodPut, upload + "/chunks/0", data[:chunk], digest, 204},
	} {
		got := call(t, ts, tc.client, tc.method, tc.path, tc.body, tc.hdr)
		if got.status != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, got.status, got.body, tc.want)
			continue
		}
		if got.status >= 400 {
			var p flproto.Problem
			if err := json.Unmarshal([]byte(got.body), &p); err != nil || p.Detail == "" {
				t.Errorf("%s: body %q is not {\"detail\": ...}", tc.name, got.body)
			}
			if tc.want == 409 && !slicesEqual(p.Missing, []int{0, 1, 2}) {
				t.Errorf("%s: missing %v", tc.name, p.Missing)
			}
		}
	}
	state := call(t, ts, "Trust_1", http.MethodGet, upload, nil, nil)
	if !strings.Contains(state.body, `"missing":[1,2]`) {
		t.Fatalf("state after one good chunk: %s", state.body)
	}

	// The client sees a refusal as *HTTPError with the server's detail.
	c := newClient(ts.srv.URL, "Trust_1")
	big, _ := randomFile(t, dir, "big.bin", 11*chunk, 9)
	_, err = c.Upload(context.Background(), big, chunk)
	var he *flproto.HTTPError
	if !errors.As(err, &he) || he.Status != http.StatusRequestEntityTooLarge || he.Detail == "" {
		t.Fatalf("upload over the limit: %v", err)
	}
	c.Secret = "wrong"
	_, err = c.Download(context.Background(), "sha256:"+strings.Repeat("0", 64), filepath.Join(dir, "x"))
	if !errors.As(err, &he) || he.Status != http.StatusUnauthorized {
		t.Fatalf("download with a wrong secret: %v", err)
	}
}

func slicesEqual(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestUploadsOutOfOrderAndWholeDigest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	ctx := context.Background()
	_, data := randomFile(t, dir, "update.bin", 6*chunk+99, 10)
	m, err := flproto.ManifestOf(bytes.NewReader(data), chunk)
	if err != nil {
		t.Fatal(err)
	}
	put := func(client string, st flproto.UploadState, order []int) {
		t.Helper()
		for _, n := range order {
			off, l := m.ChunkSpan(n)
			if err := ts.uploads.PutChunk(ctx, client, st.ID, n, m.Chunks[n], bytes.NewReader(data[off:off+l])); err != nil {
				t.Fatal(err)
			}
		}
	}

	// Chunks in a scrambled order still add up to the announced file.
	st, err := ts.uploads.Open(ctx, "Trust_1", m)
	if err != nil {
		t.Fatal(err)
	}
	put("Trust_1", st, []int{3, 1, 0, 6, 2, 5, 4})
	id, err := ts.uploads.Complete(ctx, "Trust_1", st.ID, "")
	if err != nil || id != idOf(data) {
		t.Fatalf("complete: %v %s", err, id)
	}

	// Chunk digests that are right but a whole-file digest that is not.
	lie := m
	lie.SHA256 = strings.Repeat("ab", 32)
	lie.ID = ""
	st, err = ts.uploads.Open(ctx, "Trust_2", lie)
	if err != nil {
		t.Fatal(err)
	}
	put("Trust_2", st, []int{0, 1, 2, 3, 4, 5, 6})
	if _, err := ts.uploads.Complete(ctx, "Trust_2", st.ID, ""); !errors.Is(err, flproto.ErrDigest) {
		t.Fatalf("complete of a file that is not the announced one: %v", err)
	}
	if ts.store.Has(flproto.ArtifactID(lie.SHA256)) {
		t.Fatal("the store took a file under a digest it does not have")
	}
	if _, err := ts.uploads.State(ctx, "Trust_2", st.ID); !errors.Is(err, flproto.ErrNotFound) {
		t.Fatalf("the refused upload is still open: %v", err)
	}
}

// A client registered after the authenticator was built is admitted at once
// by one built with NewAuthenticatorFunc; a removed one is refused.
func TestAuthenticatorFuncSeesNewClients(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	clients := map[string][32]byte{}
	auth := flproto.NewAuthenticatorFunc(func() map[string][32]byte {
		mu.Lock()
		defer mu.Unlock()
		out := make(map[string][32]byte, len(clients))
		for k, v := range clients {
			out[k] = v
		}
		return out
	})
	req := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/fl/v1/tasks/next", nil)
		r.Header.Set(flproto.HeaderClient, "Trust_9")
		r.Header.Set("Authorization", "Bearer "+strings.Repeat("z", 40))
		return r
	}
	if _, err := auth.Authenticate(req()); err == nil {
		t.Fatal("an unregistered client was admitted")
	}
	mu.Lock()
	clients["Trust_9"] = flproto.HashSecret(strings.Repeat("z", 40))
	mu.Unlock()
	if name, err := auth.Authenticate(req()); err != nil || name != "Trust_9" {
		t.Fatalf("registered client: %q, %v", name, err)
	}
	mu.Lock()
	delete(clients, "Trust_9")
	mu.Unlock()
	if _, err := auth.Authenticate(req()); err == nil {
		t.Fatal("a removed client was admitted")
	}
}

// An upload announced with its whole-file digest deferred is completed with
// the digest: a missing or wrong one is refused, a lying one drops the
// upload, and announcing the same chunks again finds the open upload.
func TestUploadsDeferredDigest(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	ts := newTestServer(t, dir, 0)
	ctx := context.Background()
	_, data := randomFile(t, dir, "update.bin", 5*chunk+7, 11)
	full, err := flproto.ManifestOf(bytes.NewReader(data), chunk)
	if err != nil {
		t.Fatal(err)
	}
	chunks, err := flproto.ChunkDigests(ctx, bytes.NewReader(data), int64(len(data)), chunk, 3)
	if err != nil || len(chunks) != len(full.Chunks) {
		t.Fatalf("chunk digests: %v (%d of %d)", err, len(chunks), len(full.Chunks))
	}
	for i := range chunks {
		if chunks[i] != full.Chunks[i] {
			t.Fatalf("chunk %d: parallel digest %s, sequential %s", i, chunks[i], full.Chunks[i])
		}
	}
	announce := flproto.Manifest{Size: full.Size, ChunkSize: chunk, Chunks: chunks}
	upload := func(client string) flproto.UploadState {
		t.Helper()
		st, err := ts.uploads.Open(ctx, client, announce)
		if err != nil {
			t.Fatal(err)
		}
		for n := range chunks {
			off, l := announce.ChunkSpan(n)
			if err := ts.uploads.PutChunk(ctx, client, st.ID, n, chunks[n], bytes.NewReader(data[off:off+l])); err != nil {
				t.Fatal(err)
			}
		}
		return st
	}

	st := upload("Trust_1")
	if again, err := ts.uploads.Open(ctx, "Trust_1", announce); err != nil || again.ID != st.ID {
		t.Fatalf("announcing the same chunks again: %v, id %s, want %s", err, again.ID, st.ID)
	}
	if _, err := ts.uploads.Complete(ctx, "Trust_1", st.ID, ""); !errors.Is(err, flproto.ErrInvalid) {
		t.Fatalf("complete without the deferred digest: %v", err)
	}
	id, err := ts.uploads.Complete(ctx, "Trust_1", st.ID, full.SHA256)
	if err != nil || id != idOf(data) || !ts.store.Has(id) {
		t.Fatalf("complete with the digest: %v %s", err, id)
	}

	st = upload("Trust_2")
	lie := strings.Repeat("cd", 32)
	if _, err := ts.uploads.Complete(ctx, "Trust_2", st.ID, lie); !errors.Is(err, flproto.ErrDigest) {
		t.Fatalf("complete with a digest the file does not have: %v", err)
	}
	if ts.store.Has(flproto.ArtifactID(lie)) {
		t.Fatal("the store took a file under a digest it does not have")
	}
	if _, err := ts.uploads.State(ctx, "Trust_2", st.ID); !errors.Is(err, flproto.ErrNotFound) {
		t.Fatalf("the refused upload is still open: %v", err)
	}

	// An announced digest cannot be replaced at completion.
	st, err = ts.uploads.Open(ctx, "Trust_2", full)
	if err != nil {
		t.Fatal(err)
	}
	if st.Artifact != idOf(data) {
		t.Fatalf("a stored artifact announced again: %+v", st)
	}
	other := full
	other.SHA256, other.ID = strings.Repeat("ef", 32), ""
	st, err = ts.uploads.Open(ctx, "Trust_2", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ts.uploads.Complete(ctx, "Trust_2", st.ID, full.SHA256); !errors.Is(err, flproto.ErrInvalid) {
		t.Fatalf("completing with a digest other than the announced one: %v", err)
	}
}
