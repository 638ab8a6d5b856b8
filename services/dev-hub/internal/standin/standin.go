// Package standin serves development stand-ins for the trust's internal
// services (data-access-api and imaging-api) until the real services run
// beside the node. It authenticates every request with the trust's mesh rules,
// answers with fixed synthetic data that carries no patient information, and
// records what it received so tests and demos can show the exact headers,
// paths and bodies a trust-api sent.
//
// A Server is safe for concurrent use.
package standin

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/mesh"
)

// Request is one request the stand-in accepted.
type Request struct {
	Method      string          `json:"method"`
	Path        string          `json:"path"`
	Query       string          `json:"query,omitempty"`
	Caller      string          `json:"caller"`
	AuthScheme  string          `json:"auth_scheme"`
	CohortAdmin bool            `json:"cohort_admin_header"`
	Body        json.RawMessage `json:"body,omitempty"`
	At          time.Time       `json:"at"`
}

// Server is the stand-in's HTTP handler.
type Server struct {
	data     *mesh.Verifier
	imaging  *mesh.Verifier
	logger   *slog.Logger
	mu       sync.Mutex
	requests []Request
}

// New returns a stand-in that admits callers authenticated with key.
func New(key []byte, keyHeader string, logger *slog.Logger) *Server {
	return &Server{
		data:    mesh.NewVerifier("data-access-api", key, keyHeader, logger),
		imaging: mesh.NewVerifier("imaging-api", key, keyHeader, logger),
		logger:  logger,
	}
}

// Routes mounts the stand-in's routes on r.
func (s *Server) Routes(r chi.Router) {
	r.Get("/_standin/requests", s.list)
	r.Get("/health", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok", "version": "stand-in"})
	})
	r.Group(func(r chi.Router) {
		r.Use(s.data.Require("trust-api", mesh.CallerRawKey))
		r.Post("/cohort", s.record(s.cohort))
		r.Post("/cohort/snapshot", s.record(s.snapshot))
	})
	r.Group(func(r chi.Router) {
		r.Use(s.data.Require("fl-client", mesh.CallerRawKey))
		r.Post("/cohort/dataframe", s.record(s.dataframe))
	})
	r.Group(func(r chi.Router) {
		r.Use(s.imaging.Require("trust-api", mesh.CallerRawKey))
		r.Get("/retrieval/import_status_count/{id}", s.record(s.importStatus))
		r.Put("/retrieval/reimport_imaging_project_studies/{id}", s.record(s.empty))
		r.Post("/projects/create-project-from-central-hub-project", s.record(s.createProject))
		r.Delete("/projects/{id}", s.record(s.empty))
		r.Put("/users", s.record(s.empty))
	})
}

// Requests returns a copy of what the stand-in has received.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

func (s *Server) list(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, s.Requests())
}

func (s *Server) record(next func(http.ResponseWriter, *http.Request, json.RawMessage)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"detail": "unreadable body"})
			return
		}
		var raw json.RawMessage
		if len(body) > 0 {
			if !json.Valid(body) {
				writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"detail": "body is not JSON"})
				return
			}
			raw = body
		}
		caller, _ := mesh.CallerFrom(r.Context())
		scheme := "jwt"
		if caller == mesh.CallerRawKey {
			scheme = "key"
		}
		s.mu.Lock()
		s.requests = append(s.requests, Request{
			Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Caller: caller, AuthScheme: scheme,
			CohortAdmin: r.Header.Get(mesh.HeaderCohortAdmin) != "", Body: raw, At: time.Now().UTC(),
		})
		s.mu.Unlock()
		next(w, r, raw)
	}
}

// cohort answers like data-access-api's POST /cohort with synthetic,
// already disclosure-controlled statistics.
func (s *Server) cohort(w http.ResponseWriter, _ *http.Request, body json.RawMessage) {
	var in struct {
		QueryID string `json:"query_id"`
		TrustID string `json:"trust_id"`
		Query   string `json:"query"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.Query == "" {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"detail": "query is required"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"query_id":     in.QueryID,
		"trust_id":     in.TrustID,
		"created":      time.Now().UTC().Format("2006-01-02"),
		"record_count": 120,
		"suppressed":   false,
		"error":        nil,
		"data": []map[string]any{
			{"name": "Counts", "results": []map[string]any{{"value": "person_id", "count": 120}}},
			{"name": "Sex Distribution", "results": []map[string]any{{"value": "F", "count": 64}, {"value": "M", "count": 56}}},
			{"name": "Age Distribution", "results": []map[string]any{{"value": 40, "count": 70}, {"value": "Other", "count": 50}}},
		},
	})
}

func (s *Server) snapshot(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
	writeJSON(w, http.StatusOK, map[string]any{
		"row_count": 120, "columns": []string{"person_id"}, "has_accessions": false,
		"snapshot_at": time.Now().UTC().Format(time.RFC3339), "query_hash": "000000000000",
	})
}

func (s *Server) importStatus(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
	writeJSON(w, http.StatusOK, map[string]any{"import_status": map[string]int{
		"successful_count": 0, "failed_count": 0, "processing_count": 0, "queued_count": 0, "queue_failed_count": 0,
	}})
}

func (s *Server) createProject(w http.ResponseWriter, _ *http.Request, body json.RawMessage) {
	var in struct {
		ProjectID   string `json:"project_id"`
		ProjectName string `json:"project_name"`
	}
	if err := json.Unmarshal(body, &in); err != nil || in.ProjectID == "" {
		writeJSON(w, http.StatusUnprocessableEntity, map[string]string{"detail": "project_id is required"})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"ID": in.ProjectID, "name": in.ProjectName, "created_users": []any{}, "added_users": []any{},
	})
}

func (s *Server) empty(w http.ResponseWriter, _ *http.Request, _ json.RawMessage) {
	writeJSON(w, http.StatusOK, map[string]any{})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
