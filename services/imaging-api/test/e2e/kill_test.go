package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

// imaging-api is killed (SIGKILL) while it moves a cohort study from the
// PACS into staging, and started again on the same data directory: the
// import resumes where it stopped and completes, every study is in staging
// exactly once, and the status counts say so.
func TestImportResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	const (
		studies   = 12
		series    = 2
		perSeries = 20 // big enough that a C-MOVE takes a while to catch
		perStudy  = series * perSeries
		key       = "internal-service-key-0123456789abcdef0123"
		aesKey    = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
		hubID     = "6d1f0c2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
		trustID   = "0e9d8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b"
		query     = "SELECT accession_id FROM image_occurrence"
	)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bin := goBuild(t, filepath.Join(tmp, "bin"), "imaging-api", "imaging-api", "0")

	// The PACS holds the cohort's studies; staging starts empty.
	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	var pacs []dicomgen.Study
	var accessions []string
	for i := range studies {
		acc := fmt.Sprintf("KILL-%02d", i+1)
		accessions = append(accessions, acc)
		pacs = append(pacs, dicomgen.Study{PatientID: fmt.Sprintf("KP-%02d", i+1), AccessionNumber: acc,
			Modality: "CT", Series: series, PerSeries: perSeries})
	}
	up := &dicomgen.Uploader{URL: pair.PACS.URL, User: pair.PACS.User, Password: pair.PACS.Password}
	if _, err := up.UploadStudies(ctx, slices.Values(pacs), 4, nil); err != nil {
		t.Fatal(err)
	}

	// data-access-api releases the frozen cohort's accession ids over the mesh.
	cipher, err := envelope.NewFromBase64(aesKey)
	if err != nil {
		t.Fatal(err)
	}
	cohort, _ := json.Marshal(map[string][]string{"accession_ids": accessions})
	dapi := httptest.NewServer(mesh.NewVerifier("data-access-api", []byte(key), mesh.HeaderInternalKey, nil).
		Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(r.Body).Decode(&in)
		pid, err := cipher.Open(in["encrypted_project_id"], envelope.ProjectIDContext)
		if r.URL.Path != "/cohort/accession-ids" || err != nil || string(pid) != hubID || in["query"] != query {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		_, _ = w.Write(cohort)
	})))
	defer dapi.Close()

	addr := proctest.FreeAddr(t)
	base := "http://" + addr
	env := []string{"IMAGING_API_ADDR=" + addr, "IMAGING_API_DATA_DIR=" + filepath.Join(tmp, "imaging"),
		"ORTHANC_URL=" + pair.Staging.URL, "ORTHANC_USERNAME=" + pair.Staging.User, "ORTHANC_PASSWORD=" + pair.Staging.Password,
		"PACS_AETITLE=" + orthanctest.PACSAET, "STAGING_AETITLE=" + orthanctest.StagingAET,
		"DATA_ACCESS_API_URL=" + dapi.URL, "BASE_IMAGES_DOWNLOAD_DIR=" + filepath.Join(tmp, "images"),
		"AES_KEY_BASE64=" + aesKey, "TRUST_INTERNAL_SERVICE_KEY=" + key,
		// One study at a time, so the kill finds one move in flight and
		// studies not yet started.
		"IMPORT_CONCURRENCY=1", "IMPORT_BACKOFF_MIN_SECONDS=0.2", "IMPORT_BACKOFF_MAX_SECONDS=1"}
	call := func(method, path string, body, out any) {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, _ := json.Marshal(body)
			rd = strings.NewReader(string(b))
		}
		req, _ := http.NewRequestWithContext(ctx, method, base+path, rd)
		req.Header.Set(mesh.HeaderInternalKey, key)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %s: %v", method, path, raw, err)
		}
	}
	staging := func() orthanctest.Statistics {
		t.Helper()
		st, err := pair.Staging.Stats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}

	first := proctest.Start(t, "imaging-api", bin, env)
	proctest.WaitHTTP(t, base+"/health")
	var created struct{ ID string }
	call(http.MethodPost, "/projects/create-project-from-central-hub-project", map[string]any{
		"project_id": hubID, "trust_id": trustID, "project_name": "Kill", "query": query, "users": []any{}}, &created)
	if created.ID == "" {
		t.Fatal("provisioning returned no project id")
	}

	// Kill it while a C-MOVE is under way: staging holds part of a study,
	// at least one study is complete and most have not started. Freezing
	// the PACS (SIGSTOP) for the instant of the check and the kill holds
	// the move where it is, so the kill lands inside it.
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	midMove := false
	for {
		if first.Exited() {
			t.Fatal("imaging-api exited on its own")
		}
		if time.Now().After(deadline) {
			t.Fatalf("import made no progress to kill in: staging %+v", staging())
		}
		st := staging()
		complete, partial := st.CountInstances/perStudy, st.CountInstances%perStudy != 0
		if complete >= studies/2 {
			// Every move slipped between two looks: kill between
			// studies instead, still with studies left to import.
			first.Kill()
			t.Logf("no move caught in flight; killed with staging at %+v", st)
			break
		}
		if !partial || complete < 1 {
			time.Sleep(5 * time.Millisecond)
			continue
		}
		if err := pair.PACS.Pause(); err != nil {
			t.Fatal(err)
		}
		if held := staging(); held.CountInstances%perStudy != 0 {
			first.Kill()
			midMove = true
			t.Logf("killed after %v inside the move of study %d: staging %+v",
				time.Since(start).Round(time.Millisecond), held.CountInstances/perStudy+1, held)
		}
		if err := pair.PACS.Resume(); err != nil {
			t.Fatal(err)
		}
		if midMove {
			break
		}
	}

	if st := staging(); st.CountStudies >= studies {
		t.Fatalf("killed too late: staging already holds %+v", st)
	}

	// Restarted on the same data directory, it finishes the import.
	second := proctest.Start(t, "imaging-api (restarted)", bin, env)
	proctest.WaitHTTP(t, base+"/health")
	status := "/retrieval/import_status_count/" + created.ID + "?encoded_query=" + base64.RawURLEncoding.EncodeToString([]byte(query))
	var pr struct {
		ProjectCreationCompleted bool            `json:"project_creation_completed"`
		ImportStatus             importer.Counts `json:"import_status"`
	}
	restarted := time.Now()
	deadline = restarted.Add(60 * time.Second)
	for {
		call(http.MethodGet, status, nil, &pr)
		if c := pr.ImportStatus; c.Successful == studies || c.Failed+c.QueueFailed > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import incomplete after the restart: %+v", pr.ImportStatus)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("import complete %v after the restart", time.Since(restarted).Round(time.Millisecond))
	if want := (importer.Counts{Successful: studies}); pr.ImportStatus != want || !pr.ProjectCreationCompleted {
		t.Errorf("import status %+v (creation completed %v), want %+v", pr.ImportStatus, pr.ProjectCreationCompleted, want)
	}
	if midMove && !strings.Contains(second.Output(), "import resumed after restart") {
		t.Errorf("the restarted service did not report resuming the interrupted move")
	}

	// Staging holds every study once, with all of its instances: as many
	// patients, studies, series and instances as the PACS.
	want, err := pair.PACS.Stats(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want.CountStudies != studies || want.CountInstances != studies*perStudy {
		t.Fatalf("PACS holds %+v", want)
	}
	if got := staging(); got != want {
		t.Errorf("staging holds %+v, the PACS %+v", got, want)
	}
	var staged []struct {
		ID            string
		MainDicomTags map[string]string
	}
	if err := pair.Staging.Do(ctx, http.MethodGet, "/studies?expand", nil, &staged); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, s := range staged {
		acc := s.MainDicomTags["AccessionNumber"]
		seen[acc]++
		var st orthanctest.Statistics
		if err := pair.Staging.Do(ctx, http.MethodGet, "/studies/"+s.ID+"/statistics", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.CountSeries != series || st.CountInstances != perStudy {
			t.Errorf("study %s in staging: %d series, %d instances; want %d, %d", acc, st.CountSeries, st.CountInstances, series, perStudy)
		}
	}
	for _, acc := range accessions {
		if seen[acc] != 1 {
			t.Errorf("accession %s: %d studies in staging, want 1", acc, seen[acc])
		}
	}
}
