// Package e2e drives the imaging path end to end with real processes:
// dev-hub (hub API and admin CLI), trust-api, data-access-api on a synthetic
// OMOP database (PostgreSQL started by omop-synth), imaging-api, and two
// Orthanc processes (PACS loaded by dicom-synth, and staging).
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

const (
	cohortQuery = "SELECT person_id, accession_id FROM image_occurrence ORDER BY accession_id LIMIT 20"
	hubProject  = "3f2b6c1a-8d4e-4f5a-9b6c-7d8e9f0a1b2c"
)

func build(t *testing.T, dir string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, b := range []struct{ module, cmd, cgo string }{
		{"trust-api", "trust-api", "0"}, {"dev-hub", "dev-hub", "0"}, {"data-access-api", "data-access-api", "1"},
		{"data-access-api", "omop-synth", "1"}, {"imaging-api", "imaging-api", "0"}, {"imaging-api", "dicom-synth", "0"},
	} {
		out[b.cmd] = goBuild(t, dir, b.module, b.cmd, b.cgo)
	}
	return out
}

// goBuild builds services/<module>/cmd/<cmd> into dir and returns its path.
func goBuild(t *testing.T, dir, module, cmd, cgo string) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return proctest.Build(t, dir, filepath.Join(filepath.Dir(file), "..", "..", "..", module), cmd, cgo == "1")
}

// freePort returns a loopback port that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	_, port, _ := net.SplitHostPort(proctest.FreeAddr(t))
	n, _ := strconv.Atoi(port)
	return n
}

// create_imaging at the hub provisions the project, the cohort's studies move
// from the PACS into staging, get_imaging_status reports the counts to the
// hub, and an FL job downloads an accession.
func TestImagingFromTheHub(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	tmp := t.TempDir()
	bins := build(t, filepath.Join(tmp, "bin"))

	// OMOP database with 300 synthetic persons.
	work, err := os.MkdirTemp("", "flip-e2e-imaging-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(work)
	_ = os.Chmod(work, 0o711)
	omopDir := filepath.Join(work, "omop")
	pgPort := freePort(t)
	synthOut := proctest.Run(t, bins["omop-synth"], nil, "-start-cluster", omopDir, "-port", strconv.Itoa(pgPort), "-reader-password", "reader-pw",
		"-persons", "300", "-seed", "3", "-truncate")
	defer proctest.Run(t, bins["omop-synth"], nil, "-stop-cluster", omopDir)
	var adminDSN string
	for _, line := range strings.Split(synthOut, "\n") {
		if v, ok := strings.CutPrefix(line, "OMOP_ADMIN_DSN="); ok {
			adminDSN = strings.Trim(v, `'"`)
		}
	}
	if adminDSN == "" {
		t.Fatalf("omop-synth printed no OMOP_ADMIN_DSN:\n%s", synthOut)
	}

	// PACS and staging; the PACS holds the first 20 studies of image_occurrence.
	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer pair.Close()
	proctest.Run(t, bins["dicom-synth"], nil, "-dsn", adminDSN, "-limit", "20", "-instances", "2",
		"-orthanc", pair.PACS.URL, "-user", pair.PACS.User, "-password", pair.PACS.Password)

	// Hub, kit, services.
	hubAddr, adminAddr := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	token := "admin-token-for-tests-0123456789abcdef"
	proctest.Start(t, "dev-hub", bins["dev-hub"], []string{"DEV_HUB_ADDR=" + hubAddr, "DEV_HUB_ADMIN_ADDR=" + adminAddr,
		"DEV_HUB_ADMIN_TOKEN=" + token, "DEV_HUB_DATA_DIR=" + filepath.Join(tmp, "hub"),
		"AES_KEY_BASE64=AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="}, "serve")
	proctest.WaitHTTP(t, "http://"+adminAddr+"/health")
	cli := []string{"DEV_HUB_ADMIN_URL=http://" + adminAddr, "DEV_HUB_ADMIN_TOKEN=" + token}
	kit := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(proctest.Run(t, bins["dev-hub"], cli, "trust", "add", "--name", "e2e-img", "--hub-url", "http://"+hubAddr+"/api")))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			kit[k] = strings.Trim(v, `"'`)
		}
	}
	dapi, imaging := fmt.Sprintf("127.0.0.1:%d", freePort(t)), fmt.Sprintf("127.0.0.1:%d", freePort(t))
	images := filepath.Join(tmp, "images")
	common := []string{"AES_KEY_BASE64=" + kit["AES_KEY_BASE64"], "TRUST_INTERNAL_SERVICE_KEY=" + kit["TRUST_INTERNAL_SERVICE_KEY"]}
	proctest.Start(t, "data-access-api", bins["data-access-api"], append([]string{"DATA_ACCESS_API_ADDR=" + dapi,
		"OMOP_DB_SERVICE_NAME=127.0.0.1", "OMOP_DB_PORT=" + strconv.Itoa(pgPort), "OMOP_DB_SSLMODE=disable",
		"DATA_ACCESS_POSTGRES_USER=data_analyst_reader", "DATA_ACCESS_POSTGRES_PASSWORD=reader-pw", "OMOP_POSTGRES_DB=omop",
		"COHORT_SNAPSHOT_DIR=" + filepath.Join(tmp, "snapshots"), "COHORT_QUERY_THRESHOLD=5"}, common...))
	proctest.Start(t, "imaging-api", bins["imaging-api"], append([]string{"IMAGING_API_ADDR=" + imaging,
		"IMAGING_API_DATA_DIR=" + filepath.Join(tmp, "imaging"), "ORTHANC_URL=" + pair.Staging.URL,
		"ORTHANC_USERNAME=" + pair.Staging.User, "ORTHANC_PASSWORD=" + pair.Staging.Password,
		"PACS_AETITLE=" + orthanctest.PACSAET, "STAGING_AETITLE=" + orthanctest.StagingAET,
		"DATA_ACCESS_API_URL=http://" + dapi, "BASE_IMAGES_DOWNLOAD_DIR=" + images,
		"IMPORT_BACKOFF_MIN_SECONDS=0.2", "IMPORT_BACKOFF_MAX_SECONDS=1"}, common...))
	proctest.WaitHTTP(t, "http://"+dapi+"/health")
	proctest.WaitHTTP(t, "http://"+imaging+"/health")
	proctest.Start(t, "trust-api", bins["trust-api"], append([]string{
		"CENTRAL_HUB_API_URL=" + kit["CENTRAL_HUB_API_URL"], "TRUST_API_KEY=" + kit["TRUST_API_KEY"],
		"TRUST_API_KEY_HEADER=Authorization", "EXPECTED_TRUST_ID=" + kit["EXPECTED_TRUST_ID"],
		"DATA_ACCESS_API_URL=http://" + dapi, "IMAGING_API_URL=http://" + imaging, "XNAT_URL=http://127.0.0.1:1",
		"OMOP_DB_HOST=127.0.0.1", "OMOP_DB_PORT=" + strconv.Itoa(pgPort), "POLL_INTERVAL_SECONDS=0.2",
		"HEARTBEAT_INTERVAL_SECONDS=0.5", "TRUST_API_ADDR=" + fmt.Sprintf("127.0.0.1:%d", freePort(t)),
		"TRUST_API_DATA_DIR=" + filepath.Join(tmp, "trust")}, common...))

	cipher, err := envelope.NewFromBase64(kit["AES_KEY_BASE64"])
	if err != nil {
		t.Fatal(err)
	}
	task := func(typ string, payload any) (string, map[string]any) {
		t.Helper()
		b, _ := json.Marshal(payload)
		id := proctest.LastField(proctest.Run(t, bins["dev-hub"], cli, "task", "submit", "--trust", "e2e-img", "--type", typ, "--payload", string(b)))
		proctest.Run(t, bins["dev-hub"], cli, "task", "wait", id, "--timeout", "90s")
		var shown struct {
			Status string  `json:"status"`
			Result *string `json:"result"`
		}
		if err := json.Unmarshal([]byte(proctest.Run(t, bins["dev-hub"], cli, "task", "show", id)), &shown); err != nil {
			t.Fatal(err)
		}
		var result map[string]any
		if shown.Result != nil {
			_ = json.Unmarshal([]byte(*shown.Result), &result)
		}
		return shown.Status, result
	}

	// The approved cohort is frozen first, then imaging is provisioned.
	enc, _ := cipher.Seal([]byte(hubProject), envelope.ProjectIDContext)
	if status, res := task("persist_cohort", map[string]string{"encrypted_project_id": enc, "query": cohortQuery}); status != "COMPLETED" || res["row_count"] != 20.0 {
		t.Fatalf("persist_cohort: %s %v", status, res)
	}
	status, created := task("create_imaging", map[string]any{"project_id": hubProject, "trust_id": kit["EXPECTED_TRUST_ID"],
		"project_name": "E2E imaging", "query": cohortQuery, "users": []any{}})
	imagingID, _ := created["ID"].(string)
	if status != "COMPLETED" || imagingID == "" {
		t.Fatalf("create_imaging: %s %v", status, created)
	}
	encoded := base64.RawURLEncoding.EncodeToString([]byte(cohortQuery))
	var counts map[string]any
	deadline := time.Now().Add(90 * time.Second)
	for {
		_, res := task("get_imaging_status", map[string]string{"imaging_project_id": imagingID, "encoded_query": encoded})
		counts, _ = res["import_status"].(map[string]any)
		if counts["successful_count"] == 20.0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("import incomplete at the hub: %v", res)
		}
		time.Sleep(300 * time.Millisecond)
	}
	for _, k := range []string{"failed_count", "processing_count", "queued_count", "queue_failed_count"} {
		if counts[k] != 0.0 {
			t.Errorf("%s = %v", k, counts[k])
		}
	}
	if stats, err := pair.Staging.Stats(ctx); err != nil || stats.CountStudies != 20 {
		t.Errorf("staging: %+v %v", stats, err)
	}

	// An FL job on net-1 downloads the first accession of its dataframe.
	var accession string
	{
		b, _ := json.Marshal(map[string]string{"encrypted_project_id": enc, "query": cohortQuery})
		req, _ := http.NewRequest(http.MethodPost, "http://"+dapi+"/cohort/accession-ids", bytes.NewReader(b))
		req.Header.Set(mesh.HeaderInternalKey, kit["TRUST_INTERNAL_SERVICE_KEY"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var ids struct {
			AccessionIDs []string `json:"accession_ids"`
		}
		_ = json.NewDecoder(resp.Body).Decode(&ids)
		resp.Body.Close()
		if len(ids.AccessionIDs) != 20 {
			t.Fatalf("accession ids: %v", ids.AccessionIDs)
		}
		accession = ids.AccessionIDs[0]
	}
	b, _ := json.Marshal(map[string]string{"encrypted_central_hub_project_id": enc, "accession_id": accession})
	req, _ := http.NewRequest(http.MethodPost, "http://"+imaging+"/download/images/net-1?resource_type=DICOM", bytes.NewReader(b))
	req.Header.Set(mesh.HeaderInternalKey, kit["TRUST_INTERNAL_SERVICE_KEY"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	var got struct{ Path string }
	_ = json.NewDecoder(resp.Body).Decode(&got)
	resp.Body.Close()
	files, _ := filepath.Glob(filepath.Join(got.Path, "scans", "*", "resources", "DICOM", "files", "*"))
	if resp.StatusCode != 200 || got.Path != filepath.Join(images, "net-1", hubProject, accession) || len(files) == 0 {
		t.Fatalf("download: %d %q, %d files", resp.StatusCode, got.Path, len(files))
	}
}
