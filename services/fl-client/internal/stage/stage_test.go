package stage

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/mesh"
)

var key = []byte(strings.Repeat("k", 32))

// services answers data-access-api's and imaging-api's routes the way those
// services do, checking fl-client's mesh key on every call.
func services(t *testing.T, imagesDir string, refuse bool, outside string) *httptest.Server {
	t.Helper()
	mux := http.NewServeMux()
	check := func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get(mesh.HeaderInternalKey) != string(key) {
			w.WriteHeader(http.StatusUnauthorized)
			return false
		}
		if refuse {
			w.WriteHeader(http.StatusForbidden)
			_, _ = w.Write([]byte(`{"detail":"Cohort is too small for row-level data to be released."}`))
			return false
		}
		return true
	}
	mux.HandleFunc("POST /cohort/dataframe", func(w http.ResponseWriter, r *http.Request) {
		if check(w, r) {
			w.Header().Set("Content-Type", "text/csv; charset=utf-8")
			_, _ = w.Write([]byte("person_id,age,outcome\n1,60,0\n2,71,1\n3,55,0\n"))
		}
	})
	mux.HandleFunc("POST /cohort/accession-ids", func(w http.ResponseWriter, r *http.Request) {
		if check(w, r) {
			_ = json.NewEncoder(w).Encode(map[string]any{"accession_ids": []string{"ACC1", "ACC2", "ACC1"}})
		}
	})
	mux.HandleFunc("POST /download/images/{net}", func(w http.ResponseWriter, r *http.Request) {
		if !check(w, r) {
			return
		}
		var body map[string]string
		_ = json.NewDecoder(r.Body).Decode(&body)
		dir := filepath.Join(imagesDir, r.PathValue("net"), "proj", body["accession_id"])
		if outside != "" {
			dir = outside
		}
		f := filepath.Join(dir, "scans", "1", "resources", r.URL.Query().Get("resource_type"), "files", "1.dcm")
		_ = os.MkdirAll(filepath.Dir(f), 0o750)
		_ = os.WriteFile(f, []byte("DICM"), 0o640)
		_ = os.WriteFile(filepath.Join(dir, ".flip_complete-scan-DICOM"), nil, 0o640)
		_ = json.NewEncoder(w).Encode(map[string]string{"path": dir})
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func stager(srv *httptest.Server, images string) *Stager {
	return &Stager{
		DataAccessURL: srv.URL, ImagingURL: srv.URL, ImagesDir: images, NetID: "net-1",
		Signer: mesh.NewSigner("fl-client", key), Mode: mesh.ModeKey, KeyHeader: mesh.HeaderInternalKey,
		HTTP: srv.Client(),
	}
}

func TestDataframeAndImages(t *testing.T) {
	t.Parallel()
	images := t.TempDir()
	srv := services(t, images, false, "")
	s := stager(srv, images)
	ws := t.TempDir()
	dst := filepath.Join(ws, "dataframe.csv")
	rows, err := s.Dataframe(context.Background(), flproto.DataRef{EncryptedProjectID: "sealed", Query: "SELECT 1"}, dst)
	if err != nil || rows != 3 {
		t.Fatalf("rows = %d, %v", rows, err)
	}
	if b, _ := os.ReadFile(dst); !strings.HasPrefix(string(b), "person_id,age,outcome\n") {
		t.Errorf("dataframe = %q", b)
	}
	n, err := s.Images(context.Background(), flproto.DataRef{EncryptedProjectID: "sealed"}, "", filepath.Join(ws, "images"))
	if err != nil || n != 2 {
		t.Fatalf("images = %d, %v", n, err)
	}
	for _, acc := range []string{"ACC1", "ACC2"} {
		p := filepath.Join(ws, "images", acc, "scans", "1", "resources", "DICOM", "files", "1.dcm")
		if b, err := os.ReadFile(p); err != nil || string(b) != "DICM" {
			t.Errorf("%s not staged: %v", acc, err)
		}
		if _, err := os.Stat(filepath.Join(ws, "images", acc, ".flip_complete-scan-DICOM")); err == nil {
			t.Errorf("%s: imaging-api's completion marker was staged", acc)
		}
	}
}

func TestRefusalsAndContainment(t *testing.T) {
	t.Parallel()
	images := t.TempDir()
	s := stager(services(t, images, true, ""), images)
	_, err := s.Dataframe(context.Background(), flproto.DataRef{}, filepath.Join(t.TempDir(), "d.csv"))
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "too small") {
		t.Errorf("refusal = %v", err)
	}
	outside := t.TempDir()
	s = stager(services(t, images, false, outside), images)
	_, err = s.Images(context.Background(), flproto.DataRef{}, "DICOM", filepath.Join(t.TempDir(), "images"))
	if err == nil || !strings.Contains(err.Error(), "outside IMAGES_DIR") {
		t.Errorf("a path outside IMAGES_DIR was staged: %v", err)
	}
	s.Signer = mesh.NewSigner("fl-client", []byte("short"))
	if _, err := s.Dataframe(context.Background(), flproto.DataRef{}, filepath.Join(t.TempDir(), "d.csv")); err == nil {
		t.Error("a call went out without usable mesh credentials")
	}
}
