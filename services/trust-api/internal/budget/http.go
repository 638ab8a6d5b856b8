package budget

import (
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/mesh"
)

// SpendPath is the mesh route fl-client spends through.
const SpendPath = "/egress/v1/budget/spend"

// Caller is the mesh caller the spend route admits.
const Caller = "fl-client"

// ProjectOpener turns an encrypted_project_id, as the hub seals it for the
// trust's services, into the project id.
type ProjectOpener func(encrypted string) (string, error)

// SpendRequest is the body of POST /egress/v1/budget/spend. The project is
// named by exactly one of project and encrypted_project_id (what fl-client
// holds from its task).
type SpendRequest struct {
	Project            string  `json:"project,omitempty"`
	EncryptedProjectID string  `json:"encrypted_project_id,omitempty"`
	JobID              string  `json:"job_id"`
	NoiseMultiplier    float64 `json:"noise_multiplier"`
	SampleRate         float64 `json:"sample_rate"`
	Steps              int64   `json:"steps"`
	Delta              float64 `json:"delta,omitempty"`
}

// ExceededBody is the 409 answer to a spend past the budget.
type ExceededBody struct {
	Detail           string  `json:"detail"`
	EpsilonJob       float64 `json:"epsilon_job"`
	EpsilonRemaining float64 `json:"epsilon_remaining"`
	EpsilonBudget    float64 `json:"epsilon_budget"`
	Delta            float64 `json:"delta"`
}

// Mount adds the spend route to r, behind v, admitting fl-client only. open
// may be nil when no caller sends encrypted_project_id.
func (s *Store) Mount(r chi.Router, v *mesh.Verifier, open ProjectOpener) {
	r.With(v.Require(Caller)).Post(SpendPath, s.serveSpend(open))
}

func (s *Store) serveSpend(open ProjectOpener) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var in SpendRequest
		if err := httpx.DecodeJSONStrict(r, &in); err != nil {
			httpx.WriteError(w, r, err)
			return
		}
		project := in.Project
		switch {
		case (in.Project == "") == (in.EncryptedProjectID == ""):
			httpx.WriteError(w, r, httpx.Errorf(http.StatusUnprocessableEntity, "invalid budget spend: give exactly one of project and encrypted_project_id"))
			return
		case in.EncryptedProjectID != "":
			if open == nil {
				httpx.WriteError(w, r, httpx.Errorf(http.StatusUnprocessableEntity, "invalid budget spend: encrypted_project_id is not accepted here; give project"))
				return
			}
			p, err := open(in.EncryptedProjectID)
			if err != nil {
				httpx.WriteError(w, r, httpx.Errorf(http.StatusBadRequest, "encrypted_project_id could not be opened"))
				return
			}
			project = p
		}
		rec, err := s.Spend(r.Context(), Spend{Project: project, JobID: in.JobID, NoiseMultiplier: in.NoiseMultiplier,
			SampleRate: in.SampleRate, Steps: in.Steps, Delta: in.Delta})
		var exceeded *ExceededError
		switch {
		case err == nil:
			httpx.LoggerFrom(r.Context()).Info("privacy budget spent", "project", rec.Project, "job", rec.JobID,
				"epsilon_job", rec.EpsilonJob, "epsilon_spent", rec.EpsilonSpent, "epsilon_remaining", rec.EpsilonRemaining, "repeat", rec.Repeat)
			httpx.WriteJSON(w, http.StatusOK, rec)
		case errors.As(err, &exceeded):
			httpx.LoggerFrom(r.Context()).Warn("privacy budget spend refused", "project", exceeded.Project, "job", in.JobID,
				"epsilon_job", exceeded.EpsilonJob, "epsilon_remaining", exceeded.Remaining)
			httpx.WriteJSON(w, http.StatusConflict, ExceededBody{Detail: err.Error(), EpsilonJob: exceeded.EpsilonJob,
				EpsilonRemaining: exceeded.Remaining, EpsilonBudget: exceeded.Budget.Epsilon, Delta: exceeded.Budget.Delta})
		case errors.Is(err, ErrNoBudget):
			httpx.LoggerFrom(r.Context()).Warn("privacy budget spend refused: no budget", "project", project, "job", in.JobID)
			httpx.WriteError(w, r, httpx.NewError(http.StatusConflict, err.Error()))
		case errors.Is(err, ErrInvalid):
			httpx.WriteError(w, r, httpx.NewError(http.StatusUnprocessableEntity, err.Error()))
		default:
			httpx.WriteError(w, r, err)
		}
	}
}
