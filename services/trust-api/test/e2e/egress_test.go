package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

const reviewerKey = "reviewer-key-for-e2e-tests-0123456789"

// reviewer talks to a trust-api's reviewer API and runs its CLI.
type reviewer struct {
	addr, dataDir string
}

type heldItem struct {
	ID      string `json:"id"`
	TaskID  string `json:"task_id"`
	Channel string `json:"channel"`
	State   string `json:"state"`
}

func (rv reviewer) held(t *testing.T) []heldItem {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+rv.addr+"/review/v1/items?state=held", nil)
	req.Header.Set("Authorization", "Bearer "+reviewerKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil // not listening yet
	}
	defer resp.Body.Close()
	var items []heldItem
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&items) != nil {
		t.Fatalf("reviewer list: HTTP %d", resp.StatusCode)
	}
	return items
}

// waitHeld waits for the held item of task id.
func (rv reviewer) waitHeld(t *testing.T, taskID string) heldItem {
	t.Helper()
	var found heldItem
	eventually(t, 30*time.Second, "a held item for task "+taskID, func() bool {
		for _, it := range rv.held(t) {
			if it.TaskID == taskID {
				found = it
				return true
			}
		}
		return false
	})
	return found
}

// cli runs `trust-api <args>` as an operator would on the node.
func (rv reviewer) cli(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	trustAPI, _ := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, trustAPI, args...)
	cmd.Env = []string{"EGRESS_REVIEW_ADDR=" + rv.addr, "EGRESS_REVIEWER_KEY=" + reviewerKey, "TRUST_API_DATA_DIR=" + rv.dataDir}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return stdout.String(), stderr.String(), code
}

// With cohort_results held, three cohort queries from dev-hub: the first is
// approved with the CLI and its statistics reach the hub; the second is
// rejected and fails at the hub with the reviewer's reason; the third is
// left alone and fails as expired. The ledger verifies and lists every body
// that left.
func TestAirlockReviewFromDevHub(t *testing.T) {
	t.Parallel()
	h := startHub(t)
	kit := h.kit(t, "e2e-airlock")
	s := startStandin(t, h.bin, kit, 0)
	dataDir := t.TempDir()
	rv := reviewer{addr: freeAddr(t), dataDir: dataDir}
	startTrust(t, kit, s.addr, dataDir,
		"EGRESS_REVIEW=cohort_results=hold", "EGRESS_REVIEW_EXPIRY=12s",
		"EGRESS_REVIEW_ADDR="+rv.addr, "EGRESS_REVIEWER_KEY="+reviewerKey)

	// 1: held, nothing reaches the hub, then approved with the CLI.
	first := submitCohort(t, h, "e2e-airlock")
	item := rv.waitHeld(t, first)
	if item.Channel != "cohort_results" {
		t.Fatalf("held item = %+v", item)
	}
	time.Sleep(500 * time.Millisecond)
	if task := h.task(t, first); task.Status == "COMPLETED" || task.ResultPosts != 0 {
		t.Fatalf("held task reached the hub: %+v", task)
	}
	if out, errs, code := rv.cli(t, "review", "list"); code != 0 || !strings.Contains(out, item.ID) {
		t.Fatalf("review list = %d %q %q", code, out, errs)
	}
	if out, errs, code := rv.cli(t, "review", "content", item.ID); code != 0 || !strings.Contains(out, `"record_count"`) {
		t.Fatalf("review content = %d %q %q", code, out, errs)
	}
	if out, errs, code := rv.cli(t, "review", "approve", item.ID, "--reviewer", "dr.ada", "--note", "all cells >= 10"); code != 0 {
		t.Fatalf("review approve = %d %q %q", code, out, errs)
	}
	h.mustCLI(t, "task", "wait", first, "--timeout", "30s")
	queryIDs := cohortQueryIDs(t, s)
	if got := cohortResults(t, h, queryIDs[0]); len(got) != 1 || got[0]["error"] != nil || got[0]["record_count"] != float64(120) {
		t.Fatalf("approved statistics at the hub = %+v", got)
	}

	// 2: rejected with a reason, through the reviewer API.
	second := submitCohort(t, h, "e2e-airlock")
	item = rv.waitHeld(t, second)
	body := strings.NewReader(`{"reviewer":"dr.ada","reason":"ethnicity cell below the floor"}`)
	req, _ := http.NewRequest(http.MethodPost, "http://"+rv.addr+"/review/v1/items/"+item.ID+"/reject", body)
	req.Header.Set("Authorization", "Bearer "+reviewerKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("reject: %v %v", resp, err)
	}
	resp.Body.Close()
	if _, err := h.cli(t, "task", "wait", second, "--timeout", "30s"); err == nil {
		t.Fatal("the rejected task completed")
	}
	task := h.task(t, second)
	if task.Status != "FAILED" || task.Result == nil || !strings.Contains(*task.Result, "ethnicity cell below the floor") {
		t.Fatalf("rejected task at the hub = %+v", task)
	}
	queryIDs = cohortQueryIDs(t, s)
	if got := cohortResults(t, h, queryIDs[1]); len(got) != 1 || !strings.Contains(toString(got[0]["error"]), "ethnicity cell below the floor") {
		t.Fatalf("cohort error envelope at the hub = %+v", got)
	}

	// 3: nobody reviews it; it expires.
	third := submitCohort(t, h, "e2e-airlock")
	rv.waitHeld(t, third)
	if _, err := h.cli(t, "task", "wait", third, "--timeout", "45s"); err == nil {
		t.Fatal("the expired task completed")
	}
	task = h.task(t, third)
	if task.Status != "FAILED" || task.Result == nil || !strings.Contains(*task.Result, "expired without review") {
		t.Fatalf("expired task at the hub = %+v", task)
	}

	// The ledger verifies and shows what left: the approved statistics and
	// result, and the two failure notices with their error envelopes.
	dir := filepath.Join(dataDir, "audit")
	if out, errs, code := rv.cli(t, "audit", "verify", "--dir", dir); code != 0 || !strings.Contains(out, "6 entries") {
		t.Fatalf("audit verify = %d %q %q", code, out, errs)
	}
	out, errs, code := rv.cli(t, "audit", "show", "--channel", "cohort_results")
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(out, "dr.ada") || !strings.Contains(out, "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f") {
		t.Fatalf("audit show = %d\n%s\n%s", code, out, errs)
	}
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

// cohortQueryIDs lists the query ids the stand-in was asked, in order.
func cohortQueryIDs(t *testing.T, s *standin) []string {
	t.Helper()
	var ids []string
	for _, r := range s.requests(t) {
		var b struct {
			QueryID string `json:"query_id"`
		}
		if r.Path == "/cohort" && json.Unmarshal(r.Body, &b) == nil {
			ids = append(ids, b.QueryID)
		}
	}
	return ids
}

func cohortResults(t *testing.T, h *hub, queryID string) []map[string]any {
	t.Helper()
	var out []map[string]any
	if code := h.admin(t, http.MethodGet, "/admin/cohort-results?query_id="+queryID, nil, &out); code != http.StatusOK {
		t.Fatalf("cohort results: HTTP %d", code)
	}
	return out
}
