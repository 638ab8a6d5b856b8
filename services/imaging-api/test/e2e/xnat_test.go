package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

// The imaging-api process with IMAGING_BACKEND=xnat, configured as a trust
// deploys it, against the XNAT contract server (XNAT cannot run here) and
// XNAT's DQR tables in a real PostgreSQL: it provisions the hub project in
// XNAT, queues the cohort's import through DQR and reports FLIP's counts.
func TestXNATBackendProcess(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := goBuild(t, tmp, "imaging-api", "imaging-api", "0")

	pg, err := xnattest.StartPostgres(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pg.Close()
	db, err := pgxpool.New(ctx, pg.DSN)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	srv := xnattest.New(xnattest.Options{DB: db})
	defer srv.Close()
	pacs := srv.AddPACS(xnattest.PACS{AETitle: "PACS", Host: "pacs", Port: 104})
	for _, acc := range []string{"E2E-1", "E2E-2", "E2E-3"} {
		if err := srv.AddStudy(pacs, xnattest.Study{StudyInstanceUID: "1.9." + acc[4:], AccessionNumber: acc, PatientID: "P" + acc}); err != nil {
			t.Fatal(err)
		}
	}
	srv.AddCommand(xnattest.Command{Name: "dcm2niix", Image: "example.org/dcm2niix:1", Wrapper: "dcm2niix-scan"})

	readerURL, err := pg.CreateReader(ctx, "imaging_reader", "reader-pw-0123")
	if err != nil {
		t.Fatal(err)
	}

	const key = "internal-service-key-0123456789abcdef0123"
	aes := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
	dapi := httptest.NewServer(mesh.NewVerifier("data-access-api", []byte(key), mesh.HeaderInternalKey, logging.Discard()).
		Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte(`{"accession_ids":["E2E-1","E2E-2","E2E-3","E2E-404"]}`))
	})))
	defer dapi.Close()

	addr := proctest.FreeAddr(t)
	proctest.Start(t, "imaging-api", bin, []string{"IMAGING_API_ADDR=" + addr, "IMAGING_BACKEND=xnat",
		"IMAGING_API_DATA_DIR=" + filepath.Join(tmp, "data"), "BASE_IMAGES_DOWNLOAD_DIR=" + filepath.Join(tmp, "images"),
		"XNAT_URL=" + srv.URL, "XNAT_SERVICE_USER=" + xnattest.DefaultUsername, "XNAT_SERVICE_PASSWORD=" + xnattest.DefaultPassword,
		"XNAT_DATABASE_URL=" + readerURL, "XNAT_DATASOURCE_PASSWORD=reader-pw-0123", "XNAT_PORT=8104", "DCM2NIIX_IMAGE=example.org/dcm2niix:1",
		"DATA_ACCESS_API_URL=" + dapi.URL, "AES_KEY_BASE64=" + aes, "TRUST_INTERNAL_SERVICE_KEY=" + key, "LOG_LEVEL=DEBUG",
		// The fixture's four accessions are below the default floor of 10,
		// which would suppress every status count this test reads.
		"COHORT_QUERY_THRESHOLD=1"})
	base := "http://" + addr
	proctest.WaitHTTP(t, base+"/health")

	call := func(method, path string, body, out any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = bytes.NewReader(b)
		}
		req, _ := http.NewRequest(method, base+path, rd)
		req.Header.Set(mesh.HeaderInternalKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if out != nil {
			_ = json.Unmarshal(raw, out)
		}
		if resp.StatusCode >= 300 {
			t.Logf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		return resp.StatusCode
	}
	var health struct{ Status, Backend string }
	if code := call(http.MethodGet, "/health", nil, &health); code != 200 || health.Backend != "xnat" || health.Status != "ok" {
		t.Fatalf("health: %d %+v", code, health)
	}
	var created struct{ ID string }
	if code := call(http.MethodPost, "/projects/create-project-from-central-hub-project", map[string]any{
		"project_id": hubProject, "trust_id": "5b0c8e4a-1d2f-4e3a-9b7c-6d5e4f3a2b1c", "project_name": "E2E",
		"query": "SELECT 1"}, &created); code != 200 {
		t.Fatalf("create: %d", code)
	}
	if ps, ok := srv.ProjectState(created.ID); !ok || ps.SecondaryID != hubProject {
		t.Fatalf("XNAT project %+v %v", ps, ok)
	}
	var queued []xnattest.ImportRequest
	for deadline := time.Now().Add(20 * time.Second); len(queued) < 3; {
		queued = srv.ImportRequests()
		if time.Now().After(deadline) {
			t.Fatalf("%d DQR requests, want 3", len(queued))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := srv.CompleteImport(ctx, queued[0].ID); err != nil {
		t.Fatal(err)
	}
	q := base64.RawURLEncoding.EncodeToString([]byte("SELECT 1"))
	var st struct {
		ImportStatus map[string]int `json:"import_status"`
	}
	if code := call(http.MethodGet, "/retrieval/import_status_count/"+created.ID+"?encoded_query="+q, nil, &st); code != 200 {
		t.Fatalf("status: %d", code)
	}
	want := map[string]int{"successful_count": 1, "failed_count": 0, "processing_count": 0, "queued_count": 2, "queue_failed_count": 1}
	for k, v := range want {
		if st.ImportStatus[k] != v {
			t.Errorf("%s = %d, want %d (%v)", k, st.ImportStatus[k], v, st.ImportStatus)
		}
	}
}
