// Package e2e drives real processes end to end: dev-hub (hub API and admin
// CLI), trust-api and data-access-api built from this workspace, on a real
// PostgreSQL cluster loaded with the hand-checked OMOP fixture.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/data-access-api/internal/pgcluster"
	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

const imagingQuery = `SELECT p.person_id, io.accession_id, io.modality_concept_id
FROM person p JOIN image_occurrence io ON io.person_id = p.person_id`

// build compiles the three binaries into dir.
func build(t *testing.T, dir string) map[string]string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	services := filepath.Join(filepath.Dir(file), "..", "..", "..")
	out := map[string]string{}
	for _, b := range []struct {
		module string
		cgo    bool
	}{{"trust-api", false}, {"dev-hub", false}, {"data-access-api", true}} {
		out[b.module] = proctest.Build(t, dir, filepath.Join(services, b.module), b.module, b.cgo)
	}
	return out
}

type hub struct {
	bin, addr, admin, token string
}

func (h *hub) cli(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = []string{"DEV_HUB_ADMIN_URL=http://" + h.admin, "DEV_HUB_ADMIN_TOKEN=" + h.token}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("dev-hub %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

func (h *hub) get(t *testing.T, path string, v any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.admin+path, nil)
	req.Header.Set("Authorization", "Bearer "+h.token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		t.Fatalf("GET %s: %v", path, err)
	}
}

func getJSON(t *testing.T, url string) map[string]any {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

// A cohort_query and a persist_cohort submitted at dev-hub run through
// trust-api against the real data-access-api and database; the statistics
// reach the hub, the cohort is frozen, and the service answers 503 while the
// database is down and recovers by itself when it returns.
func TestCohortTasksThroughTrustAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	bins := build(t, t.TempDir())

	db, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := pgtest.ExecFile(ctx, db.AdminDSN, "../../testdata/fixture.sql"); err != nil {
		t.Fatal(err)
	}

	h := &hub{bin: bins["dev-hub"], addr: proctest.FreeAddr(t), admin: proctest.FreeAddr(t), token: "admin-token-for-tests-0123456789abcdef"}
	aesKey := "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	proctest.Start(t, "dev-hub", h.bin, []string{"DEV_HUB_ADDR=" + h.addr, "DEV_HUB_ADMIN_ADDR=" + h.admin, "DEV_HUB_ADMIN_TOKEN=" + h.token,
		"DEV_HUB_DATA_DIR=" + t.TempDir(), "AES_KEY_BASE64=" + aesKey}, "serve")
	proctest.WaitHTTP(t, "http://"+h.admin+"/health")
	kit := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(h.cli(t, "trust", "add", "--name", "e2e-omop", "--hub-url", "http://"+h.addr+"/api")))
	for sc.Scan() {
		if k, v, ok := strings.Cut(strings.TrimSpace(sc.Text()), "="); ok && !strings.HasPrefix(k, "#") {
			kit[k] = strings.Trim(v, `"'`)
		}
	}

	snapDir := t.TempDir()
	dapiAddr := proctest.FreeAddr(t)
	proctest.Start(t, "data-access-api", bins["data-access-api"], []string{
		"DATA_ACCESS_API_ADDR=" + dapiAddr, "LOG_LEVEL=DEBUG",
		"OMOP_DB_SERVICE_NAME=127.0.0.1", "OMOP_DB_PORT=" + strconv.Itoa(db.Cluster.Port), "OMOP_DB_SSLMODE=disable",
		"DATA_ACCESS_POSTGRES_USER=" + pgcluster.Reader, "DATA_ACCESS_POSTGRES_PASSWORD=" + pgtest.ReaderPassword,
		"OMOP_POSTGRES_DB=" + pgcluster.Database, "AES_KEY_BASE64=" + kit["AES_KEY_BASE64"],
		"TRUST_INTERNAL_SERVICE_KEY=" + kit["TRUST_INTERNAL_SERVICE_KEY"], "COHORT_QUERY_THRESHOLD=5",
		"COHORT_SNAPSHOT_DIR=" + snapDir, "COHORT_QUERY_TIMEOUT_SECONDS=30",
	})
	proctest.WaitHTTP(t, "http://"+dapiAddr+"/health")
	if health := getJSON(t, "http://"+dapiAddr+"/health"); health["database"] != "ok" || health["status"] != "ok" {
		t.Errorf("/health: %v", health)
	}
	proctest.Start(t, "trust-api", bins["trust-api"], []string{
		"CENTRAL_HUB_API_URL=" + kit["CENTRAL_HUB_API_URL"], "TRUST_API_KEY=" + kit["TRUST_API_KEY"],
		"TRUST_API_KEY_HEADER=Authorization", "AES_KEY_BASE64=" + kit["AES_KEY_BASE64"],
		"TRUST_INTERNAL_SERVICE_KEY=" + kit["TRUST_INTERNAL_SERVICE_KEY"], "EXPECTED_TRUST_ID=" + kit["EXPECTED_TRUST_ID"],
		"DATA_ACCESS_API_URL=http://" + dapiAddr, "IMAGING_API_URL=http://127.0.0.1:1", "XNAT_URL=http://127.0.0.1:1",
		"OMOP_DB_HOST=127.0.0.1", "OMOP_DB_PORT=" + strconv.Itoa(db.Cluster.Port),
		"POLL_INTERVAL_SECONDS=0.2", "HEARTBEAT_INTERVAL_SECONDS=0.5", "TRUST_API_ADDR=" + proctest.FreeAddr(t),
		"TRUST_API_DATA_DIR=" + t.TempDir(),
	})

	// cohort_query: statistics computed in PostgreSQL reach the hub.
	const queryID = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	id := proctest.LastField(h.cli(t, "task", "submit", "--trust", "e2e-omop", "--type", "cohort_query", "--sql", imagingQuery,
		"--project-id", "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f", "--query-id", queryID))
	h.cli(t, "task", "wait", id, "--timeout", "60s")
	var task struct {
		Status string `json:"status"`
	}
	h.get(t, "/admin/tasks/"+id, &task)
	var results []struct {
		RecordCount int `json:"record_count"`
		Data        []struct {
			Name    string `json:"name"`
			Results []struct {
				Value string `json:"value"`
				Count int    `json:"count"`
			} `json:"results"`
		} `json:"data"`
	}
	h.get(t, "/admin/cohort-results?query_id="+queryID, &results)
	if task.Status != "COMPLETED" || len(results) != 1 || results[0].RecordCount != 12 || len(results[0].Data) != 5 {
		t.Fatalf("task %s, results %+v; want COMPLETED with record_count 12 and 5 statistics", task.Status, results)
	}
	modality := fmt.Sprint(results[0].Data[4])
	if modality != "{Modality Distribution [{CT 12} {MR 8}]}" {
		t.Errorf("modality chart at the hub: %s", modality)
	}

	// persist_cohort: the approved cohort is frozen on the trust.
	cipher, err := envelope.NewFromBase64(kit["AES_KEY_BASE64"])
	if err != nil {
		t.Fatal(err)
	}
	project := "5b0c8e4a-1d2f-4e3a-9b7c-6d5e4f3a2b1c"
	enc, _ := cipher.Seal([]byte(project), envelope.ProjectIDContext)
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": enc, "query": imagingQuery})
	id = proctest.LastField(h.cli(t, "task", "submit", "--trust", "e2e-omop", "--type", "persist_cohort", "--payload", string(body)))
	h.cli(t, "task", "wait", id, "--timeout", "60s")
	var persisted struct {
		Status string  `json:"status"`
		Result *string `json:"result"`
	}
	h.get(t, "/admin/tasks/"+id, &persisted)
	if persisted.Status != "COMPLETED" || persisted.Result == nil || !strings.Contains(*persisted.Result, `"row_count":24`) {
		t.Fatalf("persist_cohort: %+v", persisted)
	}
	if _, err := os.Stat(filepath.Join(snapDir, project, "membership.json")); err != nil {
		t.Errorf("frozen membership not on disk: %v", err)
	}

	// The database goes away: 503 with a clear message; it comes back: 200.
	post := func() (int, string) {
		b, _ := json.Marshal(map[string]string{"encrypted_project_id": enc, "query_id": "q", "query_name": "n",
			"query": imagingQuery, "trust_id": "t"})
		req, _ := http.NewRequest(http.MethodPost, "http://"+dapiAddr+"/cohort", bytes.NewReader(b))
		req.Header.Set(mesh.HeaderInternalKey, kit["TRUST_INTERNAL_SERVICE_KEY"])
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp.StatusCode, fmt.Sprint(m["detail"])
	}
	if err := db.Cluster.Stop(); err != nil {
		t.Fatal(err)
	}
	if code, detail := post(); code != 503 || !strings.Contains(detail, "unavailable") {
		t.Errorf("database down: %d %s", code, detail)
	}
	if health := getJSON(t, "http://"+dapiAddr+"/health"); health["database"] != "unavailable" || health["status"] != "ok" {
		t.Errorf("/health while the database is down: %v", health)
	}
	restarted, err := pgcluster.Start(ctx, pgcluster.Options{Dir: db.Cluster.Dir, Port: db.Cluster.Port})
	if err != nil {
		t.Fatal(err)
	}
	defer restarted.Stop()
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, detail := post()
		if code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after the database returned: %d %s", code, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
