package imagecache

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func zipOf(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = w.Write([]byte(body))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func serve(data []byte) Fetch {
	return func(_ context.Context, w io.Writer) error { _, err := w.Write(data); return err }
}

func key(acc string) Key {
	return Key{Net: "net-1", Project: "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b", Accession: acc, Assessor: "scan", Resource: "DICOM"}
}

func TestGetExtractsAndCaches(t *testing.T) {
	c, err := New(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	data := zipOf(t, map[string]string{"ACC1/scans/1/resources/DICOM/files/a.dcm": "A", "ACC1/scans/1/resources/DICOM/files/b.dcm": "B"})
	var fetches atomic.Int32
	fetch := func(ctx context.Context, w io.Writer) error { fetches.Add(1); return serve(data)(ctx, w) }
	dir, err := c.Get(context.Background(), key("ACC1"), false, fetch)
	if err != nil {
		t.Fatal(err)
	}
	if want := filepath.Join(c.Base(), "net-1", key("").Project, "ACC1"); dir != want {
		t.Errorf("dir %s, want %s", dir, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "scans/1/resources/DICOM/files/b.dcm")); err != nil || string(b) != "B" {
		t.Errorf("extracted file: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, SentinelPrefix+"scan-DICOM")); err != nil {
		t.Errorf("no completion marker: %v", err)
	}
	// A second request is served from the cache; force_refresh downloads again.
	if _, err := c.Get(context.Background(), key("ACC1"), false, fetch); err != nil || fetches.Load() != 1 {
		t.Errorf("cached request fetched again (%d fetches, %v)", fetches.Load(), err)
	}
	if _, err := c.Get(context.Background(), key("ACC1"), true, fetch); err != nil || fetches.Load() != 2 {
		t.Errorf("forced refresh: %d fetches, %v", fetches.Load(), err)
	}
	// No temporary debris is left next to the accession.
	entries, _ := os.ReadDir(filepath.Dir(dir))
	if len(entries) != 1 {
		t.Errorf("project dir holds %d entries, want only the accession", len(entries))
	}
}

func TestConcurrentRequestsDownloadOnce(t *testing.T) {
	c, _ := New(t.TempDir(), nil)
	data := zipOf(t, map[string]string{"x/f": "1"})
	var fetches atomic.Int32
	release := make(chan struct{})
	fetch := func(ctx context.Context, w io.Writer) error {
		fetches.Add(1)
		<-release
		return serve(data)(ctx, w)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Go(func() {
			_, err := c.Get(context.Background(), key("ACC2"), false, fetch)
			errs <- err
		})
	}
	time.Sleep(50 * time.Millisecond)
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if fetches.Load() != 1 {
		t.Errorf("%d downloads for one accession, want 1", fetches.Load())
	}
}

func TestRejectsBadKeysAndUnsafeArchives(t *testing.T) {
	c, _ := New(t.TempDir(), nil)
	for _, acc := range []string{"", ".", "..", "../x", "a/b", "a b", "ACC%2F", "ä"} {
		if _, err := c.Get(context.Background(), key(acc), false, serve(nil)); !errors.Is(err, ErrInvalidKey) {
			t.Errorf("accession %q: %v", acc, err)
		}
	}
	for name, entry := range map[string]string{"dotdot": "../../evil", "absolute": "/etc/evil", "nested": "a/../../evil", "backslash": "a\\..\\..\\evil"} {
		_, err := c.Get(context.Background(), key("ACC-"+name), false, serve(zipOf(t, map[string]string{entry: "x"})))
		if !errors.Is(err, ErrUnsafeZip) {
			t.Errorf("%s entry: %v", name, err)
		}
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(c.Base()), "evil")); err == nil {
		t.Fatal("a zip-slip entry was written outside the cache")
	}
	// A broken download leaves no marker, so the next request retries.
	_, err := c.Get(context.Background(), key("ACC3"), false, serve([]byte("not a zip")))
	if err == nil {
		t.Fatal("garbage accepted as a zip")
	}
	if _, err := c.Get(context.Background(), key("ACC3"), false, serve(zipOf(t, map[string]string{"f": "ok"}))); err != nil {
		t.Errorf("retry after a failed download: %v", err)
	}
}

func TestSweepRemovesOnlyExpired(t *testing.T) {
	c, _ := New(t.TempDir(), nil)
	data := zipOf(t, map[string]string{"x/f": "1"})
	for _, acc := range []string{"OLD", "NEW"} {
		if _, err := c.Get(context.Background(), key(acc), false, serve(data)); err != nil {
			t.Fatal(err)
		}
	}
	old, _ := c.Dir(key("OLD"))
	past := time.Now().Add(-48 * time.Hour)
	_ = os.Chtimes(filepath.Join(old, SentinelPrefix+"scan-DICOM"), past, past)
	_ = os.Chtimes(old, past, past)
	upload := filepath.Join(c.Base(), "net-1", "upload")
	_ = os.MkdirAll(upload, 0o755)
	_ = os.Chtimes(upload, past, past)
	st := c.Sweep(24 * time.Hour)
	if st.Accessions != 1 || st.Errors != 0 {
		t.Errorf("sweep %+v", st)
	}
	if _, err := os.Stat(old); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("expired accession kept")
	}
	newDir, _ := c.Dir(key("NEW"))
	if _, err := os.Stat(newDir); err != nil {
		t.Errorf("recent accession removed")
	}
	if _, err := os.Stat(upload); err != nil {
		t.Errorf("upload dir removed")
	}
	// A cache hit refreshes the last-used time.
	_ = os.Chtimes(filepath.Join(newDir, SentinelPrefix+"scan-DICOM"), past, past)
	_ = os.Chtimes(newDir, past, past)
	if _, err := c.Get(context.Background(), key("NEW"), false, serve(nil)); err != nil {
		t.Fatal(err)
	}
	if st := c.Sweep(24 * time.Hour); st.Accessions != 0 {
		t.Errorf("a just-used accession was swept")
	}
}
