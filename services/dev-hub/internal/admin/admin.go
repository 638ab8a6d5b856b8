// Package admin serves the development hub's operator API on its own
// listener: register trusts (minting their keys and kit), enqueue and inspect
// tasks, read cohort results and run the stale sweep on demand. Every route
// requires "Authorization: Bearer <DEV_HUB_ADMIN_TOKEN>".
//
// A Server is safe for concurrent use.
package admin

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/flip-trust/node/services/dev-hub/internal/store"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
)

// HeartbeatTimeout is how recent a heartbeat must be for a trust to count as
// online, the FLIP hub's HEARTBEAT_TIMEOUT_SECONDS.
const HeartbeatTimeout = 30 * time.Second

// KeyBytes is the entropy of a minted trust key (FLIP's token_urlsafe(32)).
const KeyBytes = 32

// Config configures the admin API.
type Config struct {
	// Token is the bearer token every request must present; empty refuses all.
	Token string
	// AESKeyBase64 is the hub's shared key, written into every kit.
	AESKeyBase64 string
	// HubAPIURL returns the hub's public /api URL for kits that do not name one.
	HubAPIURL func() string
	// StaleTimeout and MaxRetries drive POST /admin/sweep.
	StaleTimeout time.Duration
	MaxRetries   int
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the admin API.
type Server struct {
	cfg       Config
	tokenHash [32]byte
	store     *store.Store
	cipher    *envelope.Cipher
	logger    *slog.Logger
}

// New builds the admin API over the store.
func New(cfg Config, st *store.Store, cipher *envelope.Cipher, logger *slog.Logger) *Server {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.HubAPIURL == nil {
		cfg.HubAPIURL = func() string { return "http://127.0.0.1:8080/api" }
	}
	return &Server{cfg: cfg, tokenHash: sha256.Sum256([]byte(cfg.Token)), store: st, cipher: cipher, logger: logger}
}

// Mount registers the routes under /admin on r. Each of more mounts further
// routes (with their full /admin/... paths) behind the same token check.
func (s *Server) Mount(r chi.Router, more ...func(chi.Router)) {
	r.Group(func(r chi.Router) {
		r.Use(s.authenticate)
		for _, m := range more {
			m(r)
		}
	})
	r.Route("/admin", func(r chi.Router) {
		r.Use(s.authenticate)
		r.Post("/trusts", httpx.Handle(s.createTrust))
		r.Get("/trusts", httpx.Handle(s.listTrusts))
		r.Post("/tasks", httpx.Handle(s.createTask))
		r.Get("/tasks", httpx.Handle(s.listTasks))
		r.Get("/tasks/{id}", httpx.Handle(s.showTask))
		r.Post("/tasks/{id}/cancel", httpx.Handle(s.cancelTask))
		r.Post("/cohort-queries", httpx.Handle(s.createCohortQuery))
		r.Get("/cohort-results", httpx.Handle(s.cohortResults))
		r.Post("/sweep", httpx.Handle(s.sweep))
	})
}

// authenticate compares digests of the presented and configured tokens in
// constant time, so neither content nor length leaks through timing.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		sum := sha256.Sum256([]byte(token))
		if !ok || token == "" || s.cfg.Token == "" || subtle.ConstantTimeCompare(sum[:], s.tokenHash[:]) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			httpx.WriteJSON(w, http.StatusUnauthorized, httpx.ErrorBody{Detail: "Not authenticated: a valid admin bearer token is required."})
			return
		}
		next.ServeHTTP(w, r)
	})
}

// mintKey returns 32 random bytes as unpadded URL-safe base64 (43 characters).
func mintKey() (string, error) {
	b := make([]byte, KeyBytes)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("mint key: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

var trustNamePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$`)

// CreateTrustRequest is the body of POST /admin/trusts.
type CreateTrustRequest struct {
	Name      string `json:"name"`
	Code      string `json:"code"`
	Region    string `json:"region"`
	HubAPIURL string `json:"hub_api_url"`
}

// CreateTrustReply carries the trust's keys, shown once, and its kit.
type CreateTrustReply struct {
	TrustID            string `json:"trust_id"`
	Name               string `json:"name"`
	APIKey             string `json:"api_key"`
	InternalServiceKey string `json:"internal_service_key"`
	KitEnv             string `json:"kit_env"`
}

func (s *Server) createTrust(r *http.Request) (CreateTrustReply, error) {
	var in CreateTrustRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return CreateTrustReply{}, err
	}
	if !trustNamePattern.MatchString(in.Name) {
		return CreateTrustReply{}, httpx.Errorf(http.StatusUnprocessableEntity, "name must match %s", trustNamePattern)
	}
	hubURL := s.cfg.HubAPIURL()
	if in.HubAPIURL != "" {
		u, err := NormalizeHubAPIURL(in.HubAPIURL)
		if err != nil {
			return CreateTrustReply{}, httpx.Errorf(http.StatusUnprocessableEntity, "hub_api_url: %v", err)
		}
		hubURL = u
	}
	code := in.Code
	if code == "" {
		code = in.Name
	}
	apiKey, err := mintKey()
	if err != nil {
		return CreateTrustReply{}, err
	}
	internalKey, err := mintKey()
	if err != nil {
		return CreateTrustReply{}, err
	}
	tr, err := s.store.CreateTrust(store.NewTrust{Name: in.Name, Code: code, Region: in.Region, KeyHash: sha256.Sum256([]byte(apiKey))}, s.cfg.Now())
	if errors.Is(err, store.ErrTrustExists) {
		return CreateTrustReply{}, httpx.Errorf(http.StatusConflict, "Trust '%s' already exists", in.Name)
	}
	if err != nil {
		return CreateTrustReply{}, err
	}
	s.logger.Info("trust registered", "trust_id", tr.ID, "trust_name", tr.Name)
	return CreateTrustReply{
		TrustID:            tr.ID,
		Name:               tr.Name,
		APIKey:             apiKey,
		InternalServiceKey: internalKey,
		KitEnv:             KitEnv(tr, apiKey, internalKey, s.cfg.AESKeyBase64, hubURL),
	}, nil
}

// KitEnv renders a trust's kit as .env text.
func KitEnv(tr store.Trust, apiKey, internalKey, aesKeyBase64, hubAPIURL string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# FLIP trust kit for trust '%s' (%s), issued by dev-hub.\n", tr.Name, tr.ID)
	b.WriteString("# The keys are shown once: the hub keeps only a SHA-256 digest of TRUST_API_KEY\n")
	b.WriteString("# and never TRUST_INTERNAL_SERVICE_KEY.\n")
	fmt.Fprintf(&b, "TRUST_API_KEY=%s\n", apiKey)
	fmt.Fprintf(&b, "TRUST_API_KEY_HEADER=%s\n", hubapi.DefaultKeyHeader)
	fmt.Fprintf(&b, "TRUST_INTERNAL_SERVICE_KEY=%s\n", internalKey)
	fmt.Fprintf(&b, "AES_KEY_BASE64=%s\n", aesKeyBase64)
	fmt.Fprintf(&b, "CENTRAL_HUB_API_URL=%s\n", hubAPIURL)
	fmt.Fprintf(&b, "EXPECTED_TRUST_ID=%s\n", tr.ID)
	return b.String()
}

// NormalizeHubAPIURL checks that raw is an absolute http(s) URL and returns it
// ending in "/api" (appended when missing), with no trailing slash.
func NormalizeHubAPIURL(raw string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(raw))
	if err != nil {
		return "", fmt.Errorf("parse url: %w", err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("%q is not an absolute http(s) URL", raw)
	}
	u.Path = strings.TrimRight(u.Path, "/")
	if !strings.HasSuffix(u.Path, "/api") {
		u.Path += "/api"
	}
	u.RawQuery, u.Fragment = "", ""
	return u.String(), nil
}

// TrustView is a trust as the admin API shows it.
type TrustView struct {
	TrustID          string          `json:"trust_id"`
	Name             string          `json:"name"`
	Code             string          `json:"code"`
	Region           string          `json:"region"`
	CreatedAt        time.Time       `json:"created_at"`
	LastHeartbeat    *time.Time      `json:"last_heartbeat"`
	Online           bool            `json:"online"`
	ServicesHealth   json.RawMessage `json:"services_health"`
	ServicesHealthAt *time.Time      `json:"services_health_at"`
}

func (s *Server) listTrusts(*http.Request) ([]TrustView, error) {
	trusts, err := s.store.Trusts()
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	out := make([]TrustView, 0, len(trusts))
	for _, tr := range trusts {
		health := tr.ServicesHealth
		if len(health) == 0 {
			health = json.RawMessage("null")
		}
		out = append(out, TrustView{
			TrustID:          tr.ID,
			Name:             tr.Name,
			Code:             tr.Code,
			Region:           tr.Region,
			CreatedAt:        tr.CreatedAt,
			LastHeartbeat:    tr.LastHeartbeat,
			Online:           tr.LastHeartbeat != nil && !tr.LastHeartbeat.Before(now.Add(-HeartbeatTimeout)),
			ServicesHealth:   health,
			ServicesHealthAt: tr.ServicesHealthAt,
		})
	}
	return out, nil
}

// resolveTrust finds a trust by id or by name.
func (s *Server) resolveTrust(idOrName string) (store.Trust, error) {
	tr, err := s.store.Trust(idOrName)
	if errors.Is(err, store.ErrTrustNotFound) {
		tr, err = s.store.TrustByName(idOrName)
	}
	if errors.Is(err, store.ErrTrustNotFound) {
		return store.Trust{}, httpx.Errorf(http.StatusNotFound, "Trust '%s' not found", idOrName)
	}
	return tr, err
}

// trustFor finds the trust a request body names by exactly one of id or name.
func (s *Server) trustFor(id, name string) (store.Trust, error) {
	if name != "" {
		tr, err := s.store.TrustByName(name)
		if errors.Is(err, store.ErrTrustNotFound) {
			return store.Trust{}, httpx.Errorf(http.StatusNotFound, "Trust '%s' not found", name)
		}
		return tr, err
	}
	tr, err := s.store.Trust(id)
	if errors.Is(err, store.ErrTrustNotFound) {
		return store.Trust{}, httpx.Errorf(http.StatusNotFound, "Trust %s not found", id)
	}
	return tr, err
}

// TaskView is a task as the admin API shows it. Payload (plaintext) appears
// only on GET /admin/tasks/{id}.
type TaskView struct {
	ID                  string          `json:"id"`
	TrustID             string          `json:"trust_id"`
	TrustName           string          `json:"trust_name"`
	TaskType            hubapi.TaskType `json:"task_type"`
	Status              hubapi.Status   `json:"status"`
	QueryID             *string         `json:"query_id"`
	Result              *string         `json:"result"`
	NeedsPostProcessing bool            `json:"needs_post_processing"`
	RetryCount          int             `json:"retry_count"`
	CreatedAt           time.Time       `json:"created_at"`
	UpdatedAt           *time.Time      `json:"updated_at"`
	DispatchedAt        *time.Time      `json:"dispatched_at"`
	CompletedAt         *time.Time      `json:"completed_at"`
	Dispatches          int             `json:"dispatches"`
	ResultPosts         int             `json:"result_posts"`
	RefusedPosts        int             `json:"refused_posts"`
	Payload             json.RawMessage `json:"payload,omitempty"`
}

func viewTask(t store.Task, trustName string) TaskView {
	return TaskView{
		ID: t.ID, TrustID: t.TrustID, TrustName: trustName, TaskType: t.TaskType, Status: t.Status,
		QueryID: t.QueryID, Result: t.Result, NeedsPostProcessing: t.NeedsPostProcessing, RetryCount: t.RetryCount,
		CreatedAt: t.CreatedAt, UpdatedAt: t.UpdatedAt, DispatchedAt: t.DispatchedAt, CompletedAt: t.CompletedAt,
		Dispatches: t.Dispatches, ResultPosts: t.ResultPosts, RefusedPosts: t.RefusedPosts,
	}
}

func (s *Server) trustNames() (map[string]string, error) {
	trusts, err := s.store.Trusts()
	if err != nil {
		return nil, err
	}
	names := make(map[string]string, len(trusts))
	for _, tr := range trusts {
		names[tr.ID] = tr.Name
	}
	return names, nil
}

// CreateTaskRequest is the body of POST /admin/tasks. SealedPayload, instead
// of Payload, is an envelope dispatched verbatim: a test hook for tampered or
// mis-bound payloads.
type CreateTaskRequest struct {
	TrustID       string          `json:"trust_id"`
	TrustName     string          `json:"trust_name"`
	TaskType      hubapi.TaskType `json:"task_type"`
	Payload       json.RawMessage `json:"payload"`
	SealedPayload string          `json:"sealed_payload"`
}

func (s *Server) createTask(r *http.Request) (TaskView, error) {
	var in CreateTaskRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return TaskView{}, err
	}
	var problems []string
	if !in.TaskType.Valid() {
		problems = append(problems, fmt.Sprintf("task_type must be one of %v", hubapi.TaskTypes))
	}
	var payload map[string]json.RawMessage
	switch {
	case in.SealedPayload != "" && len(in.Payload) > 0:
		problems = append(problems, "give payload or sealed_payload, not both")
	case in.SealedPayload != "":
	default:
		if err := json.Unmarshal(in.Payload, &payload); err != nil || payload == nil {
			problems = append(problems, "payload must be a JSON object")
		}
	}
	if (in.TrustID == "") == (in.TrustName == "") {
		problems = append(problems, "give exactly one of trust_id and trust_name")
	}
	if len(problems) > 0 {
		return TaskView{}, httpx.NewError(http.StatusUnprocessableEntity, problems)
	}
	tr, err := s.trustFor(in.TrustID, in.TrustName)
	if err != nil {
		return TaskView{}, err
	}
	var queryID *string
	if in.TaskType == hubapi.CohortQuery || in.TaskType == hubapi.PersistCohort {
		var q string
		if raw, ok := payload["query_id"]; ok && json.Unmarshal(raw, &q) == nil && q != "" {
			queryID = &q
		}
	}
	return s.enqueue(store.NewTask{TrustID: tr.ID, TaskType: in.TaskType, Payload: in.Payload, SealedPayload: in.SealedPayload, QueryID: queryID}, tr.Name)
}

func (s *Server) enqueue(nt store.NewTask, trustName string) (TaskView, error) {
	t, err := s.store.CreateTask(nt, s.cfg.Now())
	if err != nil {
		return TaskView{}, err
	}
	s.logger.Info("task enqueued", "task_id", t.ID, "trust_id", t.TrustID, "task_type", string(t.TaskType))
	return viewTask(t, trustName), nil
}

// CohortQueryRequest is the body of POST /admin/cohort-queries: the hub-side
// builder of a cohort_query payload. Omitted ids are generated.
type CohortQueryRequest struct {
	TrustID   string `json:"trust_id"`
	TrustName string `json:"trust_name"`
	Query     string `json:"query"`
	QueryName string `json:"query_name"`
	QueryID   string `json:"query_id"`
	ProjectID string `json:"project_id"`
}

// CohortQueryPayload is the plaintext payload of a cohort_query task.
type CohortQueryPayload struct {
	EncryptedProjectID string `json:"encrypted_project_id"`
	QueryID            string `json:"query_id"`
	QueryName          string `json:"query_name"`
	Query              string `json:"query"`
	TrustID            string `json:"trust_id"`
}

func (s *Server) createCohortQuery(r *http.Request) (TaskView, error) {
	var in CohortQueryRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return TaskView{}, err
	}
	var problems []string
	if strings.TrimSpace(in.Query) == "" {
		problems = append(problems, "query is required")
	}
	if (in.TrustID == "") == (in.TrustName == "") {
		problems = append(problems, "give exactly one of trust_id and trust_name")
	}
	for _, f := range []struct{ name, value string }{{"query_id", in.QueryID}, {"project_id", in.ProjectID}} {
		if f.value != "" {
			if _, err := uuid.Parse(f.value); err != nil {
				problems = append(problems, f.name+" must be a UUID")
			}
		}
	}
	if len(problems) > 0 {
		return TaskView{}, httpx.NewError(http.StatusUnprocessableEntity, problems)
	}
	tr, err := s.trustFor(in.TrustID, in.TrustName)
	if err != nil {
		return TaskView{}, err
	}
	queryID, projectID := in.QueryID, in.ProjectID
	if queryID == "" {
		queryID = uuid.NewString()
	}
	if projectID == "" {
		projectID = uuid.NewString()
	}
	queryID, projectID = uuid.MustParse(queryID).String(), uuid.MustParse(projectID).String()
	name := in.QueryName
	if name == "" {
		name = "dev-hub query"
	}
	sealedProject, err := s.cipher.Seal([]byte(projectID), envelope.ProjectIDContext)
	if err != nil {
		return TaskView{}, err
	}
	payload, err := json.Marshal(CohortQueryPayload{
		EncryptedProjectID: sealedProject, QueryID: queryID, QueryName: name, Query: in.Query, TrustID: tr.ID,
	})
	if err != nil {
		return TaskView{}, fmt.Errorf("encode cohort payload: %w", err)
	}
	return s.enqueue(store.NewTask{TrustID: tr.ID, TaskType: hubapi.CohortQuery, Payload: payload, QueryID: &queryID}, tr.Name)
}

var statuses = map[hubapi.Status]bool{
	hubapi.Pending: true, hubapi.InProgress: true, hubapi.Completed: true, hubapi.Failed: true, hubapi.Cancelled: true,
}

func (s *Server) listTasks(r *http.Request) ([]TaskView, error) {
	var f store.TaskFilter
	if t := r.URL.Query().Get("trust"); t != "" {
		tr, err := s.resolveTrust(t)
		if err != nil {
			return nil, err
		}
		f.TrustID = tr.ID
	}
	if st := r.URL.Query().Get("status"); st != "" {
		f.Status = hubapi.Status(strings.ToUpper(st))
		if !statuses[f.Status] {
			return nil, httpx.Errorf(http.StatusUnprocessableEntity, "status must be one of PENDING, IN_PROGRESS, COMPLETED, FAILED, CANCELLED")
		}
	}
	tasks, err := s.store.Tasks(f)
	if err != nil {
		return nil, err
	}
	names, err := s.trustNames()
	if err != nil {
		return nil, err
	}
	out := make([]TaskView, 0, len(tasks))
	for _, t := range tasks {
		out = append(out, viewTask(t, names[t.TrustID]))
	}
	return out, nil
}

func (s *Server) task(r *http.Request) (store.Task, string, error) {
	id := chi.URLParam(r, "id")
	u, err := uuid.Parse(id)
	if err != nil {
		return store.Task{}, "", httpx.Errorf(http.StatusUnprocessableEntity, "task id must be a UUID")
	}
	t, err := s.store.Task(u.String())
	if errors.Is(err, store.ErrTaskNotFound) {
		return store.Task{}, "", httpx.Errorf(http.StatusNotFound, "Task %s not found", u)
	}
	if err != nil {
		return store.Task{}, "", err
	}
	tr, err := s.store.Trust(t.TrustID)
	if err != nil {
		return store.Task{}, "", err
	}
	return t, tr.Name, nil
}

func (s *Server) showTask(r *http.Request) (TaskView, error) {
	t, name, err := s.task(r)
	if err != nil {
		return TaskView{}, err
	}
	v := viewTask(t, name)
	v.Payload = t.Payload
	return v, nil
}

func (s *Server) cancelTask(r *http.Request) (TaskView, error) {
	t, name, err := s.task(r)
	if err != nil {
		return TaskView{}, err
	}
	t, err = s.store.CancelTask(t.ID, s.cfg.Now())
	var se *store.StatusError
	if errors.As(err, &se) {
		return TaskView{}, httpx.Errorf(http.StatusConflict, "Task %s is not pending (current status: %s)", chi.URLParam(r, "id"), se.Status)
	}
	if err != nil {
		return TaskView{}, err
	}
	return viewTask(t, name), nil
}

// CohortResultView is a stored cohort result as the admin API shows it: the
// fields the trust posted, flattened, and how often it was received.
type CohortResultView struct {
	QueryID         string              `json:"query_id"`
	TrustID         string              `json:"trust_id"`
	Created         string              `json:"created"`
	RecordCount     int                 `json:"record_count"`
	Data            []hubapi.CohortStat `json:"data"`
	Suppressed      bool                `json:"suppressed"`
	Error           *string             `json:"error"`
	ReceivedCount   int                 `json:"received_count"`
	FirstReceivedAt time.Time           `json:"first_received_at"`
	UpdatedAt       time.Time           `json:"updated_at"`
}

func (s *Server) cohortResults(r *http.Request) ([]CohortResultView, error) {
	q := r.URL.Query().Get("query_id")
	if q != "" {
		u, err := uuid.Parse(q)
		if err != nil {
			return nil, httpx.Errorf(http.StatusUnprocessableEntity, "query_id must be a UUID")
		}
		q = u.String()
	}
	rows, err := s.store.CohortResults(q)
	if err != nil {
		return nil, err
	}
	out := make([]CohortResultView, 0, len(rows))
	for _, row := range rows {
		out = append(out, CohortResultView{
			QueryID: row.QueryID, TrustID: row.TrustID, Created: row.Created,
			RecordCount: row.Data.RecordCount, Data: row.Data.Data, Suppressed: row.Data.Suppressed, Error: row.Data.Error,
			ReceivedCount: row.ReceivedCount, FirstReceivedAt: row.FirstReceived, UpdatedAt: row.UpdatedAt,
		})
	}
	return out, nil
}

func (s *Server) sweep(*http.Request) (store.SweepReport, error) {
	rep, err := s.store.SweepStale(s.cfg.Now(), s.cfg.StaleTimeout, s.cfg.MaxRetries)
	if err != nil {
		return store.SweepReport{}, err
	}
	if rep.Requeued == nil {
		rep.Requeued = []string{}
	}
	if rep.Failed == nil {
		rep.Failed = []string{}
	}
	return rep, nil
}
