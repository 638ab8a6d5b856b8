package e2e

import (
	"encoding/json"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/envelope"
)

// A cohort_query submitted with the CLI reaches the stand-in data-access-api
// with mesh authentication, and its statistics arrive at the hub's
// /api/cohort/results while the task ends COMPLETED.
func TestCohortQueryRoundTrip(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-cohort")
	s := startStandin(t, h.bin, kit, 0)
	node := startTrust(t, kit, s.addr, t.TempDir())

	id := submitCohort(t, h, "e2e-cohort")
	h.mustCLI(t, "task", "wait", id, "--timeout", "60s")

	task := h.task(t, id)
	if task.Status != "COMPLETED" || task.ResultPosts != 1 {
		t.Fatalf("task = %+v, want COMPLETED with one accepted result", task)
	}
	reqs := s.requests(t)
	if len(reqs) != 1 {
		t.Fatalf("stand-in received %d requests, want 1: %+v", len(reqs), reqs)
	}
	r := reqs[0]
	if r.Method != http.MethodPost || r.Path != "/cohort" || r.Caller != "trust-api" || r.AuthScheme != "jwt" {
		t.Fatalf("stand-in request = %+v, want POST /cohort from trust-api with a mesh JWT", r)
	}
	var body map[string]any
	if err := json.Unmarshal(r.Body, &body); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"query_id", "trust_id", "query", "encrypted_project_id", "query_name"} {
		if _, ok := body[k]; !ok {
			t.Errorf("the cohort request body lacks %q (FLIP passes the whole payload): %s", k, r.Body)
		}
	}
	if body["trust_id"] != kit["EXPECTED_TRUST_ID"] {
		t.Errorf("trust_id in body = %v, want %s", body["trust_id"], kit["EXPECTED_TRUST_ID"])
	}

	var results []struct {
		QueryID       string `json:"query_id"`
		TrustID       string `json:"trust_id"`
		RecordCount   int    `json:"record_count"`
		ReceivedCount int    `json:"received_count"`
		Data          []struct {
			Name    string `json:"name"`
			Results []struct {
				Value any `json:"value"`
				Count int `json:"count"`
			} `json:"results"`
		} `json:"data"`
	}
	if code := h.admin(t, http.MethodGet, "/admin/cohort-results?query_id="+body["query_id"].(string), nil, &results); code != http.StatusOK {
		t.Fatalf("cohort results: HTTP %d", code)
	}
	if len(results) != 1 || results[0].RecordCount != 120 || results[0].ReceivedCount != 1 || len(results[0].Data) != 3 {
		t.Fatalf("hub cohort results = %+v, want one row with record_count 120 and 3 statistics", results)
	}
	for _, stat := range results[0].Data {
		for _, v := range stat.Results {
			if _, ok := v.Value.(string); !ok {
				t.Errorf("statistic %s value %v (%T) reached the hub unstringified", stat.Name, v.Value, v.Value)
			}
		}
	}
	var trusts []struct {
		Name           string         `json:"name"`
		Online         bool           `json:"online"`
		ServicesHealth map[string]any `json:"services_health"`
	}
	h.admin(t, http.MethodGet, "/admin/trusts", nil, &trusts)
	eventually(t, 10*time.Second, "the trust online with a health snapshot", func() bool {
		h.admin(t, http.MethodGet, "/admin/trusts", nil, &trusts)
		return len(trusts) == 1 && trusts[0].Online && trusts[0].ServicesHealth["trust-api"] != nil
	})

	// SIGTERM is a clean shutdown.
	node.stop(t)
	if code := node.exitCode(t, time.Second); code != 0 {
		t.Fatalf("trust-api exit code after SIGTERM = %d, want 0", code)
	}
}

// The hub goes down mid-run for HUB_OUTAGE (default 30 s) and comes back:
// every result, and every cohort result, is delivered exactly once and every
// handler ran once.
func TestHubOutageDeliversEveryResultOnce(t *testing.T) {
	t.Parallel()
	outage := 30 * time.Second
	if v := os.Getenv("E2E_HUB_OUTAGE"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatal(err)
		}
		outage = d
	}
	const n = 12
	h := startHub(t)
	kit := h.kit(t, "e2e-outage")
	s := startStandin(t, h.bin, kit, 300*time.Millisecond)
	ids := make([]string, n)
	for i := range ids {
		ids[i] = submitCohort(t, h, "e2e-outage")
	}
	startTrust(t, kit, s.addr, t.TempDir(), "TASK_WORKERS=2")

	// Take the hub down as soon as the first result lands: the rest are
	// claimed and running, and their results must wait for the hub.
	eventually(t, 30*time.Second, "the first result", func() bool {
		for _, id := range ids {
			if h.task(t, id).Status == "COMPLETED" {
				return true
			}
		}
		return false
	})
	h.kill()
	downAt := time.Now()
	eventually(t, 30*time.Second, "every handler to run during the outage", func() bool { return len(s.requests(t)) == n })
	time.Sleep(time.Until(downAt.Add(outage)))
	h.start(t)
	h.waitUp(t)

	for _, id := range ids {
		h.mustCLI(t, "task", "wait", id, "--timeout", "60s")
	}
	for _, id := range ids {
		if task := h.task(t, id); task.Status != "COMPLETED" || task.ResultPosts != 1 {
			t.Errorf("task %s = %s with %d accepted results, want COMPLETED once", id, task.Status, task.ResultPosts)
		}
	}
	if got := len(s.requests(t)); got != n {
		t.Errorf("stand-in received %d cohort requests, want %d (each handler once)", got, n)
	}
	var results []struct {
		ReceivedCount int `json:"received_count"`
	}
	h.admin(t, http.MethodGet, "/admin/cohort-results", nil, &results)
	if len(results) != n {
		t.Fatalf("hub holds %d cohort results, want %d", len(results), n)
	}
	for i, r := range results {
		if r.ReceivedCount != 1 {
			t.Errorf("cohort result %d received %d times, want once", i, r.ReceivedCount)
		}
	}
}

// trust-api is killed with SIGKILL after it claimed a task and recorded its
// result but before the hub acknowledged it; after a restart the result is
// delivered and the handler has run once.
func TestSIGKILLAfterClaimDeliversOnRestart(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-kill")
	s := startStandin(t, h.bin, kit, 1500*time.Millisecond)
	dataDir := t.TempDir()
	node := startTrust(t, kit, s.addr, dataDir)

	id := submitCohort(t, h, "e2e-kill")
	eventually(t, 20*time.Second, "the task to be claimed", func() bool { return h.task(t, id).Status == "IN_PROGRESS" })
	h.kill() // the hub is gone while the handler runs: the result cannot be delivered
	eventually(t, 20*time.Second, "the handler to reach the stand-in", func() bool { return len(s.requests(t)) == 1 })
	time.Sleep(2500 * time.Millisecond) // the handler finishes, the result is journaled, delivery fails
	node.kill()

	h.start(t)
	h.waitUp(t)
	if st := h.task(t, id).Status; st != "IN_PROGRESS" {
		t.Fatalf("before restart the hub shows %s, want IN_PROGRESS (result not yet delivered)", st)
	}
	node.start(t)
	h.mustCLI(t, "task", "wait", id, "--timeout", "60s")
	if task := h.task(t, id); task.Status != "COMPLETED" || task.ResultPosts != 1 {
		t.Fatalf("task = %+v, want COMPLETED once", task)
	}
	if got := len(s.requests(t)); got != 1 {
		t.Fatalf("the handler ran %d times, want once", got)
	}
}

// A non-idempotent task interrupted by SIGKILL while its handler was running
// is reported FAILED after restart instead of being executed a second time.
func TestSIGKILLMidHandlerNeverRunsTwice(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-interrupt")
	s := startStandin(t, h.bin, kit, 3*time.Second)
	dataDir := t.TempDir()
	node := startTrust(t, kit, s.addr, dataDir)

	payload := `{"project_id":"0b6f7c1e-8d2a-4f3b-9c5d-1e2f3a4b5c6d","trust_id":"` + kit["EXPECTED_TRUST_ID"] +
		`","project_name":"e2e","query":null,"users":[],"dicom_to_nifti":true}`
	id := lastField(h.mustCLI(t, "task", "submit", "--trust", "e2e-interrupt", "--type", "create_imaging", "--payload", payload))
	eventually(t, 20*time.Second, "the handler to reach the stand-in", func() bool { return len(s.requests(t)) == 1 })
	node.kill()
	node.start(t)
	_, _ = h.cli(t, "task", "wait", id, "--timeout", "60s")
	task := h.task(t, id)
	if task.Status != "FAILED" || task.Result == nil || !strings.Contains(*task.Result, "interrupted") {
		t.Fatalf("task = %+v, want FAILED as interrupted", task)
	}
	time.Sleep(3500 * time.Millisecond)
	if got := len(s.requests(t)); got != 1 {
		t.Fatalf("create_imaging ran %d times, want once", got)
	}
}

func lastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}

// Payloads that fail authentication — tampered, or sealed for another task
// type — end FAILED with FLIP's error text and never reach a service.
func TestTamperedPayloadsFailAuthentication(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-tamper")
	s := startStandin(t, h.bin, kit, 0)
	startTrust(t, kit, s.addr, t.TempDir())

	c, err := envelope.NewFromBase64(kit["AES_KEY_BASE64"])
	if err != nil {
		t.Fatal(err)
	}
	good, err := c.Seal([]byte(`{"imaging_project_id":"0b6f7c1e-8d2a-4f3b-9c5d-1e2f3a4b5c6d"}`), envelope.TaskContext("delete_imaging"))
	if err != nil {
		t.Fatal(err)
	}
	otherType, err := c.Seal([]byte(`{"imaging_project_id":"0b6f7c1e-8d2a-4f3b-9c5d-1e2f3a4b5c6d","encoded_query":""}`), envelope.TaskContext("get_imaging_status"))
	if err != nil {
		t.Fatal(err)
	}
	cases := map[string]string{
		"tampered":          tamper(t, good),
		"other task's seal": otherType,
	}
	ids := map[string]string{}
	for name, sealed := range cases {
		var task hubTask
		code := h.admin(t, http.MethodPost, "/admin/tasks", map[string]any{
			"trust_name": "e2e-tamper", "task_type": "delete_imaging", "sealed_payload": sealed,
		}, &task)
		if code != http.StatusOK && code != http.StatusCreated {
			t.Fatalf("%s: submit HTTP %d", name, code)
		}
		ids[name] = task.ID
	}
	for name, id := range ids {
		_, _ = h.cli(t, "task", "wait", id, "--timeout", "60s")
		task := h.task(t, id)
		if task.Status != "FAILED" || task.Result == nil {
			t.Fatalf("%s: task = %+v, want FAILED", name, task)
		}
		var res map[string]any
		if err := json.Unmarshal([]byte(*task.Result), &res); err != nil {
			t.Fatalf("%s: result %q is not JSON: %v", name, *task.Result, err)
		}
		if res["error"] != "Invalid payload: failed authentication" {
			t.Errorf("%s: error = %v, want FLIP's text", name, res["error"])
		}
	}
	if got := len(s.requests(t)); got != 0 {
		t.Fatalf("a payload that failed authentication reached a service %d times", got)
	}
}

// tamper flips one bit of the ciphertext inside an envelope.
func tamper(t *testing.T, sealed string) string {
	t.Helper()
	raw, err := decodeB64(sealed)
	if err != nil {
		t.Fatal(err)
	}
	var env map[string]any
	if err := json.Unmarshal(raw, &env); err != nil {
		t.Fatal(err)
	}
	ct, err := decodeB64(env["ct"].(string))
	if err != nil {
		t.Fatal(err)
	}
	ct[0] ^= 0x01
	env["ct"] = encodeB64(ct)
	out, _ := json.Marshal(env)
	return encodeB64(out)
}

// A kit deployed to the wrong host: the hub names another trust than
// EXPECTED_TRUST_ID, and trust-api exits with code 2.
func TestWrongExpectedTrustIDExits2(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-identity")
	s := startStandin(t, h.bin, kit, 0)
	node := startTrust(t, kit, s.addr, t.TempDir(), "EXPECTED_TRUST_ID=00000000-0000-4000-8000-000000000000")
	if code := node.exitCode(t, 30*time.Second); code != 2 {
		t.Fatalf("exit code = %d, want 2\n%s", code, tail(node.out.String(), 2000))
	}
	if !strings.Contains(node.out.String(), "EXPECTED_TRUST_ID") {
		t.Fatalf("the exit is not explained in the log:\n%s", tail(node.out.String(), 2000))
	}
}
