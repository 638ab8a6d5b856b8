package xnatbackend_test

// These tests drive imaging-api's FLIP routes over the XNAT backend against
// xnattest, the contract server that stands in for XNAT (XNAT cannot run on
// our machines), with XNAT's DQR tables in a real PostgreSQL.

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
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/apitest"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnatbackend"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
	"github.com/flip-trust/node/shared/envelope"
)

const (
	key    = apitest.Key
	aesKey = apitest.AESKey
	hubID  = apitest.HubID
	trust  = apitest.TrustID
	image  = xnatbackend.DefaultDcm2niixImage
)

var pg xnattest.SharedPostgres

func TestMain(m *testing.M) {
	code := m.Run()
	_ = pg.Close()
	os.Exit(code)
}

// database returns the shared PostgreSQL's xnat database, its DQR tables
// emptied.
func database(t *testing.T) *pgxpool.Pool {
	t.Helper()
	pool := pg.Pool(t)
	if err := xnattest.TruncateTables(context.Background(), pool); err != nil {
		t.Fatal(err)
	}
	return pool
}

func dicomScan(id, modality string) xnattest.Scan {
	return xnattest.Scan{ID: id, Type: modality, Resources: map[string]map[string][]byte{
		"DICOM": {"1.dcm": []byte("dicom-1-" + id), "2.dcm": []byte("dicom-2-" + id)},
	}}
}

type stage struct {
	t      *testing.T
	srv    *xnattest.Server
	url    string
	cipher *envelope.Cipher
	cache  *imagecache.Cache
	cohort []string
	small  bool
	mu     sync.Mutex
}

// newStage starts the contract server (PACS 1 holds ACC-1, ACC-2 and two
// studies sharing AMB), XNAT's database, a data-access-api stand-in that
// releases the cohort, and the routes over the XNAT backend.
func newStage(t *testing.T, withCommand bool) *stage {
	t.Helper()
	db := database(t)
	srv := xnattest.New(xnattest.Options{DB: db})
	t.Cleanup(srv.Close)
	pacs := srv.AddPACS(xnattest.PACS{AETitle: "ORTHANC", Host: "orthanc", Port: 4242})
	for _, st := range []xnattest.Study{
		{StudyInstanceUID: "1.2.1", AccessionNumber: "ACC-1", Modalities: []string{"CT"}, PatientID: "P1", Scans: []xnattest.Scan{dicomScan("1", "CT"), dicomScan("2", "CT")}},
		{StudyInstanceUID: "1.2.2", AccessionNumber: "ACC-2", Modalities: []string{"MR"}, PatientID: "P2", Scans: []xnattest.Scan{dicomScan("1", "MR")}},
		{StudyInstanceUID: "1.2.3", AccessionNumber: "AMB", PatientID: "P3"},
		{StudyInstanceUID: "1.2.4", AccessionNumber: "AMB", PatientID: "P4"},
	} {
		if err := srv.AddStudy(pacs, st); err != nil {
			t.Fatal(err)
		}
	}
	if withCommand {
		srv.AddCommand(xnattest.Command{Name: "dcm2niix", Image: image, Wrapper: "dcm2niix-scan"})
	}
	if _, err := srv.AddUser(xnattest.User{Username: "old", Password: "Old-password-1", Email: "old@x.org", FirstName: "O", LastName: "Ld", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	// old has logged in before; an account that never has is re-invited.
	login, _ := http.NewRequest(http.MethodPost, srv.URL+"/data/JSESSION", nil)
	login.SetBasicAuth("old", "Old-password-1")
	if resp, err := http.DefaultClient.Do(login); err != nil || resp.StatusCode != 200 {
		t.Fatalf("login as old: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	s := &stage{t: t, srv: srv, cohort: []string{"ACC-1", "ACC-2", "AMB", "ACC-MISSING"}}
	s.cipher, _ = envelope.NewFromBase64(aesKey)
	dapi := apitest.CohortServer(t, key, s.cipher, hubID, func() ([]string, int) {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.small {
			return nil, http.StatusForbidden
		}
		return s.cohort, http.StatusOK
	})

	cl, err := xnat.New(xnat.Config{BaseURL: srv.URL, Username: xnattest.DefaultUsername, Password: xnattest.DefaultPassword,
		Timeout: 5 * time.Second, ReceiverPort: 8104}, db, nil)
	if err != nil {
		t.Fatal(err)
	}
	s.cache, err = imagecache.New(filepath.Join(t.TempDir(), "images"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, s.url = apitest.Serve(t, xnatbackend.New(xnatbackend.Options{Client: cl, Cipher: s.cipher, Dcm2niixImage: image}),
		dapi.URL, s.cache, s.cipher)
	return s
}

func (s *stage) do(method, path string, body, out any) int {
	s.t.Helper()
	return apitest.Client{T: s.t, URL: s.url, Key: key}.Do(method, path, body, out)
}

var encodedQuery = base64.RawURLEncoding.EncodeToString([]byte("SELECT accession_id FROM image_occurrence"))

func (s *stage) status(id string) api.ImportCounts {
	s.t.Helper()
	var pr api.ProjectRetrieval
	if code := s.do(http.MethodGet, "/retrieval/import_status_count/"+id+"?encoded_query="+encodedQuery, nil, &pr); code != 200 || !pr.ProjectCreationCompleted {
		s.t.Fatalf("status: %d", code)
	}
	return pr.ImportStatus
}

// requests waits until the project has n DQR requests and returns them by
// accession (the latest request of each).
func (s *stage) requests(project string, n int) map[string]xnattest.ImportRequest {
	s.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var mine []xnattest.ImportRequest
		for _, r := range s.srv.ImportRequests() {
			if r.Project == project {
				mine = append(mine, r)
			}
		}
		if len(mine) >= n {
			out := map[string]xnattest.ImportRequest{}
			for _, r := range mine {
				out[r.AccessionNumber] = r
			}
			return out
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("%d DQR requests for the project, want %d", len(mine), n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func hubProject(users ...map[string]any) map[string]any {
	return map[string]any{"project_id": hubID, "trust_id": trust, "project_name": "Spleen",
		"query": "SELECT accession_id FROM image_occurrence", "users": users}
}

// The FLIP flow over XNAT: provisioning (once per hub project, with
// auto-archive, the conversion subscription, user accounts and invitations),
// the cohort import through DQR (exact single matches only), FLIP's status
// counts from XNAT's DQR tables, reimport of failures, an FL download and
// upload, users, the PACS ping and query, and deletion.
func TestFLIPFlowOverXNAT(t *testing.T) {
	s := newStage(t, true)
	ctx := context.Background()
	users := []map[string]any{
		{"id": trust, "email": "new.user+x@x.org"},
		{"id": trust, "email": "old@x.org"},
		{"id": trust, "email": "gone@x.org", "is_disabled": true},
	}
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(users...), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	ps, ok := s.srv.ProjectState(created.ID)
	if !ok || ps.SecondaryID != hubID || ps.PrearchiveCode != 4 || !strings.HasSuffix(created.Name, hubID+"-FL-Project") {
		t.Fatalf("project state %+v (%v)", ps, ok)
	}
	if len(ps.Subscriptions) != 1 || ps.Subscriptions[0]["active"] != true || len(ps.EnabledWrappers) != 1 {
		t.Errorf("conversion subscription %+v, wrappers %v", ps.Subscriptions, ps.EnabledWrappers)
	}
	if len(created.CreatedUsers) != 1 || created.CreatedUsers[0].Username != "newuserx" || created.CreatedUsers[0].Email != "new.user+x@x.org" {
		t.Fatalf("created users %+v", created.CreatedUsers)
	}
	path, err := s.cipher.Open(created.CreatedUsers[0].EncryptedSetupPath, xnatbackend.SetupPathContext)
	if err != nil || !strings.HasPrefix(string(path), "/app/template/XDATScreen_UpdateUser.vm?a=") {
		t.Errorf("setup path %q %v", path, err)
	}
	if len(created.AddedUsers) != 1 || created.AddedUsers[0].Username != "old" {
		t.Errorf("added users %+v", created.AddedUsers)
	}
	if ps.Members["newuserx"] != "Members" || ps.Members["old"] != "Members" || ps.Members["gone"] != "" {
		t.Errorf("members %v", ps.Members)
	}
	if _, ok := s.srv.UserState("gone"); ok {
		t.Error("a disabled hub user got an account")
	}

	// Provisioning again returns the same project; no second one exists.
	var again api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(users...), &again); code != 200 || again.ID != created.ID {
		t.Fatalf("repeat: %d %s, want %s", code, again.ID, created.ID)
	}
	var list []api.Project
	if s.do(http.MethodGet, "/projects/", nil, &list); len(list) != 1 {
		t.Errorf("%d projects after two provisionings", len(list))
	}

	// The cohort: ACC-1 and ACC-2 are queued in DQR; AMB (two studies) and
	// ACC-MISSING are never queued.
	reqs := s.requests(created.ID, 2)
	if _, ok := reqs["AMB"]; ok {
		t.Error("an ambiguous accession was queued")
	}
	if c := s.status(created.ID); c != (api.ImportCounts{Queued: 2, QueueFailed: 2}) {
		t.Errorf("after queueing: %+v", c)
	}
	if reqs["ACC-1"].Destination != "XNAT:8104" || reqs["ACC-1"].RelabelMap["Session"] != "ACC-1" {
		t.Errorf("request %+v", reqs["ACC-1"])
	}
	if err := s.srv.CompleteImport(ctx, reqs["ACC-1"].ID); err != nil {
		t.Fatal(err)
	}
	if err := s.srv.FailImport(ctx, reqs["ACC-2"].ID); err != nil {
		t.Fatal(err)
	}
	if c := s.status(created.ID); c != (api.ImportCounts{Successful: 1, Failed: 1, QueueFailed: 2}) {
		t.Errorf("after one import and one failure: %+v", c)
	}

	// Reimport retries ACC-2 (and asks the PACS again about the others).
	if code := s.do(http.MethodPut, "/retrieval/reimport_imaging_project_studies/"+created.ID+"?encoded_query="+encodedQuery, nil, nil); code != 202 {
		t.Fatalf("reimport: %d", code)
	}
	reqs = s.requests(created.ID, 3)
	if err := s.srv.CompleteImport(ctx, reqs["ACC-2"].ID); err != nil {
		t.Fatal(err)
	}
	if c := s.status(created.ID); c.Successful != 2 || c.QueueFailed != 2 {
		t.Errorf("after reimport: %+v", c)
	}

	// Below the floor: no status, as FLIP.
	s.mu.Lock()
	s.small = true
	s.mu.Unlock()
	if code := s.do(http.MethodGet, "/retrieval/import_status_count/"+created.ID+"?encoded_query="+encodedQuery, nil, nil); code != 403 {
		t.Errorf("status below the floor: %d", code)
	}
	s.mu.Lock()
	s.small = false
	s.mu.Unlock()

	// An FL job downloads ACC-1's DICOM.
	enc, _ := s.cipher.Seal([]byte(hubID), envelope.ProjectIDContext)
	body := map[string]string{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-1"}
	var got struct{ Path string }
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=DICOM", body, &got); code != 200 {
		t.Fatalf("download: %d", code)
	}
	files, _ := filepath.Glob(filepath.Join(got.Path, "scans", "*", "resources", "DICOM", "files", "*.dcm"))
	if got.Path != filepath.Join(s.cache.Base(), "net-1", hubID, "ACC-1") || len(files) != 4 {
		t.Errorf("download at %s holds %d files, want 4", got.Path, len(files))
	}
	if b, _ := os.ReadFile(filepath.Join(got.Path, "scans", "2", "resources", "DICOM", "files", "1.dcm")); string(b) != "dicom-1-2" {
		t.Errorf("downloaded content %q", b)
	}
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=SEG", body, nil); code != 404 {
		t.Errorf("download of a resource XNAT lacks: %d, want 404", code)
	}
	missing := map[string]string{"encrypted_central_hub_project_id": enc, "accession_id": "AMB"}
	if code := s.do(http.MethodPost, "/download/images/net-1?resource_type=DICOM", missing, nil); code != 404 {
		t.Errorf("download of an accession not archived: %d, want 404", code)
	}

	// ... and uploads a label into scan 1's NIFTI resource.
	up := filepath.Join(s.cache.Base(), "net-1", imagecache.UploadDir)
	if err := os.MkdirAll(up, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(up, "label_1.nii.gz"), []byte("label"), 0o644); err != nil {
		t.Fatal(err)
	}
	upload := map[string]any{"encrypted_central_hub_project_id": enc, "accession_id": "ACC-1", "scan_id": "1",
		"resource_id": "NIFTI", "files": []string{"label_1.nii.gz"}}
	var urls []string
	if code := s.do(http.MethodPut, "/upload/images/net-1", upload, &urls); code != 200 || len(urls) != 1 || !strings.HasPrefix(urls[0], s.srv.URL+"/data/projects/") {
		t.Fatalf("upload: %d %v", code, urls)
	}
	if b, ok := s.srv.File(created.ID, "ACC-1", "1", "NIFTI", "label_1.nii.gz"); !ok || string(b) != "label" {
		t.Errorf("uploaded file in XNAT: %q %v", b, ok)
	}
	if code := s.do(http.MethodPut, "/upload/images/net-1", upload, nil); code != http.StatusConflict {
		t.Errorf("second upload without exist_ok: %d, want 409", code)
	}
	if _, err := os.Stat(filepath.Join(got.Path, imagecache.SentinelPrefix+"scan-DICOM")); !os.IsNotExist(err) {
		t.Errorf("the cached download was not invalidated by the upload: %v", err)
	}

	// PACS ping and query.
	var ping api.PacsStatus
	if code := s.do(http.MethodGet, "/imaging/ping_pacs", nil, &ping); code != 200 || !ping.Successful || ping.PacsID != 1 {
		t.Errorf("ping: %d %+v", code, ping)
	}
	if code := s.do(http.MethodGet, "/imaging/ping_pacs/99", nil, nil); code != 404 {
		t.Errorf("ping of an unknown PACS: %d", code)
	}
	var studies []api.Study
	if code := s.do(http.MethodGet, "/imaging/query_by_accession_number?accession_number=ACC-2", nil, &studies); code != 200 ||
		len(studies) != 1 || studies[0].StudyInstanceUID != "1.2.2" || !slices.Equal(studies[0].ModalitiesInStudy, []string{"MR"}) {
		t.Errorf("query: %d %+v", code, studies)
	}

	// Users: update_user_profile disables the new account.
	var u api.User
	if code := s.do(http.MethodPut, "/users", map[string]any{"email": "new.user+x@x.org", "enabled": false}, &u); code != 200 || u.Enabled {
		t.Errorf("disable: %d %+v", code, u)
	}
	if st, _ := s.srv.UserState("newuserx"); st.Enabled {
		t.Error("the account is still enabled in XNAT")
	}
	if code := s.do(http.MethodPut, "/users", map[string]any{"email": "nobody@x.org", "enabled": false}, nil); code != 404 {
		t.Errorf("update of an unknown user: %d", code)
	}
	var all []api.User
	if code := s.do(http.MethodGet, "/users", nil, &all); code != 200 || len(all) < 3 {
		t.Errorf("users: %d %d", code, len(all))
	}

	// Deletion removes the project from XNAT.
	var deleted api.Project
	if code := s.do(http.MethodDelete, "/projects/"+created.ID, nil, &deleted); code != 200 || deleted.ID != created.ID {
		t.Fatalf("delete: %d", code)
	}
	if _, ok := s.srv.ProjectState(created.ID); ok {
		t.Error("project still in XNAT")
	}
	if code := s.do(http.MethodGet, "/projects/"+created.ID, nil, nil); code != 404 {
		t.Errorf("deleted project: %d", code)
	}
}

// A project whose configuration fails (no conversion command registered) is
// removed again: the hub's retry starts clean and no half-made project
// stays in XNAT.
func TestProvisioningFailureLeavesNoProject(t *testing.T) {
	s := newStage(t, false)
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), nil); code != 500 {
		t.Fatalf("create without the conversion command: %d, want 500", code)
	}
	var list []api.Project
	if code := s.do(http.MethodGet, "/projects", nil, &list); code != 200 || len(list) != 0 {
		t.Fatalf("projects after the failure: %d %+v", code, list)
	}
	s.srv.AddCommand(xnattest.Command{Name: "dcm2niix", Image: image, Wrapper: "dcm2niix-scan"})
	var created api.CreatedProject
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("retry: %d", code)
	}
	if ps, ok := s.srv.ProjectState(created.ID); !ok || len(ps.Subscriptions) != 1 {
		t.Errorf("retried project %+v", ps)
	}
}

// queue_image_import_request passes studies to DQR: duplicates once, the
// registered PACS, and the project must exist.
func TestQueueImportRequest(t *testing.T) {
	s := newStage(t, true)
	var created api.CreatedProject
	s.mu.Lock()
	s.cohort = nil
	s.mu.Unlock()
	if code := s.do(http.MethodPost, "/projects/create-project-from-central-hub-project", hubProject(), &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	req := map[string]any{"projectId": created.ID, "aeTitle": "XNAT", "port": 8104, "studies": []map[string]string{
		{"studyInstanceUid": "1.2.1", "accessionNumber": "ACC-1"}, {"studyInstanceUid": "1.2.1", "accessionNumber": "ACC-1"},
		{"studyInstanceUid": "1.2.2", "accessionNumber": "ACC-2"}}}
	var out []api.ImportStudyResponse
	if code := s.do(http.MethodPost, "/imaging/queue_image_import_request", req, &out); code != 200 || len(out) != 2 {
		t.Fatalf("queue: %d %+v", code, out)
	}
	for _, r := range out {
		if r.Status != "QUEUED" || r.PacsID != 1 {
			t.Errorf("entry %+v", r)
		}
	}
	req["projectId"] = "no-such-project"
	if code := s.do(http.MethodPost, "/imaging/queue_image_import_request", req, nil); code != 404 {
		t.Errorf("queue into an unknown project: %d", code)
	}
	if code := s.do(http.MethodPost, "/imaging/queue_image_import_request", map[string]any{"projectId": created.ID}, nil); code != 422 {
		t.Errorf("queue without studies: %d", code)
	}
	fmt.Fprint(io.Discard, created)
}
