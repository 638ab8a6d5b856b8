package app

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/mesh"
)

// TestBudgetRouteServed: fl-client spends a project's privacy budget through
// trust-api's mesh route, naming the project by the envelope its task
// carries; the site's PRIVACY_BUDGETS set the budget.
func TestBudgetRouteServed(t *testing.T) {
	t.Parallel()
	const project = "3f2a1b0c-9d8e-4f7a-8b6c-5d4e3f2a1b0c"
	cipher, _ := envelope.NewFromBase64(aesKey)
	hubSrv := httptest.NewServer(&hubStandin{cipher: cipher, trustID: trustID})
	t.Cleanup(hubSrv.Close)
	cfg := testConfig(t, hubSrv.URL, hubSrv.URL, hubSrv.URL, map[string]string{"PRIVACY_BUDGETS": project + "=4:1e-5"})
	a, base, _, _ := start(t, cfg, io.Discard)

	sealed, err := cipher.Seal([]byte(project), envelope.ProjectIDContext)
	if err != nil {
		t.Fatal(err)
	}
	spend := func(body map[string]any, key string) (int, map[string]any) {
		raw, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, base+"/egress/v1/budget/spend", bytes.NewReader(raw))
		if err := mesh.NewSigner("fl-client", []byte(key)).Apply(req, Issuer, mesh.ModeJWT, ""); err != nil {
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
	body := map[string]any{"encrypted_project_id": sealed, "job_id": "job-1", "noise_multiplier": 5.0, "sample_rate": 1.0, "steps": 3}
	if code, out := spend(body, internalKey+"-wrong-key-of-enough-length"); code != http.StatusUnauthorized {
		t.Errorf("a wrong mesh key: %d %v", code, out)
	}
	code, out := spend(body, internalKey)
	if code != http.StatusOK || out["epsilon_remaining"].(float64) >= 4 || out["epsilon_remaining"].(float64) <= 0 {
		t.Fatalf("spend: %d %v", code, out)
	}
	st, err := a.Budgets().Remaining(project)
	if err != nil || st.Jobs != 1 || st.EpsilonSpent != out["epsilon_spent"].(float64) {
		t.Errorf("Remaining after the spend: %+v, %v", st, err)
	}
}
