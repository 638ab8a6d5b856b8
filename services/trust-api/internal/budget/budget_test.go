package budget

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/rdp"
)

const (
	projA = "0b5a3c1e-7f0d-4a8e-9c61-2d9e8f7a6b5c"
	projB = "5d7e9f10-1a2b-4c3d-8e4f-5a6b7c8d9e0f"
)

type fakeLedger struct {
	mu      sync.Mutex
	entries []Entry
	fail    error
}

func (l *fakeLedger) Append(_ context.Context, e Entry) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fail != nil {
		return l.fail
	}
	l.entries = append(l.entries, e)
	return nil
}

func (l *fakeLedger) count() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.entries)
}

func open(t *testing.T, path string, b Budgets, rec Recorder) *Store {
	t.Helper()
	s, err := Open(path, b, Options{Recorder: rec})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// epsOf is the ε at δ of q, σ and steps, computed by the accountant directly.
func epsOf(t *testing.T, q, sigma float64, steps int64, delta float64) float64 {
	t.Helper()
	c, err := rdp.SampledGaussian(q, sigma, steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, _, err := c.Epsilon(delta)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func TestSpendWithinBudgetComposesExactly(t *testing.T) {
	t.Parallel()
	led := &fakeLedger{}
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 10, Delta: 1e-5}}, led)
	defer s.Close()
	ctx := context.Background()

	r1, err := s.Spend(ctx, Spend{Project: projA, JobID: "job-1", NoiseMultiplier: 5, SampleRate: 1, Steps: 3})
	if err != nil {
		t.Fatal(err)
	}
	want1 := epsOf(t, 1, 5, 3, 1e-5)
	if math.Abs(r1.EpsilonJob-want1) > 1e-12 || math.Abs(r1.EpsilonSpent-want1) > 1e-12 || math.Abs(r1.EpsilonRemaining-(10-want1)) > 1e-12 {
		t.Fatalf("first spend: %+v, want ε %v", r1, want1)
	}
	r2, err := s.Spend(ctx, Spend{Project: strings.ToUpper(projA), JobID: "job-2", NoiseMultiplier: 5, SampleRate: 1, Steps: 2})
	if err != nil {
		t.Fatal(err)
	}
	// Two jobs of 3 and 2 steps compose to exactly one job of 5 steps, and to
	// less than the sum of their ε.
	if want := epsOf(t, 1, 5, 5, 1e-5); math.Abs(r2.EpsilonSpent-want) > 1e-9 {
		t.Errorf("after two jobs ε %v, want %v (one job of 5 steps)", r2.EpsilonSpent, want)
	}
	if r2.EpsilonSpent >= r1.EpsilonJob+r2.EpsilonJob {
		t.Errorf("composed ε %v is not below the sum %v", r2.EpsilonSpent, r1.EpsilonJob+r2.EpsilonJob)
	}
	st, err := s.Remaining(projA)
	if err != nil || st.Jobs != 2 || math.Abs(st.EpsilonSpent-r2.EpsilonSpent) > 1e-12 || !st.Configured {
		t.Errorf("Remaining: %+v, %v", st, err)
	}
	if led.count() != 2 {
		t.Fatalf("%d ledger entries, want 2", led.count())
	}
	e := led.entries[1]
	if e.Channel != "fl_weights" || e.Kind != "dp_spend" || e.Project != projA || e.TaskID != "job-2" || !containsPrefix(e.Rules, "epsilon_job=") {
		t.Errorf("ledger entry %+v", e)
	}
}

func containsPrefix(rules []string, p string) bool {
	for _, r := range rules {
		if strings.HasPrefix(r, p) {
			return true
		}
	}
	return false
}

func TestExceededIsRefusedBeforeAnythingIsRecorded(t *testing.T) {
	t.Parallel()
	led := &fakeLedger{}
	path := filepath.Join(t.TempDir(), "budget.db")
	s := open(t, path, Budgets{projA: {Epsilon: 3, Delta: 1e-5}}, led)
	ctx := context.Background()
	if _, err := s.Spend(ctx, Spend{Project: projA, JobID: "small", NoiseMultiplier: 8, SampleRate: 1, Steps: 1}); err != nil {
		t.Fatal(err)
	}
	before, _ := s.Remaining(projA)
	_, err := s.Spend(ctx, Spend{Project: projA, JobID: "big", NoiseMultiplier: 0.5, SampleRate: 1, Steps: 10})
	var ex *ExceededError
	if !errors.Is(err, ErrExceeded) || !errors.As(err, &ex) || ex.Remaining <= 0 || ex.EpsilonAfter <= 3 {
		t.Fatalf("a spend past the budget: %v", err)
	}
	after, _ := s.Remaining(projA)
	if after != before || led.count() != 1 {
		t.Errorf("the refused spend changed the state: %+v -> %+v, %d ledger entries", before, after, led.count())
	}
	// The refused job was not recorded: once the site raises the budget it
	// may spend under the same id.
	s.Close()
	s = open(t, path, Budgets{projA: {Epsilon: 100, Delta: 1e-5}}, led)
	defer s.Close()
	if r, err := s.Spend(ctx, Spend{Project: projA, JobID: "big", NoiseMultiplier: 0.5, SampleRate: 1, Steps: 10}); err != nil || r.Repeat {
		t.Errorf("after raising the budget: %+v, %v", r, err)
	}
}

func TestNoBudgetMayNotSpend(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 3, Delta: 1e-5}}, nil)
	defer s.Close()
	_, err := s.Spend(context.Background(), Spend{Project: projB, JobID: "j", NoiseMultiplier: 1, SampleRate: 1, Steps: 1})
	if !errors.Is(err, ErrNoBudget) || !strings.Contains(err.Error(), "no privacy budget configured for project") {
		t.Fatalf("spend without a budget: %v", err)
	}
	if _, err := s.Remaining(projB); !errors.Is(err, ErrNoBudget) {
		t.Errorf("Remaining of a project without a budget: %v", err)
	}
}

func TestRetryDoesNotSpendTwice(t *testing.T) {
	t.Parallel()
	led := &fakeLedger{}
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 5, Delta: 1e-5}}, led)
	defer s.Close()
	ctx := context.Background()
	sp := Spend{Project: projA, JobID: "job-1", NoiseMultiplier: 5, SampleRate: 1, Steps: 3}
	first, err := s.Spend(ctx, sp)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			again, err := s.Spend(ctx, sp)
			if err != nil || !again.Repeat || again.EpsilonSpent != first.EpsilonSpent {
				t.Errorf("retry: %+v, %v", again, err)
			}
		})
	}
	wg.Wait()
	st, _ := s.Remaining(projA)
	if st.Jobs != 1 || st.EpsilonSpent != first.EpsilonSpent || led.count() != 1 {
		t.Errorf("after retries: %+v, %d ledger entries", st, led.count())
	}
}

func TestLedgerFailureIsRetried(t *testing.T) {
	t.Parallel()
	led := &fakeLedger{fail: errors.New("disk full")}
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 5, Delta: 1e-5}}, led)
	defer s.Close()
	sp := Spend{Project: projA, JobID: "job-1", NoiseMultiplier: 5, SampleRate: 1, Steps: 3}
	if _, err := s.Spend(context.Background(), sp); err == nil {
		t.Fatal("a spend whose ledger entry failed reported success")
	}
	led.mu.Lock()
	led.fail = nil
	led.mu.Unlock()
	r, err := s.Spend(context.Background(), sp)
	if err != nil || !r.Repeat || led.count() != 1 {
		t.Fatalf("retry after the ledger recovered: %+v, %v, %d entries", r, err, led.count())
	}
	if _, err := s.Spend(context.Background(), sp); err != nil || led.count() != 1 {
		t.Errorf("a third call wrote the entry again: %v, %d entries", err, led.count())
	}
	if st, _ := s.Remaining(projA); st.Jobs != 1 {
		t.Errorf("spent %d times", st.Jobs)
	}
}

func TestRestartKeepsSpends(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "budget.db")
	b := Budgets{projA: {Epsilon: 4, Delta: 1e-5}}
	s := open(t, path, b, nil)
	first, err := s.Spend(context.Background(), Spend{Project: projA, JobID: "job-1", NoiseMultiplier: 5, SampleRate: 1, Steps: 2})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, path, b, nil)
	defer s.Close()
	st, err := s.Remaining(projA)
	if err != nil || st.Jobs != 1 || st.EpsilonSpent != first.EpsilonSpent {
		t.Fatalf("after a restart: %+v, %v", st, err)
	}
	r, err := s.Spend(context.Background(), Spend{Project: projA, JobID: "job-1", NoiseMultiplier: 5, SampleRate: 1, Steps: 2})
	if err != nil || !r.Repeat {
		t.Errorf("retry after a restart: %+v, %v", r, err)
	}
}

func TestInvalidSpendListsEveryField(t *testing.T) {
	t.Parallel()
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 4, Delta: 1e-5}}, nil)
	defer s.Close()
	_, err := s.Spend(context.Background(), Spend{Project: projA, NoiseMultiplier: -1, SampleRate: 2, Steps: 0, Delta: 2})
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("got %v", err)
	}
	for _, f := range []string{"job_id", "noise_multiplier", "sample_rate", "steps", "delta"} {
		if !strings.Contains(err.Error(), f+":") {
			t.Errorf("%q not named in %v", f, err)
		}
	}
	_, err = s.Spend(context.Background(), Spend{Project: projA, JobID: "j", NoiseMultiplier: 1, SampleRate: 1, Steps: 1, Delta: 1e-3})
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("a δ above the budget's: %v", err)
	}
}

func TestParseBudgets(t *testing.T) {
	t.Parallel()
	b, err := ParseBudgets(strings.ToUpper(projA) + "=8, " + projB + "=2.5:1e-6")
	if err != nil {
		t.Fatal(err)
	}
	if b[projA] != (Budget{8, DefaultDelta}) || b[projB] != (Budget{2.5, 1e-6}) {
		t.Errorf("parsed %+v", b)
	}
	_, err = ParseBudgets("not-a-uuid=1," + projA + "=0," + projB + "=1:2,junk")
	for _, want := range []string{"not a UUID", "epsilon 0", "delta 2", `"junk"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not report %s", err, want)
		}
	}
}

func TestSpendRoute(t *testing.T) {
	t.Parallel()
	key := []byte(strings.Repeat("k", 32))
	s := open(t, filepath.Join(t.TempDir(), "budget.db"), Budgets{projA: {Epsilon: 2, Delta: 1e-5}}, nil)
	defer s.Close()
	r := chi.NewRouter()
	opener := func(enc string) (string, error) {
		if p, ok := strings.CutPrefix(enc, "sealed:"); ok {
			return p, nil
		}
		return "", errors.New("bad envelope")
	}
	s.Mount(r, mesh.NewVerifier("trust-api", key, "", nil), opener)
	srv := httptest.NewServer(r)
	defer srv.Close()

	post := func(caller string, body any) (int, map[string]any) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, srv.URL+SpendPath, bytes.NewReader(raw))
		if err := mesh.NewSigner(caller, key).Apply(req, "trust-api", mesh.ModeJWT, ""); err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	ok := map[string]any{"encrypted_project_id": "sealed:" + projA, "job_id": "j1", "noise_multiplier": 5, "sample_rate": 1, "steps": 3, "delta": 1e-5}
	if code, out := post("fl-client", ok); code != http.StatusOK || out["epsilon_spent"].(float64) <= 0 || out["epsilon_remaining"].(float64) <= 0 {
		t.Fatalf("spend: %d %v", code, out)
	}
	if code, out := post("fl-client", ok); code != http.StatusOK || out["repeat"] != true {
		t.Errorf("retry: %d %v", code, out)
	}
	big := map[string]any{"project": projA, "job_id": "j2", "noise_multiplier": 0.8, "sample_rate": 1, "steps": 10}
	if code, out := post("fl-client", big); code != http.StatusConflict || !strings.HasPrefix(out["detail"].(string), "privacy budget exceeded") {
		t.Errorf("over budget: %d %v", code, out)
	}
	none := map[string]any{"project": projB, "job_id": "j3", "noise_multiplier": 1, "sample_rate": 1, "steps": 1}
	if code, out := post("fl-client", none); code != http.StatusConflict || !strings.Contains(out["detail"].(string), "no privacy budget configured for project") {
		t.Errorf("no budget: %d %v", code, out)
	}
	if code, _ := post("fl-client", map[string]any{"project": projA, "encrypted_project_id": "sealed:x", "job_id": "j", "noise_multiplier": 1, "sample_rate": 1, "steps": 1}); code != http.StatusUnprocessableEntity {
		t.Errorf("two project names: %d", code)
	}
	if code, _ := post("fl-client", map[string]any{"encrypted_project_id": "garbage", "job_id": "j", "noise_multiplier": 1, "sample_rate": 1, "steps": 1}); code != http.StatusBadRequest {
		t.Errorf("an envelope that does not open: %d", code)
	}
	if code, _ := post("data-access-api", ok); code != http.StatusForbidden {
		t.Errorf("another service may spend: %d", code)
	}
	if st, _ := s.Remaining(projA); st.Jobs != 1 {
		t.Errorf("%d jobs spent, want 1", st.Jobs)
	}
}
