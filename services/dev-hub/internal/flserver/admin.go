package flserver

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
)

// AdminConfig configures the FL admin routes.
type AdminConfig struct {
	// ServerURL returns the FL server's base URL as clients reach it
	// (FL_SERVER_URL), written into each new client's env lines.
	ServerURL func() string
	// SealProjectID seals a project id as the hub does for
	// encrypted_project_id; nil refuses job submissions that give project_id.
	SealProjectID func(projectID string) (string, error)
}

// AdminAPI serves the operator's FL routes under /admin/fl. It does not
// authenticate: mount it behind the admin token check.
type AdminAPI struct {
	cfg  AdminConfig
	srv  *Server
	arts Artifacts
}

// NewAdminAPI builds the FL admin routes over srv and its artifacts.
func NewAdminAPI(cfg AdminConfig, srv *Server, arts Artifacts) *AdminAPI {
	if cfg.ServerURL == nil {
		cfg.ServerURL = func() string { return "http://127.0.0.1:8080" }
	}
	return &AdminAPI{cfg: cfg, srv: srv, arts: arts}
}

// Mount registers the routes, with their full /admin/fl paths, on r.
func (a *AdminAPI) Mount(r chi.Router) {
	r.Post("/admin/fl/clients", httpx.Handle(a.addClient))
	r.Get("/admin/fl/clients", httpx.Handle(a.listClients))
	r.Post("/admin/fl/artifacts", httpx.Handle(a.putArtifact))
	r.Get("/admin/fl/artifacts/{id}", a.getArtifact)
	r.Post("/admin/fl/jobs", httpx.Handle(a.submit))
	r.Get("/admin/fl/jobs", httpx.Handle(a.listJobs))
	r.Get("/admin/fl/jobs/{id}", httpx.Handle(a.showJob))
	r.Post("/admin/fl/jobs/{id}/cancel", httpx.Handle(a.cancel))
}

// AddClientRequest is the body of POST /admin/fl/clients.
type AddClientRequest struct {
	Name string `json:"name"`
}

// AddClientReply carries the client's secret, shown once.
type AddClientReply struct {
	Name      string `json:"name"`
	Secret    string `json:"secret"`
	ServerURL string `json:"server_url"`
}

func (a *AdminAPI) addClient(r *http.Request) (AddClientReply, error) {
	var in AddClientRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return AddClientReply{}, err
	}
	if !ClientNamePattern.MatchString(in.Name) {
		return AddClientReply{}, httpx.Errorf(http.StatusUnprocessableEntity, "name must match %s", ClientNamePattern)
	}
	secret, err := a.srv.RegisterClient(in.Name)
	if errors.Is(err, ErrClientExists) {
		return AddClientReply{}, httpx.Errorf(http.StatusConflict, "FL client '%s' already exists", in.Name)
	}
	if err != nil {
		return AddClientReply{}, err
	}
	return AddClientReply{Name: in.Name, Secret: secret, ServerURL: a.cfg.ServerURL()}, nil
}

func (a *AdminAPI) listClients(*http.Request) ([]Client, error) {
	return a.srv.Clients(), nil
}

func (a *AdminAPI) putArtifact(r *http.Request) (flproto.Manifest, error) {
	if r.Body == nil || r.Body == http.NoBody {
		return flproto.Manifest{}, httpx.Errorf(http.StatusUnprocessableEntity, "the request body is the artifact's bytes")
	}
	m, err := a.arts.Put(r.Context(), r.Body)
	var maxErr *http.MaxBytesError
	if errors.As(err, &maxErr) {
		return flproto.Manifest{}, httpx.Errorf(http.StatusRequestEntityTooLarge, "artifact over %d bytes", maxErr.Limit)
	}
	return m, err
}

func (a *AdminAPI) getArtifact(w http.ResponseWriter, r *http.Request) {
	id := chi.URLParam(r, "id")
	if !flproto.IsArtifactID(id) || !a.arts.Has(id) {
		httpx.WriteJSON(w, http.StatusNotFound, httpx.ErrorBody{Detail: fmt.Sprintf("artifact %s not found", id)})
		return
	}
	f, m, err := a.arts.Open(id)
	if err != nil {
		httpx.WriteError(w, r, fmt.Errorf("open artifact %s: %w", id, err))
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(m.Size, 10))
	w.Header().Set("X-Artifact-SHA256", m.SHA256)
	w.WriteHeader(http.StatusOK)
	_, _ = io.Copy(w, f)
}

// SubmitRequest is the body of POST /admin/fl/jobs: a JobSpec, where
// project_id (a UUID) may stand in for data.encrypted_project_id and is
// sealed by the hub.
type SubmitRequest struct {
	JobSpec
	ProjectID string `json:"project_id,omitempty"`
}

func (a *AdminAPI) submit(r *http.Request) (Job, error) {
	var in SubmitRequest
	if err := httpx.DecodeJSONStrict(r, &in); err != nil {
		return Job{}, err
	}
	if in.ProjectID != "" {
		u, err := uuid.Parse(in.ProjectID)
		switch {
		case err != nil:
			return Job{}, httpx.NewError(http.StatusUnprocessableEntity, []string{"project_id: must be a UUID"})
		case in.Data.EncryptedProjectID != "":
			return Job{}, httpx.NewError(http.StatusUnprocessableEntity, []string{"project_id: give project_id or data.encrypted_project_id, not both"})
		case a.cfg.SealProjectID == nil:
			return Job{}, httpx.NewError(http.StatusUnprocessableEntity, []string{"project_id: this hub has no key to seal it"})
		}
		sealed, err := a.cfg.SealProjectID(u.String())
		if err != nil {
			return Job{}, fmt.Errorf("seal project id: %w", err)
		}
		in.Data.EncryptedProjectID = sealed
	}
	j, err := a.srv.Submit(in.JobSpec)
	var ve *ValidationError
	if errors.As(err, &ve) {
		return Job{}, httpx.NewError(http.StatusUnprocessableEntity, ve.Problems)
	}
	return j, err
}

// JobSummary is a job as GET /admin/fl/jobs lists it.
type JobSummary struct {
	ID         string `json:"id"`
	Kind       string `json:"kind"`
	State      string `json:"state"`
	Round      int    `json:"round"`
	Rounds     int    `json:"rounds"`
	Clients    string `json:"clients"`
	FinalModel string `json:"final_model,omitempty"`
	Error      string `json:"error,omitempty"`
	CreatedAt  string `json:"created_at"`
}

func (a *AdminAPI) listJobs(*http.Request) ([]JobSummary, error) {
	jobs := a.srv.Jobs()
	out := make([]JobSummary, 0, len(jobs))
	for _, j := range jobs {
		out = append(out, JobSummary{
			ID: j.ID, Kind: j.Spec.Kind, State: j.State, Round: j.Round, Rounds: j.Spec.Rounds,
			Clients: strings.Join(j.Spec.Clients, ","), FinalModel: j.FinalModel, Error: j.Error,
			CreatedAt: j.CreatedAt.Format("2006-01-02T15:04:05Z07:00"),
		})
	}
	return out, nil
}

func (a *AdminAPI) showJob(r *http.Request) (Job, error) {
	j, err := a.srv.Job(chi.URLParam(r, "id"))
	if errors.Is(err, ErrJobNotFound) {
		return Job{}, httpx.Errorf(http.StatusNotFound, "FL job %s not found", chi.URLParam(r, "id"))
	}
	return j, err
}

func (a *AdminAPI) cancel(r *http.Request) (Job, error) {
	j, err := a.srv.Cancel(chi.URLParam(r, "id"))
	switch {
	case errors.Is(err, ErrJobNotFound):
		return Job{}, httpx.Errorf(http.StatusNotFound, "FL job %s not found", chi.URLParam(r, "id"))
	case errors.Is(err, ErrJobFinished):
		return Job{}, httpx.Errorf(http.StatusConflict, "FL job %s already finished", chi.URLParam(r, "id"))
	}
	return j, err
}
