package cli

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/safetensors"
)

// flClient plays a trust's fl-client with the env lines `fl client add` printed.
type flClient struct {
	t   *testing.T
	env map[string]string
}

func (c *flClient) call(method, path string, body, out any) int {
	c.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, c.env["FL_SERVER_URL"]+path, rd)
	req.Header.Set(flproto.HeaderClient, c.env["FL_CLIENT_NAME"])
	req.Header.Set("Authorization", "Bearer "+c.env["FL_CLIENT_SECRET"])
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			c.t.Fatal(err)
		}
	}
	return resp.StatusCode
}

func (c *flClient) next() flproto.Task {
	c.t.Helper()
	var task flproto.Task
	if code := c.call(http.MethodGet, "/fl/v1/tasks/next?wait=5", nil, &task); code != http.StatusOK {
		c.t.Fatalf("%s: next task HTTP %d", c.env["FL_CLIENT_NAME"], code)
	}
	return task
}

// uploadArtifact stores data through the admin API and returns its id.
func (h *hub) uploadArtifact(t *testing.T, data []byte) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, h.adminURL+"/admin/fl/artifacts", bytes.NewReader(data))
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var m flproto.Manifest
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&m) != nil {
		t.Fatalf("upload artifact: HTTP %d", resp.StatusCode)
	}
	return m.ID
}

func TestFLTrainingThroughTheCLI(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	dir := t.TempDir()

	clients := map[string]*flClient{}
	for _, name := range []string{"Trust_1", "Trust_2"} {
		env := parseKit(t, h.mustCLI(t, "fl", "client", "add", "--name", name))
		if env["FL_CLIENT_NAME"] != name || len(env["FL_CLIENT_SECRET"]) != 43 || env["FL_SERVER_URL"]+"/api" != h.apiURL {
			t.Fatalf("client env %v (hub API %s)", env, h.apiURL)
		}
		clients[name] = &flClient{t: t, env: env}
	}
	if code, _, errOut := h.cli(t, "fl", "client", "add", "--name", "Trust_1"); code != 1 || !strings.Contains(errOut, "already exists") {
		t.Fatalf("duplicate client: exit %d %q", code, errOut)
	}

	modelFile := filepath.Join(dir, "init.safetensors")
	out := h.mustCLI(t, "fl", "model", "init-logreg", "--features", "3", "--out", modelFile)
	st, err := safetensors.Open(modelFile)
	if err != nil {
		t.Fatal(err)
	}
	w, _ := st.Floats("weight")
	st.Close()
	if len(w) != 3 || w[0] != 0 || !strings.HasPrefix(out, "sha256:") {
		t.Fatalf("init-logreg printed %q, weight %v", out, w)
	}

	if code, _, _ := h.cli(t, "fl", "job", "submit", "--kind", "train"); code != 2 {
		t.Fatalf("submit without clients and model: exit %d, want 2", code)
	}
	project := "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f"
	jobID := strings.TrimSpace(h.mustCLI(t, "fl", "job", "submit", "--kind", "train", "--clients", "Trust_1,Trust_2",
		"--rounds", "2", "--round-timeout", "1m", "--model", modelFile, "--project-id", project,
		"--query", "SELECT * FROM cohort", "--params", `{"epochs":2}`))

	var update bytes.Buffer
	uw, _ := safetensors.FloatTensor("weight", safetensors.F32, []int64{3}, []float64{1, 2, 3})
	ub, _ := safetensors.FloatTensor("bias", safetensors.F32, []int64{1}, []float64{1})
	if err := safetensors.Encode(&update, []safetensors.Tensor{uw, ub}, nil); err != nil {
		t.Fatal(err)
	}
	updateID := h.uploadArtifact(t, update.Bytes())

	cipher, _ := envelope.NewFromBase64(testAES)
	for round := 1; round <= 2; round++ {
		for name, c := range clients {
			task := c.next()
			if task.JobID != jobID || task.Round != round || task.Job.Name != flproto.BuiltinLogReg || string(task.Params) != `{"epochs":2}` {
				t.Fatalf("%s round %d: task %+v", name, round, task)
			}
			if p, err := cipher.Open(task.Data.EncryptedProjectID, envelope.ProjectIDContext); err != nil || string(p) != project {
				t.Fatalf("encrypted_project_id opens to %q (%v)", p, err)
			}
			res := flproto.Result{Status: "ok", Update: updateID, SampleCount: 50, Metrics: map[string]float64{"loss": 0.25 * float64(round)}}
			if code := c.call(http.MethodPost, "/fl/v1/tasks/"+task.ID+"/result", res, nil); code != http.StatusOK {
				t.Fatalf("%s result HTTP %d", name, code)
			}
		}
	}
	out = h.mustCLI(t, "fl", "job", "wait", jobID, "--timeout", "10s", "--interval", "20ms")
	for _, want := range []string{"round 1/2 closed: 2 of 2 clients returned, 2 ok, 100 samples loss=0.25", "round 2/2 closed", "loss=0.5", "completed, final model sha256:"} {
		if !strings.Contains(out, want) {
			t.Fatalf("wait output lacks %q:\n%s", want, out)
		}
	}
	if out := h.mustCLI(t, "fl", "job", "show", jobID); !strings.Contains(out, "completed") || !strings.Contains(out, "round 2/2 closed") {
		t.Fatalf("show:\n%s", out)
	}
	if out := h.mustCLI(t, "fl", "job", "list"); !strings.Contains(out, jobID) || !strings.Contains(out, "2/2") {
		t.Fatalf("list:\n%s", out)
	}
	final := filepath.Join(dir, "final.safetensors")
	h.mustCLI(t, "fl", "model", "get", jobID, "--out", final)
	st, err = safetensors.Open(final)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	w, _ = st.Floats("weight")
	b, _ := st.Floats("bias")
	// Two rounds, each adding the (identical) update in full.
	if !nearAll(w, []float64{2, 4, 6}) || b[0] != 2 {
		t.Fatalf("final model weight %v bias %v", w, b)
	}
	if out := h.mustCLI(t, "fl", "client", "list"); strings.Contains(out, "never") || !strings.Contains(out, "Trust_2") {
		t.Fatalf("client list:\n%s", out)
	}
}

func nearAll(got, want []float64) bool {
	if len(got) != len(want) {
		return false
	}
	for i := range got {
		if d := got[i] - want[i]; d > 1e-6 || d < -1e-6 {
			return false
		}
	}
	return true
}

func TestFLJobCancelAndWait(t *testing.T) {
	t.Parallel()
	h := startHub(t, t.TempDir())
	h.mustCLI(t, "fl", "client", "add", "--name", "Trust_1")
	modelFile := filepath.Join(t.TempDir(), "m.safetensors")
	modelID := strings.Fields(h.mustCLI(t, "fl", "model", "init-logreg", "--features", "2", "--out", modelFile))[0]
	// An id names a model already on the server; a file is uploaded first.
	if code, _, errOut := h.cli(t, "fl", "job", "submit", "--kind", "evaluate", "--clients", "Trust_1", "--model", modelID, "--query", "SELECT 1"); code != 1 || !strings.Contains(errOut, "does not exist") {
		t.Fatalf("submit with a model not uploaded: exit %d %q", code, errOut)
	}
	jobID := strings.TrimSpace(h.mustCLI(t, "fl", "job", "submit", "--kind", "evaluate", "--clients", "Trust_1",
		"--model", modelFile, "--query", "SELECT 1"))
	if out := h.mustCLI(t, "fl", "job", "cancel", jobID); strings.TrimSpace(out) != jobID+" cancelled" {
		t.Fatalf("cancel printed %q", out)
	}
	code, out, errOut := h.cli(t, "fl", "job", "wait", jobID, "--timeout", "2s", "--interval", "20ms")
	if code != 1 || !strings.Contains(out, "cancelled") || !strings.Contains(errOut, "cancelled by the operator") {
		t.Fatalf("wait on a cancelled job: exit %d %q %q", code, out, errOut)
	}
	if code, _, errOut := h.cli(t, "fl", "model", "get", jobID, "--out", modelFile+".out"); code != 1 || !strings.Contains(errOut, "no final model") {
		t.Fatalf("model get of an evaluate job: exit %d %q", code, errOut)
	}
	if _, err := os.Stat(modelFile + ".out"); err == nil {
		t.Fatal("model get wrote a file")
	}
}
