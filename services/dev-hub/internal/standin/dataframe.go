package standin

import (
	"encoding/csv"
	"encoding/json"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
)

// DataframeRows is the number of rows the stand-in's dataframe holds.
const DataframeRows = 2000

// dataframe answers POST /cohort/dataframe with a synthetic cohort in the
// shape of examples/logreg/cohort.sql: person_id, age, male, t2d, bmi, sbp
// and an outcome drawn from a logistic model of the other columns (log-odds
// -13 + 0.06·age + 0.5·male + 0.9·t2d + 0.08·bmi + 0.025·sbp), so that an
// FL job trained on it has a signal to find. The rows are the same on every
// call; they describe no one.
func (s *Server) dataframe(w http.ResponseWriter, _ *http.Request, body json.RawMessage) {
	var in struct {
		EncryptedProjectID string `json:"encrypted_project_id"`
		Query              string `json:"query"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.EncryptedProjectID == "" {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"detail": "encrypted_project_id is required"})
		return
	}
	w.Header().Set("Content-Type", "text/csv; charset=utf-8")
	cw := csv.NewWriter(w)
	_ = cw.Write([]string{"person_id", "age", "male", "t2d", "bmi", "sbp", "outcome"})
	r := rand.New(rand.NewPCG(7, 11))
	bit := func(b bool) float64 {
		if b {
			return 1
		}
		return 0
	}
	f := func(v float64, prec int) string { return strconv.FormatFloat(v, 'f', prec, 64) }
	for i := range DataframeRows {
		age := float64(20 + r.IntN(71))
		male := bit(r.Float64() < 0.5)
		t2d := bit(r.Float64() < 0.03+0.002*(age-20))
		bmi := math.Round((27+5*r.NormFloat64())*10) / 10
		sbp := math.Round((110+0.4*age+18*r.NormFloat64())*10) / 10
		logit := -13 + 0.06*age + 0.5*male + 0.9*t2d + 0.08*bmi + 0.025*sbp
		outcome := bit(r.Float64() < 1/(1+math.Exp(-logit)))
		_ = cw.Write([]string{strconv.Itoa(i + 1), f(age, 0), f(male, 0), f(t2d, 0), f(bmi, 1), f(sbp, 1), f(outcome, 0)})
	}
	cw.Flush()
}
