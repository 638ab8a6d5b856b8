package cli

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/services/trust-api/internal/egress"
	"github.com/flip-trust/node/shared/ledger"
)

func runCLI(vars map[string]string, args ...string) (int, string, string) {
	var out, errb bytes.Buffer
	code := Run(context.Background(), args, Env{Stdout: &out, Stderr: &errb, Getenv: func(k string) string { return vars[k] }})
	return code, out.String(), errb.String()
}

func TestAuditVerifyAndShow(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := ledger.Open(dir, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i, ch := range []string{"cohort_results", "task_result", "cohort_results"} {
		size, sum := ledger.Digest([]byte{byte(i)})
		if _, err := l.Append(ledger.Record{Channel: ch, TaskID: "t", Project: "proj-" + ch, Kind: ch, Size: size, SHA256: sum}); err != nil {
			t.Fatal(err)
		}
	}
	_ = l.Close()
	vars := map[string]string{"AUDIT_LEDGER_DIR": dir}

	if code, out, errs := runCLI(vars, "audit", "verify"); code != 0 || !strings.Contains(out, "3 entries") {
		t.Fatalf("verify = %d %q %q", code, out, errs)
	}
	code, out, _ := runCLI(nil, "audit", "show", "--dir", dir, "--channel", "cohort_results", "--since", "1h")
	if code != 0 || strings.Count(out, "\n") != 3 || strings.Contains(out, "task_result") {
		t.Fatalf("show = %d\n%s", code, out)
	}
	if code, _, _ := runCLI(vars, "audit", "show", "--since", "last week"); code != 2 {
		t.Fatalf("bad --since = %d", code)
	}

	path := filepath.Join(dir, ledger.CurrentFile)
	raw, _ := os.ReadFile(path)
	_ = os.WriteFile(path, bytes.Replace(raw, []byte("proj-task_result"), []byte("proj-task_resulx"), 1), 0o600)
	code, _, errs := runCLI(vars, "audit", "verify")
	if code != 1 || !strings.Contains(errs, "entry 2") || !strings.Contains(errs, "hash mismatch") {
		t.Fatalf("tampered verify = %d %q", code, errs)
	}
}

func TestReviewCommands(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	led, err := ledger.Open(filepath.Join(dir, "audit"), ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	g, err := egress.Open(filepath.Join(dir, "egress.db"), led, egress.Options{Policy: egress.Policy{egress.CohortResults: egress.Hold}, Expiry: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = g.Close(); _ = led.Close() }()
	key := strings.Repeat("k", 40)
	r := chi.NewRouter()
	egress.ReviewRoutes(r, g, key)
	srv := httptest.NewServer(r)
	defer srv.Close()
	keyFile := filepath.Join(dir, "key")
	_ = os.WriteFile(keyFile, []byte(key+"\n"), 0o600)
	vars := map[string]string{"EGRESS_REVIEW_ADDR": srv.URL, "EGRESS_REVIEWER_KEY_FILE": keyFile}

	a, _ := g.Submit(egress.Request{Channel: egress.CohortResults, TaskID: "t1", Content: []byte(`{"n":12}`)})
	b, _ := g.Submit(egress.Request{Channel: egress.CohortResults, TaskID: "t2", Content: []byte(`{"n":3}`)})

	if code, out, _ := runCLI(vars, "review", "list"); code != 0 || !strings.Contains(out, a.ID) || !strings.Contains(out, b.ID) {
		t.Fatalf("list = %d\n%s", code, out)
	}
	if code, out, _ := runCLI(vars, "review", "content", a.ID); code != 0 || out != `{"n":12}` {
		t.Fatalf("content = %d %q", code, out)
	}
	if code, _, errs := runCLI(vars, "review", "approve", a.ID); code != 2 || !strings.Contains(errs, "--reviewer") {
		t.Fatalf("approve without reviewer = %d %q", code, errs)
	}
	if code, out, _ := runCLI(vars, "review", "approve", a.ID, "--reviewer", "ann", "--note", "fine"); code != 0 || !strings.Contains(out, `"state": "released"`) {
		t.Fatalf("approve = %d %s", code, out)
	}
	if code, out, _ := runCLI(vars, "review", "reject", b.ID, "--reviewer", "ann", "--reason", "cell of 3"); code != 0 || !strings.Contains(out, `"reason": "cell of 3"`) {
		t.Fatalf("reject = %d %s", code, out)
	}
	if code, _, errs := runCLI(vars, "review", "reject", b.ID, "--reviewer", "ann", "--reason", "again"); code != 1 || !strings.Contains(errs, "409") {
		t.Fatalf("second reject = %d %q", code, errs)
	}
	wrong := map[string]string{"EGRESS_REVIEW_ADDR": srv.URL, "EGRESS_REVIEWER_KEY": strings.Repeat("x", 40)}
	if code, _, errs := runCLI(wrong, "review", "list"); code != 1 || !strings.Contains(errs, "401") {
		t.Fatalf("wrong key = %d %q", code, errs)
	}
	if code, _, _ := runCLI(nil, "review", "list"); code != 1 {
		t.Fatalf("no key = %d", code)
	}
}

// audit show --budget lists the spends and, per project, what remains.
func TestAuditShowBudget(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	l, err := ledger.Open(dir, ledger.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, spent := range []string{"1.25", "2.5"} {
		if _, err := l.Append(ledger.Record{Channel: "fl_weights", TaskID: "job-" + spent, Project: "proj-a", Kind: ledger.KindDPSpend,
			Rules: []string{"epsilon_job=1.25", "epsilon_spent=" + spent, "epsilon_budget=8", "delta=1e-05"}}); err != nil {
			t.Fatal(err)
		}
	}
	size, sum := ledger.Digest([]byte("x"))
	if _, err := l.Append(ledger.Record{Channel: "cohort_results", TaskID: "t", Project: "proj-a", Kind: "cohort_results", Size: size, SHA256: sum}); err != nil {
		t.Fatal(err)
	}
	_ = l.Close()
	code, out, errs := runCLI(map[string]string{"AUDIT_LEDGER_DIR": dir}, "audit", "show", "--budget")
	if code != 0 {
		t.Fatalf("show --budget = %d %q", code, errs)
	}
	if strings.Contains(out, "cohort_results") || !strings.Contains(out, "job-2.5") {
		t.Errorf("the spend table lists other entries or misses a spend:\n%s", out)
	}
	var summary string
	for _, line := range strings.Split(out, "\n") {
		if strings.HasPrefix(line, "proj-a ") {
			summary = strings.Join(strings.Fields(line), " ")
		}
	}
	if summary != "proj-a 2 8 2.5 5.5000 1e-05" {
		t.Errorf("budget summary = %q, want project, 2 jobs, budget 8, spent 2.5, remaining 5.5, delta\n%s", summary, out)
	}
}
