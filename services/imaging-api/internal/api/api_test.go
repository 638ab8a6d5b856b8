package api_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/apitest"
	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/services/imaging-api/internal/projects"
	"github.com/flip-trust/node/shared/envelope"
)

const (
	key    = apitest.Key
	aesKey = apitest.AESKey
	hubID  = apitest.HubID
	trust  = apitest.TrustID
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

func newStage(t *testing.T) *stage { return newStageWith(t, 2, nil) }

// newStageWith sets the import concurrency and may wrap the Orthanc backend
// the importer drives.
func newStageWith(t *testing.T, concurrency int, wrap func(importer.Backend) importer.Backend) *stage {
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
	dapi := apitest.CohortServer(t, key, cipher, hubID, func() ([]string, int) {
		s.hits.Add(1)
		switch {
		case s.small.Load():
			return nil, http.StatusForbidden
		case s.down.Load():
			s.refused.Add(1)
			return nil, http.StatusServiceUnavailable
		}
		return []string{"ACC-1", "ACC-2", "ACC-3"}, http.StatusOK
	})

	dir := t.TempDir()
	reg, err := projects.Open(filepath.Join(dir, "projects.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	s.reg = reg
	var backend importer.Backend = &native.Backend{Orthanc: s.oc, PACS: orthanctest.PACSAET, StagingAET: orthanctest.StagingAET}
	if wrap != nil {
		backend = wrap(backend)
	}
	s.imp, err = importer.Open(importer.Options{Path: filepath.Join(dir, "imports.db"), Concurrency: concurrency, MaxAttempts: 2,
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
	svc := &native.Service{Projects: reg, Importer: s.imp, Orthanc: s.oc, PACS: orthanctest.PACSAET,
		StagingAET: orthanctest.StagingAET, UploadDir: filepath.Join(dir, "uploads")}
	s.api, s.url = apitest.Serve(t, svc, dapi.URL, s.cache, cipher)
	return s
}

func (s *stage) do(method, path string, body any, out any) int {
	s.t.Helper()
	return apitest.Client{T: s.t, URL: s.url, Key: key}.Do(method, path, body, out)
}

func encodedQuery() string {
	return base64.RawURLEncoding.EncodeToString([]byte("SELECT accession_id FROM image_occurrence"))
}

func (s *stage) status(id string) api.ImportCounts {
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
	var c api.ImportCounts
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

	// An FL job uploads a label into the NIFTI resource of a scan; the next
	// NIfTI download carries it, and a second upload without exist_ok is
	// refused without touching the file.
	scan := filepath.Base(scans[0])
	upDir := filepath.Join(s.cache.Base(), "net-1", imagecache.UploadDir, "job-7")
	if err := os.MkdirAll(upDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(upDir, "label_ct.nii.gz"), []byte("label v1"), 0o644); err != nil {
		t.Fatal(err)
	}
	up := map[string]any{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-1", "scan_id": scan,
		"resource_id": "NIFTI", "files": []string{"job-7/label_ct.nii.gz"}}
	var uploaded []string
	if code := s.do(http.MethodPut, "/upload/images/net-1", up, &uploaded); code != 200 || len(uploaded) != 1 ||
		!strings.HasSuffix(uploaded[0], "/ACC-1/scans/"+scan+"/resources/NIFTI/files/label_ct.nii.gz") {
		t.Fatalf("upload: %d %v", code, uploaded)
	}
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=NIFTI", body, &nifti); code != 200 {
		t.Fatalf("NIfTI download after upload: %d", code)
	}
	label := filepath.Join(nifti.Path, "scans", scan, "resources", "NIFTI", "files", "label_ct.nii.gz")
	if b, err := os.ReadFile(label); err != nil || string(b) != "label v1" {
		t.Errorf("uploaded label not in the download: %q %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(upDir, "label_ct.nii.gz"), []byte("label v2"), 0o644); err != nil {
		t.Fatal(err)
	}
	if code := s.do(http.MethodPut, "/upload/images/net-1", up, nil); code != http.StatusConflict {
		t.Errorf("upload over an existing file without exist_ok: %d, want 409", code)
	}
	up["exist_ok"] = true
	if code := s.do(http.MethodPut, "/upload/images/net-1", up, nil); code != 200 {
		t.Errorf("upload with exist_ok: %d", code)
	}
	s.do(http.MethodPost, "/download/images/net-1?resource_type=NIFTI", body, &nifti)
	if b, _ := os.ReadFile(label); string(b) != "label v2" {
		t.Errorf("replaced label not served (cache not invalidated?): %q", b)
	}
	for name, files := range map[string][]string{
		"traversal": {"../../x"}, "absolute": {"/etc/passwd"}, "missing": {"job-7/nope.nii.gz"},
	} {
		bad := map[string]any{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-1", "scan_id": scan,
			"resource_id": "NIFTI", "files": files}
		if code := s.do(http.MethodPut, "/upload/images/net-1", bad, nil); code != 400 && code != 404 {
			t.Errorf("%s upload: %d", name, code)
		}
	}
	notImported := map[string]any{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-3", "scan_id": scan,
		"resource_id": "NIFTI", "files": []string{"job-7/label_ct.nii.gz"}}
	if code := s.do(http.MethodPut, "/upload/images/net-1", notImported, nil); code != 404 {
		t.Errorf("upload to an accession not imported: %d", code)
	}

	// Users: the hub's user was recorded, and update_user_profile sticks.
	var users []api.User
	if code := s.do(http.MethodGet, "/users", nil, &users); code != 200 || len(users) != 1 || users[0].Email != "a@b.org" || !users[0].Enabled {
		t.Errorf("users: %d %+v", code, users)
	}
	var u api.User
	if code := s.do(http.MethodPut, "/users", map[string]any{"email": "A@b.org", "enabled": false}, &u); code != 200 || u.Enabled {
		t.Errorf("disable user: %d %+v", code, u)
	}
	s.do(http.MethodGet, "/users", nil, &users)
	if len(users) != 1 || users[0].Enabled {
		t.Errorf("users after disabling: %+v", users)
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

// killDuringSecondMove stops the PACS while the import's second study is
// moving.
type killDuringSecondMove struct {
	importer.Backend
	moves atomic.Int32
	kill  func()
}

func (k *killDuringSecondMove) Move(ctx context.Context, m importer.Match, progress func(int)) error {
	if k.moves.Add(1) == 2 {
		go func() { time.Sleep(5 * time.Millisecond); k.kill() }()
	}
	return k.Backend.Move(ctx, m, progress)
}

// The PACS stops in the middle of an import (while the second study
// moves): the first study stays imported, the others are retried and then
// fail; after the PACS returns, reimport completes the cohort and staging
// holds each instance once.
func TestReimportAfterPACSOutage(t *testing.T) {
	var s *stage
	s = newStageWith(t, 1, func(b importer.Backend) importer.Backend {
		return &killDuringSecondMove{Backend: b, kill: func() { s.pair.PACS.Kill() }}
	})
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	deadline := time.Now().Add(30 * time.Second)
	var c api.ImportCounts
	for done, total := s.imp.Progress(created.ID); total < 3 || done < total; done, total = s.imp.Progress(created.ID) {
		if time.Now().After(deadline) {
			t.Fatalf("import still running with the PACS down: %d/%d", done, total)
		}
		time.Sleep(50 * time.Millisecond)
	}
	c = s.status(created.ID)
	if c.Successful != 1 || c.Failed+c.QueueFailed != 2 {
		t.Fatalf("after the PACS stopped mid-import: %+v, want 1 imported and 2 failed", c)
	}
	recs, err := s.imp.Records(created.ID)
	if err != nil {
		t.Fatal(err)
	}
	retried := false
	for _, r := range recs {
		if r.State == importer.StateFailed || (r.State == importer.StateQueueFailed && r.Attempts > 1) {
			retried = retried || r.Attempts >= 2
		}
	}
	if !retried {
		t.Errorf("the study interrupted by the outage was not retried before failing: %+v", recs)
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
	if err := s.api.ResumeCohorts(context.Background()); err != nil {
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
	if err := s.api.ResumeCohorts(context.Background()); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if s.hits.Load() != hits {
		t.Error("ResumeCohorts asked again for a cohort already queued")
	}
}
