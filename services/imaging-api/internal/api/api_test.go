package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/cohortids"
	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/services/imaging-api/internal/projects"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
)

const (
	key    = "internal-service-key-0123456789abcdef0123"
	aesKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	hubID  = "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	trust  = "5b0c8e4a-1d2f-4e3a-9b7c-6d5e4f3a2b1c"
)

// The PACS holds ACC-1 (CT, 2 series x 3) and ACC-2 (MR, 1 x 4); the
// cohort also names ACC-3, which the PACS does not have.
var pacsStudies = []dicomgen.Study{
	{PatientID: "P1", AccessionNumber: "ACC-1", Modality: "CT", Series: 2, PerSeries: 3},
	{PatientID: "P2", AccessionNumber: "ACC-2", Modality: "MR", Series: 1, PerSeries: 4},
}

type stage struct {
	t     *testing.T
	url   string
	pair  *orthanctest.Pair
	oc    *orthanc.Client
	imp   *importer.Importer
	cache *imagecache.Cache
	api   *api.API
	reg   *projects.Store
	small atomic.Bool
	down  atomic.Bool
	hits  atomic.Int32
	// refused counts the requests answered 503 while down.
	refused atomic.Int32
}

func newStage(t *testing.T) *stage {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pair.Close)
	up := &dicomgen.Uploader{URL: pair.PACS.URL, User: pair.PACS.User, Password: pair.PACS.Password}
	if _, err := up.UploadStudies(ctx, slices.Values(pacsStudies), 4, nil); err != nil {
		t.Fatal(err)
	}
	s := &stage{t: t, pair: pair}
	s.oc, err = orthanc.New(orthanc.Config{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password, DIMSETimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cipher, _ := envelope.NewFromBase64(aesKey)
	// data-access-api: releases the frozen cohort's accession ids over the mesh.
	dapi := httptest.NewServer(mesh.NewVerifier("data-access-api", []byte(key), mesh.HeaderInternalKey, logging.Discard()).
		Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		if pid, err := cipher.Open(in["encrypted_project_id"], envelope.ProjectIDContext); err != nil || string(pid) != hubID {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if s.small.Load() {
			w.WriteHeader(http.StatusForbidden)
			return
		}
		if s.down.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			s.refused.Add(1)
			return
		}
		_, _ = w.Write([]byte(`{"accession_ids":["ACC-1","ACC-2","ACC-3"]}`))
	})))
	t.Cleanup(dapi.Close)

	dir := t.TempDir()
	reg, err := projects.Open(filepath.Join(dir, "projects.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s.reg = reg
	backend := &native.Backend{Orthanc: s.oc, PACS: orthanctest.PACSAET, StagingAET: orthanctest.StagingAET}
	s.imp, err = importer.Open(importer.Options{Path: filepath.Join(dir, "imports.db"), Concurrency: 2, MaxAttempts: 2,
		BackoffMin: 50 * time.Millisecond, BackoffMax: 100 * time.Millisecond, StallTimeout: time.Minute}, backend)
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	s.imp.Start(runCtx)
	t.Cleanup(func() { stop(); _ = s.imp.Close() })
	s.cache, err = imagecache.New(filepath.Join(dir, "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := httpx.NewServer(httpx.DefaultConfig(":0"), nil, nil, nil)
	s.api = api.New(api.Options{
		Projects: reg, Importer: s.imp, Orthanc: s.oc, PACS: orthanctest.PACSAET, StagingAET: orthanctest.StagingAET,
		Cohorts: cohortids.New(dapi.URL, cipher, mesh.NewSigner("imaging-api", []byte(key)), mesh.ModeJWT, mesh.HeaderInternalKey),
		Cache:   s.cache, Cipher: cipher, ReimportEnabled: true,
		Verifier: mesh.NewVerifier("imaging-api", []byte(key), mesh.HeaderInternalKey, logging.Discard()),
	})
	s.api.Mount(srv.Router())
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	s.url = hs.URL
	return s
}

func (s *stage) do(method, path string, body any, out any) int {
	s.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, s.url+path, rd)
	req.Header.Set(mesh.HeaderInternalKey, key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && resp.StatusCode < 300 {
		if err := json.Unmarshal(raw, out); err != nil {
			s.t.Fatalf("%s %s: %s: %v", method, path, raw, err)
		}
	}
	if resp.StatusCode >= 300 && out == nil {
		s.t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	return resp.StatusCode
}

func encodedQuery() string {
	return base64.RawURLEncoding.EncodeToString([]byte("SELECT accession_id FROM image_occurrence"))
}

func (s *stage) status(id string) importer.Counts {
	s.t.Helper()
	var pr api.ProjectRetrieval
	if code := s.do(http.MethodGet, "/retrieval/import_status_count/"+id+"?encoded_query="+encodedQuery(), nil, &pr); code != 200 {
		s.t.Fatalf("status: %d", code)
	}
	return pr.ImportStatus
}

func hubProject() map[string]any {
	return map[string]any{"project_id": hubID, "trust_id": trust, "project_name": "Spleen",
		"query": "SELECT accession_id FROM image_occurrence", "users": []map[string]any{{"id": trust, "email": "a@b.org"}}}
}

// A hub project is provisioned once, its cohort imported completely from the
// PACS into staging, the status counts follow FLIP's rules, a study is
// downloaded for an FL job, and the project's deletion empties staging.
func TestProvisionImportStatusDownloadDelete(t *testing.T) {
	s := newStage(t)
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	var again api.CreatedProject
	s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &again)
	if again.ID != created.ID || !strings.HasSuffix(created.Name, hubID+"-FL-Project") {
		t.Fatalf("provisioning is not idempotent: %s then %s (%s)", created.ID, again.ID, created.Name)
	}
	deadline := time.Now().Add(30 * time.Second)
	var c importer.Counts
	for {
		c = s.status(created.ID)
		if c.Successful == 2 && c.QueueFailed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import did not finish: %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c.Failed+c.Processing+c.Queued != 0 {
		t.Errorf("counts %+v", c)
	}
	stats, err := s.pair.Staging.Stats(context.Background())
	if err != nil || stats.CountStudies != 2 || stats.CountInstances != 10 {
		t.Errorf("staging holds %+v (%v), want 2 studies and 10 instances", stats, err)
	}

	// Download ACC-1 as DICOM for an FL job on net-1.
	cipher, _ := envelope.NewFromBase64(aesKey)
	enc, _ := cipher.Seal([]byte(hubID), envelope.ProjectIDContext)
	var got struct{ Path string }
	body := map[string]string{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-1"}
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=DICOM", body, &got); code != 200 {
		t.Fatalf("download: %d", code)
	}
	if got.Path != filepath.Join(s.cache.Base(), "net-1", hubID, "ACC-1") {
		t.Errorf("path %s", got.Path)
	}
	files, _ := filepath.Glob(filepath.Join(got.Path, "scans", "*", "resources", "DICOM", "files", "*"))
	scans, _ := filepath.Glob(filepath.Join(got.Path, "scans", "*"))
	if len(files) != 6 || len(scans) != 2 {
		t.Errorf("downloaded %d files in %d scans, want 6 in 2", len(files), len(scans))
	}
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil || len(b) < 132 || string(b[128:132]) != "DICM" {
			t.Errorf("%s is not a DICOM file", f)
		}
	}
	// NIfTI, converted by dcm2niix, one volume per series.
	var nifti struct{ Path string }
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=NIFTI", body, &nifti); code != 200 {
		t.Fatalf("NIfTI download: %d", code)
	}
	volumes, _ := filepath.Glob(filepath.Join(nifti.Path, "scans", "*", "resources", "NIFTI", "files", "*.nii.gz"))
	if len(volumes) != 2 {
		t.Errorf("%d NIfTI volumes, want one per series (2)", len(volumes))
	}
	for name, b := range map[string]map[string]string{
		"not imported": {"encrypted_central_hub_project_id": enc, "accession_id": "ACC-3"},
		"traversal":    {"encrypted_central_hub_project_id": enc, "accession_id": "../x"},
		"tampered":     {"encrypted_central_hub_project_id": enc[:10] + "A" + enc[11:], "accession_id": "ACC-1"},
	} {
		if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=DICOM", b, nil); code < 400 || code >= 500 {
			t.Errorf("%s download: %d", name, code)
		}
	}

	// Below the floor: status refused with FLIP's 403.
	s.small.Store(true)
	if code := s.do(http.MethodGet, "/retrieval/import_status_count/"+created.ID+"?encoded_query="+encodedQuery(), nil, nil); code != 403 {
		t.Errorf("status below the floor: %d", code)
	}
	s.small.Store(false)

	var deleted api.Project
	if code := s.do(http.MethodDelete, "/projects/"+created.ID, nil, &deleted); code != 200 || deleted.ID != created.ID {
		t.Fatalf("delete: %d", code)
	}
	if stats, _ := s.pair.Staging.Stats(context.Background()); stats.CountStudies != 0 {
		t.Errorf("staging still holds %d studies after the project's deletion", stats.CountStudies)
	}
	if code := s.do(http.MethodGet, "/projects/"+created.ID, nil, nil); code != 404 {
		t.Errorf("deleted project: %d", code)
	}
}

// With the PACS down, the import fails after its retries; reimport after the
// PACS returns completes it, and staging holds each instance once.
func TestReimportAfterPACSOutage(t *testing.T) {
	s := newStage(t)
	s.pair.PACS.Kill()
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	for c := s.status(created.ID); c.Queued+c.Processing > 0; c = s.status(created.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("import still running with the PACS down: %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c := s.status(created.ID); c.Successful != 0 {
		t.Fatalf("imported with the PACS down: %+v", c)
	}
	if err := s.pair.PACS.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	if code := s.do(http.MethodPut, "/retrieval/reimport_imaging_project_studies/"+created.ID+"?encoded_query="+encodedQuery(), nil, nil); code != 202 {
		t.Fatalf("reimport: %d", code)
	}
	deadline = time.Now().Add(30 * time.Second)
	for c := s.status(created.ID); c.Successful != 2; c = s.status(created.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("reimport did not complete: %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if stats, _ := s.pair.Staging.Stats(context.Background()); stats.CountInstances != 10 {
		t.Errorf("staging holds %d instances, want 10 (no duplicates)", stats.CountInstances)
	}
	var ping api.PacsStatus
	if code := s.do(http.MethodGet, "/imaging/ping_pacs", nil, &ping); code != 200 || !ping.Successful {
		t.Errorf("ping: %d %+v", code, ping)
	}
	var studies []api.Study
	if code := s.do(http.MethodGet, "/imaging/query_by_accession_number?accession_number=ACC-2", nil, &studies); code != 200 ||
		len(studies) != 1 || studies[0].AccessionNumber != "ACC-2" {
		t.Errorf("query: %d %+v", code, studies)
	}
	fmt.Fprint(io.Discard, s.hits.Load())
}

// A project provisioned while data-access-api cannot release its cohort
// stays pending, so nothing is lost: ResumeCohorts (run at every start)
// queues and imports the cohort once data-access-api answers, and then
// leaves the project alone.
func TestCohortQueuedAtResume(t *testing.T) {
	s := newStage(t)
	s.down.Store(true)
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for s.refused.Load() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("provisioning never asked data-access-api for the cohort")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if p, err := s.reg.Get(created.ID); err != nil || !p.CohortPending {
		t.Fatalf("project after a failed cohort request: %+v %v", p, err)
	}
	if rs, err := s.imp.Records(created.ID); err != nil || len(rs) != 0 {
		t.Fatalf("records without a cohort: %v %v", rs, err)
	}

	s.down.Store(false)
	if err := s.api.ResumeCohorts(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(30 * time.Second)
	for c := s.status(created.ID); c.Successful != 2 || c.QueueFailed != 1; c = s.status(created.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("import after resuming: %+v", c)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if p, err := s.reg.Get(created.ID); err != nil || p.CohortPending {
		t.Fatalf("project still pending after its cohort was queued: %+v %v", p, err)
	}
	hits := s.hits.Load()
	if err := s.api.ResumeCohorts(); err != nil {
		t.Fatal(err)
	}
	if s.hits.Load() != hits {
		t.Error("ResumeCohorts asked again for a cohort already queued")
	}
}
