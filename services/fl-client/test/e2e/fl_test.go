// Package e2e runs federated learning end to end with real processes built
// from this workspace: dev-hub (the reference FL server), and two synthetic
// trusts, each with its own PostgreSQL cluster holding its slice of the
// synthetic OMOP population, its own data-access-api with a frozen cohort,
// and its own fl-client running the built-in logistic-regression job.
package e2e

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

const (
	aesKey      = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="
	meshKey     = "mesh-key-for-the-fl-end-to-end-test-0123456789"
	adminToken  = "admin-token-for-tests-0123456789abcdef"
	readerPW    = "reader-password-for-tests"
	project     = "6f1d2c3b-4a5e-4f60-8172-93a4b5c6d7e8"
	personCount = "3000"
)

func repo() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "..", "..", "..")
}

type hub struct {
	bin, addr, admin, dataDir string
}

func (h *hub) cli(t *testing.T, args ...string) string {
	t.Helper()
	return proctest.Run(t, h.bin, []string{"DEV_HUB_ADMIN_URL=http://" + h.admin, "DEV_HUB_ADMIN_TOKEN=" + adminToken}, args...)
}

// job is what GET /admin/fl/jobs/{id} answers, in the parts checked here.
type job struct {
	State      string `json:"state"`
	Round      int    `json:"round"`
	FinalModel string `json:"final_model"`
	Error      string `json:"error"`
	Rounds     []struct {
		Number  int                `json:"number"`
		OK      int                `json:"ok"`
		Metrics map[string]float64 `json:"metrics"`
		Clients []struct {
			Client string          `json:"client"`
			Status string          `json:"status"`
			Result *flproto.Result `json:"result"`
		} `json:"clients"`
	} `json:"rounds"`
}

func (h *hub) job(t *testing.T, id string) job {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+h.admin+"/admin/fl/jobs/"+id, nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var j job
	if err := json.NewDecoder(resp.Body).Decode(&j); err != nil {
		t.Fatal(err)
	}
	return j
}

func (h *hub) until(t *testing.T, id string, limit time.Duration, cond func(job) bool) job {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		j := h.job(t, id)
		if cond(j) {
			return j
		}
		if time.Now().After(deadline) {
			t.Fatalf("job %s: condition not met within %s; last state %+v", id, limit, j)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// artifacts counts the artifacts in dev-hub's store.
func (h *hub) artifacts(t *testing.T) int {
	t.Helper()
	entries, err := os.ReadDir(filepath.Join(h.dataDir, "fl-artifacts"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, e := range entries {
		if !e.IsDir() && !strings.HasSuffix(e.Name(), ".json") && !strings.HasPrefix(e.Name(), ".") {
			n++
		}
	}
	return n
}

// trust is one synthetic trust: its database, data-access-api and fl-client.
type trust struct {
	name, dataAccess string
	env              []string
	client           *proctest.Process
	bin              string
}

func (tr *trust) startClient(t *testing.T) {
	tr.client = proctest.Start(t, tr.name, tr.bin, tr.env)
}

func startTrust(t *testing.T, bins map[string]string, h *hub, index int, cohortSQL string) *trust {
	t.Helper()
	name := fmt.Sprintf("Trust_%d", index+1)
	// PostgreSQL runs as its own system user, which must reach the cluster
	// directory: t.TempDir's are private to root.
	base, err := os.MkdirTemp("", "flip-fl-omop-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o711); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "omop")
	t.Cleanup(func() { _ = os.RemoveAll(base) })
	out := proctest.Run(t, bins["omop-synth"], nil, "-start-cluster", dir, "-reader-password", readerPW,
		"-persons", personCount, "-seed", "11", "-trust-index", fmt.Sprint(index), "-trust-count", "2", "-truncate")
	t.Cleanup(func() { _ = exec.Command(bins["omop-synth"], "-stop-cluster", dir).Run() })
	var readerDSN string
	var u *url.URL
	for _, line := range strings.Split(out, "\n") {
		if v, ok := strings.CutPrefix(line, "OMOP_READER_DSN="); ok {
			readerDSN = strings.Trim(v, "'")
		}
	}
	u, err = url.Parse(readerDSN)
	if err != nil || u.User == nil {
		t.Fatalf("omop-synth printed no reader DSN: %q", out)
	}
	pw, _ := u.User.Password()

	dapi := proctest.FreeAddr(t)
	proctest.Start(t, "data-access-api-"+name, bins["data-access-api"], []string{
		"DATA_ACCESS_API_ADDR=" + dapi, "OMOP_DB_SERVICE_NAME=127.0.0.1", "OMOP_DB_PORT=" + u.Port(), "OMOP_DB_SSLMODE=disable",
		"DATA_ACCESS_POSTGRES_USER=" + u.User.Username(), "DATA_ACCESS_POSTGRES_PASSWORD=" + pw,
		"OMOP_POSTGRES_DB=" + strings.TrimPrefix(u.Path, "/"), "AES_KEY_BASE64=" + aesKey,
		"TRUST_INTERNAL_SERVICE_KEY=" + meshKey, "COHORT_QUERY_THRESHOLD=10", "COHORT_SNAPSHOT_DIR=" + t.TempDir(),
	})
	proctest.WaitHTTP(t, "http://"+dapi+"/health")

	// The approved cohort is frozen at the trust, as persist_cohort does.
	cipher, err := envelope.NewFromBase64(aesKey)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := cipher.Seal([]byte(project), envelope.ProjectIDContext)
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": enc, "query": cohortSQL})
	req, _ := http.NewRequest(http.MethodPost, "http://"+dapi+"/cohort/snapshot", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(mesh.HeaderInternalKey, meshKey)
	req.Header.Set("X-Cohort-Admin-Key", envelope.CohortAdminProof(aesKey))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusCreated {
		t.Fatalf("freeze the cohort at %s: %d", name, resp.StatusCode)
	}

	secret := ""
	sc := bufio.NewScanner(strings.NewReader(h.cli(t, "fl", "client", "add", "--name", name)))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(strings.TrimSpace(sc.Text()), "FL_CLIENT_SECRET="); ok {
			secret = strings.Trim(v, `"'`)
		}
	}
	if secret == "" {
		t.Fatal("dev-hub fl client add printed no secret")
	}
	tr := &trust{name: name, dataAccess: dapi, bin: bins["fl-client"], env: []string{
		"FL_SERVER_URL=http://" + h.addr, "FL_CLIENT_NAME=" + name, "FL_CLIENT_SECRET=" + secret,
		"TRUST_INTERNAL_SERVICE_KEY=" + meshKey, "DATA_ACCESS_API_URL=http://" + dapi, "IMAGING_API_URL=http://127.0.0.1:1",
		"FL_RUNNER=none", "FL_WORK_DIR=" + t.TempDir(), "FL_CLIENT_ADDR=" + proctest.FreeAddr(t),
		"FL_POLL_WAIT_SECONDS=5", "IMAGES_DIR=" + t.TempDir(), "LOG_LEVEL=DEBUG",
		// trust-api's egress gate (POST /egress/v1/items) is not part of this
		// run: the filters are off and results leave ungated, as in development.
		"EGRESS_GATE=off",
	}}
	tr.startClient(t)
	return tr
}

func TestFederatedEvaluationAndTraining(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end run")
	}
	root := repo()
	cohortSQL, err := os.ReadFile(filepath.Join(root, "examples", "logreg", "cohort.sql"))
	if err != nil {
		t.Fatal(err)
	}
	paramsFile := filepath.Join(root, "examples", "logreg", "params.json")
	cohortFile := filepath.Join(root, "examples", "logreg", "cohort.sql")

	binDir := t.TempDir()
	services := filepath.Join(root, "services")
	bins := map[string]string{
		"dev-hub":         proctest.Build(t, binDir, filepath.Join(services, "dev-hub"), "dev-hub", false),
		"fl-client":       proctest.Build(t, binDir, filepath.Join(services, "fl-client"), "fl-client", true),
		"data-access-api": proctest.Build(t, binDir, filepath.Join(services, "data-access-api"), "data-access-api", true),
		"omop-synth":      proctest.Build(t, binDir, filepath.Join(services, "data-access-api"), "omop-synth", true),
	}

	h := &hub{bin: bins["dev-hub"], addr: proctest.FreeAddr(t), admin: proctest.FreeAddr(t), dataDir: t.TempDir()}
	proctest.Start(t, "dev-hub", h.bin, []string{"DEV_HUB_ADDR=" + h.addr, "DEV_HUB_ADMIN_ADDR=" + h.admin,
		"DEV_HUB_ADMIN_TOKEN=" + adminToken, "DEV_HUB_DATA_DIR=" + h.dataDir, "AES_KEY_BASE64=" + aesKey}, "serve")
	proctest.WaitHTTP(t, "http://"+h.admin+"/health")

	trusts := []*trust{startTrust(t, bins, h, 0, string(cohortSQL)), startTrust(t, bins, h, 1, string(cohortSQL))}
	model := filepath.Join(t.TempDir(), "init.safetensors")
	h.cli(t, "fl", "model", "init-logreg", "--features", "5", "--out", model)
	submit := func(args ...string) string {
		base := []string{"fl", "job", "submit", "--clients", "Trust_1,Trust_2", "--model", model,
			"--job", flproto.BuiltinLogReg, "--project-id", project, "--query-file", cohortFile}
		return proctest.LastField(h.cli(t, append(base, args...)...))
	}

	t.Run("evaluation returns metrics only", func(t *testing.T) {
		h.cli(t, "fl", "job", "submit", "--kind", "evaluate", "--clients", "Trust_1", "--model", model, "--job", flproto.BuiltinLogReg,
			"--project-id", project, "--query-file", cohortFile, "--params-file", paramsFile, "--round-timeout", "1s")
		before := h.artifacts(t) // the model is at the hub now
		id := submit("--kind", "evaluate", "--params-file", paramsFile, "--round-timeout", "60s")
		j := h.until(t, id, 90*time.Second, func(j job) bool { return j.State == "completed" || j.State == "failed" })
		if j.State != "completed" || len(j.Rounds) != 1 {
			t.Fatalf("evaluate job: %+v", j)
		}
		r := j.Rounds[0]
		var samples int64
		for _, c := range r.Clients {
			if c.Status != "ok" || c.Result == nil {
				t.Fatalf("%s: %+v", c.Client, c)
			}
			if c.Result.Update != "" {
				t.Errorf("%s sent weights with an evaluation: %s", c.Client, c.Result.Update)
			}
			samples += c.Result.SampleCount
		}
		if loss := r.Metrics["loss"]; loss < 0.69 || loss > 0.70 {
			t.Errorf("the zero model's loss is %v, want ln 2", loss)
		}
		if r.Metrics["sample_count"] != float64(samples) || samples < 2000 {
			t.Errorf("round sample count %v, clients %d", r.Metrics["sample_count"], samples)
		}
		if after := h.artifacts(t); after != before {
			t.Errorf("the hub holds %d artifacts after the evaluation, %d before: weights left a trust", after, before)
		}
		if up, _ := os.ReadDir(filepath.Join(h.dataDir, "fl-uploads")); len(up) != 0 {
			t.Errorf("uploads reached the hub during an evaluation: %d", len(up))
		}
	})

	t.Run("three rounds of training improve loss and AUC", func(t *testing.T) {
		id := submit("--kind", "train", "--rounds", "3", "--params-file", paramsFile, "--round-timeout", "60s")
		j := h.until(t, id, 3*time.Minute, func(j job) bool { return j.State == "completed" || j.State == "failed" })
		if j.State != "completed" || len(j.Rounds) != 3 || j.FinalModel == "" {
			t.Fatalf("train job: %+v", j)
		}
		for i, r := range j.Rounds {
			t.Logf("round %d: loss %.4f auc %.4f samples %.0f", r.Number, r.Metrics["loss"], r.Metrics["auc"], r.Metrics["sample_count"])
			if r.OK != 2 {
				t.Errorf("round %d: %d ok updates, want 2", r.Number, r.OK)
			}
			if i > 0 {
				prev := j.Rounds[i-1].Metrics
				if r.Metrics["loss"] >= prev["loss"] {
					t.Errorf("round %d: loss %v did not fall from %v", r.Number, r.Metrics["loss"], prev["loss"])
				}
				if r.Metrics["auc"] < j.Rounds[0].Metrics["auc"]+0.2 {
					t.Errorf("round %d: AUC %v is not well above the untrained model's %v", r.Number, r.Metrics["auc"], j.Rounds[0].Metrics["auc"])
				}
			}
		}
		// The final model, evaluated at both trusts, is better than every
		// model before it.
		eid := proctest.LastField(h.cli(t, "fl", "job", "submit", "--kind", "evaluate", "--clients", "Trust_1,Trust_2", "--model", j.FinalModel,
			"--job", flproto.BuiltinLogReg, "--project-id", project, "--query-file", cohortFile, "--params-file", paramsFile, "--round-timeout", "60s"))
		e := h.until(t, eid, 90*time.Second, func(j job) bool { return j.State == "completed" || j.State == "failed" })
		if e.State != "completed" {
			t.Fatalf("evaluation of the final model: %+v", e)
		}
		final := e.Rounds[0].Metrics
		t.Logf("final model: loss %.4f auc %.4f", final["loss"], final["auc"])
		if final["loss"] >= j.Rounds[2].Metrics["loss"] || final["auc"] < 0.8 {
			t.Errorf("final model: loss %v (round 3 started at %v), AUC %v", final["loss"], j.Rounds[2].Metrics["loss"], final["auc"])
		}
	})

	t.Run("a client killed mid-round rejoins the next round", func(t *testing.T) {
		// Many local epochs keep the job running long enough to be killed in it.
		params := `{"features":[{"column":"age","center":55,"scale":20},{"column":"male","center":0.5,"scale":0.5},` +
			`{"column":"t2d","center":0.1,"scale":0.3},{"column":"bmi","center":27,"scale":5},{"column":"sbp","center":125,"scale":20}],` +
			`"label":"outcome","epochs":60000,"learning_rate":0.5}`
		id := submit("--kind", "train", "--rounds", "3", "--min-clients", "1", "--params", params, "--round-timeout", "20s")
		victim := trusts[1]
		h.until(t, id, 60*time.Second, func(j job) bool {
			if len(j.Rounds) == 0 {
				return false
			}
			for _, c := range j.Rounds[0].Clients {
				if c.Client == victim.name && c.Status == "running" {
					return true
				}
			}
			return false
		})
		victim.client.Kill()
		j := h.until(t, id, 60*time.Second, func(j job) bool { return j.Round >= 2 || j.State == "failed" })
		if j.State == "failed" {
			t.Fatalf("the job failed when one client died: %s", j.Error)
		}
		status := map[string]string{}
		for _, c := range j.Rounds[0].Clients {
			status[c.Client] = c.Status
		}
		if status[trusts[0].name] != "ok" || status[victim.name] != "missing" || j.Rounds[0].OK != 1 {
			t.Fatalf("round 1 closed with %v (ok %d); want the survivor ok and the killed client missing", status, j.Rounds[0].OK)
		}
		victim.startClient(t)
		j = h.until(t, id, 2*time.Minute, func(j job) bool { return j.State == "completed" || j.State == "failed" })
		if j.State != "completed" {
			t.Fatalf("job after the restart: %+v", j)
		}
		for _, r := range j.Rounds[1:] {
			for _, c := range r.Clients {
				if c.Status != "ok" {
					t.Errorf("round %d: %s is %s after the restart", r.Number, c.Client, c.Status)
				}
			}
		}
	})
}
