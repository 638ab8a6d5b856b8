package standin

import (
	"encoding/csv"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/mesh"
)

func TestDataframeCarriesTheSignal(t *testing.T) {
	t.Parallel()
	key := strings.Repeat("k", 32)
	r := chi.NewRouter()
	New([]byte(key), mesh.HeaderInternalKey, slog.New(slog.NewTextHandler(io.Discard, nil))).Routes(r)
	srv := httptest.NewServer(r)
	defer srv.Close()
	get := func(withKey bool) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/cohort/dataframe", strings.NewReader(`{"encrypted_project_id":"e","query":"SELECT 1"}`))
		if withKey {
			req.Header.Set(mesh.HeaderInternalKey, key)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get(false); code != http.StatusUnauthorized {
		t.Fatalf("no key: %d", code)
	}
	code, body := get(true)
	if code != http.StatusOK {
		t.Fatalf("status %d: %s", code, body)
	}
	rows, err := csv.NewReader(strings.NewReader(body)).ReadAll()
	if err != nil || len(rows) != DataframeRows+1 || strings.Join(rows[0], ",") != "person_id,age,male,t2d,bmi,sbp,outcome" {
		t.Fatalf("%d rows, header %v, %v", len(rows), rows[0], err)
	}
	// The outcome is rarer among the young than the old: the signal is there.
	var young, youngOut, old, oldOut int
	for _, row := range rows[1:] {
		if row[1] < "50" {
			young++
			youngOut += int(row[6][0] - '0')
		} else {
			old++
			oldOut += int(row[6][0] - '0')
		}
	}
	if float64(oldOut)/float64(old) <= 2*float64(youngOut)/float64(max(young, 1)) {
		t.Errorf("outcome rate: %d/%d under 50, %d/%d from 50", youngOut, young, oldOut, old)
	}
	if _, again := get(true); again != body {
		t.Error("the stand-in's dataframe changed between calls")
	}
}
