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
	"sync/atomic"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

// The cohort of the kill tests: studies of series x perSeries instances,
// big enough that a C-MOVE takes a while to catch.
const (
	killStudies   = 12
	killSeries    = 2
	killPerSeries = 20
	killPerStudy  = killSeries * killPerSeries
	killKey       = "internal-service-key-0123456789abcdef0123"
	killAESKey    = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	killHubID     = "6d1f0c2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f"
	killTrustID   = "0e9d8c7b-6a5f-4e3d-9c2b-1a0f9e8d7c6b"
	killQuery     = "SELECT accession_id FROM image_occurrence"
)

// killRig is a PACS holding the cohort's studies, an empty staging, a
// data-access-api that releases the cohort, and an imaging-api binary with
// its environment (one data directory for all its runs).
type killRig struct {
	t          *testing.T
	ctx        context.Context
	bin        string
	base       string
	env        []string
	pair       *orthanctest.Pair
	accessions []string
	// holdNext makes data-access-api hold the next request without
	// answering (until its caller goes away) and report it on held.
	holdNext atomic.Bool
	held     chan struct{}
}

func newKillRig(t *testing.T, ctx context.Context) *killRig {
	t.Helper()
	tmp := t.TempDir()
	r := &killRig{t: t, ctx: ctx, held: make(chan struct{}, 1)}
	r.bin = goBuild(t, filepath.Join(tmp, "bin"), "imaging-api", "imaging-api", "0")

	var err error
	r.pair, err = orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.pair.Close)
	var pacs []dicomgen.Study
	for i := range killStudies {
		acc := fmt.Sprintf("KILL-%02d", i+1)
		r.accessions = append(r.accessions, acc)
		pacs = append(pacs, dicomgen.Study{PatientID: fmt.Sprintf("KP-%02d", i+1), AccessionNumber: acc,
			Modality: "CT", Series: killSeries, PerSeries: killPerSeries})
	}
	up := &dicomgen.Uploader{URL: r.pair.PACS.URL, User: r.pair.PACS.User, Password: r.pair.PACS.Password}
	if _, err := up.UploadStudies(ctx, slices.Values(pacs), 4, nil); err != nil {
		t.Fatal(err)
	}

	// data-access-api releases the frozen cohort's accession ids over the mesh.
	cipher, err := envelope.NewFromBase64(killAESKey)
	if err != nil {
		t.Fatal(err)
	}
	cohort, _ := json.Marshal(map[string][]string{"accession_ids": r.accessions})
	dapi := httptest.NewServer(mesh.NewVerifier("data-access-api", []byte(killKey), mesh.HeaderInternalKey, nil).
		Require("imaging-api")(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		var in map[string]string
		_ = json.NewDecoder(req.Body).Decode(&in)
		pid, err := cipher.Open(in["encrypted_project_id"], envelope.ProjectIDContext)
		if req.URL.Path != "/cohort/accession-ids" || err != nil || string(pid) != killHubID || in["query"] != killQuery {
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		if r.holdNext.CompareAndSwap(true, false) {
			r.held <- struct{}{}
			select {
			case <-req.Context().Done():
			case <-ctx.Done():
			}
			return
		}
		_, _ = w.Write(cohort)
	})))
	t.Cleanup(dapi.Close)

	addr := proctest.FreeAddr(t)
	r.base = "http://" + addr
	r.env = []string{"IMAGING_API_ADDR=" + addr, "IMAGING_API_DATA_DIR=" + filepath.Join(tmp, "imaging"),
		"ORTHANC_URL=" + r.pair.Staging.URL, "ORTHANC_USERNAME=" + r.pair.Staging.User, "ORTHANC_PASSWORD=" + r.pair.Staging.Password,
		"PACS_AETITLE=" + orthanctest.PACSAET, "STAGING_AETITLE=" + orthanctest.StagingAET,
		"DATA_ACCESS_API_URL=" + dapi.URL, "BASE_IMAGES_DOWNLOAD_DIR=" + filepath.Join(tmp, "images"),
		"AES_KEY_BASE64=" + killAESKey, "TRUST_INTERNAL_SERVICE_KEY=" + killKey,
		// One study at a time, so a kill finds one move in flight and
		// studies not yet started.
		"IMPORT_CONCURRENCY=1", "IMPORT_BACKOFF_MIN_SECONDS=0.2", "IMPORT_BACKOFF_MAX_SECONDS=1"}
	return r
}

// start runs imaging-api and waits until it answers.
func (r *killRig) start(name string) *proctest.Process {
	r.t.Helper()
	p := proctest.Start(r.t, name, r.bin, r.env)
	proctest.WaitHTTP(r.t, r.base+"/health")
	return p
}

// call sends a request with the internal key and decodes the 200 answer.
func (r *killRig) call(method, path string, body, out any) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequestWithContext(r.ctx, method, r.base+path, rd)
	req.Header.Set(mesh.HeaderInternalKey, killKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		r.t.Fatalf("%s %s: %d %s", method, path, resp.StatusCode, raw)
	}
	if err := json.Unmarshal(raw, out); err != nil {
		r.t.Fatalf("%s %s: %s: %v", method, path, raw, err)
	}
}

// provision creates the imaging project of the hub project.
func (r *killRig) provision() string {
	r.t.Helper()
	var created struct{ ID string }
	r.call(http.MethodPost, "/projects/create-project-from-central-hub-project", map[string]any{
		"project_id": killHubID, "trust_id": killTrustID, "project_name": "Kill", "query": killQuery, "users": []any{}}, &created)
	if created.ID == "" {
		r.t.Fatal("provisioning returned no project id")
	}
	return created.ID
}

func (r *killRig) staging() orthanctest.Statistics {
	r.t.Helper()
	st, err := r.pair.Staging.Stats(r.ctx)
	if err != nil {
		r.t.Fatal(err)
	}
	return st
}

// finish waits until the import of project id is over and checks that every
// accession is imported, and that staging holds every study once, with all
// of its instances: as many patients, studies, series and instances as the
// PACS.
func (r *killRig) finish(id string) {
	t := r.t
	t.Helper()
	status := "/retrieval/import_status_count/" + id + "?encoded_query=" + base64.RawURLEncoding.EncodeToString([]byte(killQuery))
	var pr struct {
		ProjectCreationCompleted bool            `json:"project_creation_completed"`
		ImportStatus             importer.Counts `json:"import_status"`
	}
	start := time.Now()
	deadline := start.Add(60 * time.Second)
	for {
		r.call(http.MethodGet, status, nil, &pr)
		// Accessions not queued yet count as queue_failed: only failed
		// is final before the end.
		if c := pr.ImportStatus; c.Successful == killStudies || c.Failed > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import incomplete after the restart: %+v", pr.ImportStatus)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("import over %v after the restart", time.Since(start).Round(time.Millisecond))
	if want := (importer.Counts{Successful: killStudies}); pr.ImportStatus != want || !pr.ProjectCreationCompleted {
		t.Errorf("import status %+v (creation completed %v), want %+v", pr.ImportStatus, pr.ProjectCreationCompleted, want)
	}

	want, err := r.pair.PACS.Stats(r.ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want.CountStudies != killStudies || want.CountInstances != killStudies*killPerStudy {
		t.Fatalf("PACS holds %+v", want)
	}
	if got := r.staging(); got != want {
		t.Errorf("staging holds %+v, the PACS %+v", got, want)
	}
	var staged []struct {
		ID            string
		MainDicomTags map[string]string
	}
	if err := r.pair.Staging.Do(r.ctx, http.MethodGet, "/studies?expand", nil, &staged); err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, s := range staged {
		acc := s.MainDicomTags["AccessionNumber"]
		seen[acc]++
		var st orthanctest.Statistics
		if err := r.pair.Staging.Do(r.ctx, http.MethodGet, "/studies/"+s.ID+"/statistics", nil, &st); err != nil {
			t.Fatal(err)
		}
		if st.CountSeries != killSeries || st.CountInstances != killPerStudy {
			t.Errorf("study %s in staging: %d series, %d instances; want %d, %d", acc, st.CountSeries, st.CountInstances, killSeries, killPerStudy)
		}
	}
	for _, acc := range r.accessions {
		if seen[acc] != 1 {
			t.Errorf("accession %s: %d studies in staging, want 1", acc, seen[acc])
		}
	}
}

// imaging-api is killed (SIGKILL) while it moves a cohort study from the
// PACS into staging, and started again on the same data directory: the
// import resumes where it stopped and completes, every study is in staging
// exactly once, and the status counts say so.
func TestImportResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newKillRig(t, ctx)
	first := r.start("imaging-api")
	id := r.provision()

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
			t.Fatalf("import made no progress to kill in: staging %+v", r.staging())
		}
		st := r.staging()
		complete, partial := st.CountInstances/killPerStudy, st.CountInstances%killPerStudy != 0
		if complete >= killStudies/2 {
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
		if err := r.pair.PACS.Pause(); err != nil {
			t.Fatal(err)
		}
		if held := r.staging(); held.CountInstances%killPerStudy != 0 {
			first.Kill()
			midMove = true
			t.Logf("killed after %v inside the move of study %d: staging %+v",
				time.Since(start).Round(time.Millisecond), held.CountInstances/killPerStudy+1, held)
		}
		if err := r.pair.PACS.Resume(); err != nil {
			t.Fatal(err)
		}
		if midMove {
			break
		}
	}
	if st := r.staging(); st.CountStudies >= killStudies {
		t.Fatalf("killed too late: staging already holds %+v", st)
	}

	// Restarted on the same data directory, it finishes the import.
	second := r.start("imaging-api (restarted)")
	r.finish(id)
	if midMove && !strings.Contains(second.Output(), "import resumed after restart") {
		t.Errorf("the restarted service did not report resuming the interrupted move")
	}
}

// imaging-api is killed after provisioning a project but before its cohort
// was queued (data-access-api has not answered yet): started again, it
// fetches the cohort and imports it.
func TestProvisioningResumesAfterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	r := newKillRig(t, ctx)
	first := r.start("imaging-api")
	r.holdNext.Store(true)
	id := r.provision()
	select {
	case <-r.held:
	case <-time.After(30 * time.Second):
		t.Fatal("imaging-api never asked data-access-api for the cohort")
	}
	first.Kill()
	if st := r.staging(); st.CountStudies != 0 {
		t.Fatalf("staging holds %+v before the cohort was known", st)
	}

	r.start("imaging-api (restarted)")
	r.finish(id)
}
