// Package hubserver serves the FLIP Central Hub's trust-facing API under /api,
// wire-compatible with the hub: POST /trust/heartbeat, GET /tasks/pending,
// POST /tasks/{task_id}/result and POST /cohort/results, authenticated by the
// trust's raw API key in a configurable header, with the hub's status codes,
// error texts and per-trust rate limits.
//
// Task payloads are stored in plaintext and sealed at dispatch with the
// envelope context "task:<task_type>". A Server is safe for concurrent use.
package hubserver

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"
	"github.com/google/uuid"

	"github.com/flip-trust/node/services/dev-hub/internal/store"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/hubapi"
)

// Hub constants that the FLIP hub fixes.
const (
	// DispatchLimit is how many tasks one poll claims at most.
	DispatchLimit = 50
	// MaxBodyBytes bounds a request body: a result of MaxResultLength
	// characters, JSON-escaped, fits with room to spare.
	MaxBodyBytes = 8 * hubapi.MaxResultLength
)

// Limits are per-trust requests per minute; zero means unlimited.
type Limits struct {
	PendingPerMin   int
	HeartbeatPerMin int
	ResultPerMin    int
}

// DefaultLimits are the FLIP hub's limits.
func DefaultLimits() Limits {
	return Limits{PendingPerMin: 30, HeartbeatPerMin: 30, ResultPerMin: 60}
}

// Config configures a Server.
type Config struct {
	// KeyHeader carries the trust's raw API key; "" means hubapi.DefaultKeyHeader.
	KeyHeader string
	// HubVersion is reported in heartbeat replies; "" omits it.
	HubVersion string
	Limits     Limits
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server is the hub's trust-facing API.
type Server struct {
	cfg         Config
	store       *store.Store
	cipher      *envelope.Cipher
	logger      *slog.Logger
	fingerprint string

	pendingLimit   *limiter
	heartbeatLimit *limiter
	resultLimit    *limiter
}

// New builds a Server over the store, sealing payloads with cipher.
func New(cfg Config, st *store.Store, cipher *envelope.Cipher, logger *slog.Logger) *Server {
	if cfg.KeyHeader == "" {
		cfg.KeyHeader = hubapi.DefaultKeyHeader
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{
		cfg:            cfg,
		store:          st,
		cipher:         cipher,
		logger:         logger,
		fingerprint:    cipher.Fingerprint(),
		pendingLimit:   newLimiter(cfg.Limits.PendingPerMin),
		heartbeatLimit: newLimiter(cfg.Limits.HeartbeatPerMin),
		resultLimit:    newLimiter(cfg.Limits.ResultPerMin),
	}
}

// Mount registers the API under /api on r.
func (s *Server) Mount(r chi.Router) {
	r.Route("/api", func(r chi.Router) {
		r.Use(s.authenticate)
		r.With(s.limit(s.heartbeatLimit)).Post("/trust/heartbeat", httpx.Handle(s.heartbeat))
		r.With(s.limit(s.pendingLimit)).Get("/tasks/pending", httpx.Handle(s.pending))
		r.With(s.limit(s.resultLimit)).Post("/tasks/{task_id}/result", httpx.Handle(s.result))
		r.Post("/cohort/results", httpx.Handle(s.cohortResults))
	})
}

// caller is the authenticated trust of a request.
type caller struct {
	hubapi.Identity
	rateKey string
}

type callerKey struct{}

func callerFrom(ctx context.Context) caller {
	c, _ := ctx.Value(callerKey{}).(caller)
	return c
}

// authenticate resolves the trust from its raw API key: the key's SHA-256 is
// compared in constant time with every registered digest, with no early exit,
// so timing does not reveal which trust matched.
func (s *Server) authenticate(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := r.Header.Get(s.cfg.KeyHeader)
		if key == "" {
			w.Header().Set("WWW-Authenticate", "ApiKey")
			httpx.WriteJSON(w, http.StatusUnauthorized, hubapi.ErrorReply{Detail: "Not authenticated: API key is missing."})
			return
		}
		sum := sha256.Sum256([]byte(key))
		creds := s.store.Credentials()
		match := -1
		for i := range creds {
			eq := subtle.ConstantTimeCompare(sum[:], creds[i].KeyHash[:])
			match = subtle.ConstantTimeSelect(eq, i, match)
		}
		if match < 0 {
			httpx.WriteJSON(w, http.StatusUnauthorized, hubapi.ErrorReply{Detail: "Invalid API Key."})
			return
		}
		c := caller{
			Identity: hubapi.Identity{TrustID: creds[match].TrustID, TrustName: creds[match].TrustName},
			rateKey:  "trust:" + hex.EncodeToString(sum[:])[:16],
		}
		next.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), callerKey{}, c)))
	})
}

// limit applies a per-trust limiter keyed on a digest of the trust's key.
func (s *Server) limit(l *limiter) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !l.allow(callerFrom(r.Context()).rateKey, s.cfg.Now()) {
				httpx.WriteJSON(w, http.StatusTooManyRequests, hubapi.ErrorReply{Detail: "Rate limit exceeded. Try again later."})
				return
			}
			next.ServeHTTP(w, r)
		})
	}
}

func unprocessable(errs fieldErrors) error {
	return &httpx.Error{Status: http.StatusUnprocessableEntity, Detail: errs}
}

func detail(status int, format string, args ...any) error {
	return &httpx.Error{Status: status, Detail: fmt.Sprintf(format, args...)}
}

func readBody(r *http.Request) ([]byte, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, MaxBodyBytes+1))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return nil, &httpx.Error{Status: http.StatusRequestEntityTooLarge, Detail: "Request body too large"}
	case err != nil:
		return nil, &httpx.Error{Status: http.StatusBadRequest, Detail: "Could not read request body"}
	}
	if len(body) > MaxBodyBytes {
		return nil, &httpx.Error{Status: http.StatusRequestEntityTooLarge, Detail: "Request body too large"}
	}
	return body, nil
}

// wireTime formats a timestamp as the hub's JSON encoder does.
func wireTime(t time.Time) string {
	return t.UTC().Format("2006-01-02T15:04:05.000000Z07:00")
}

func (s *Server) pending(r *http.Request) (hubapi.PendingReply, error) {
	c := callerFrom(r.Context())
	reply := hubapi.PendingReply{Identity: c.Identity, Tasks: []hubapi.Task{}}
	sealed := map[string]string{} // the claim may run more than once
	claimed, err := s.store.ClaimPending(c.TrustID, DispatchLimit, s.cfg.Now(), func(t store.Task) error {
		if _, done := sealed[t.ID]; done {
			return nil
		}
		env := t.SealedPayload
		if env == "" {
			var err error
			if env, err = s.cipher.Seal(t.Payload, envelope.TaskContext(string(t.TaskType))); err != nil {
				return fmt.Errorf("seal task %s: %w", t.ID, err)
			}
		}
		sealed[t.ID] = env
		return nil
	})
	if err != nil {
		s.logger.Error("dispatch failed", "trust_id", c.TrustID, "err", err)
		return hubapi.PendingReply{}, err
	}
	for _, t := range claimed {
		reply.Tasks = append(reply.Tasks, hubapi.Task{ID: t.ID, TaskType: t.TaskType, Payload: sealed[t.ID], CreatedAt: wireTime(t.CreatedAt)})
	}
	if len(claimed) > 0 {
		s.logger.Info("tasks dispatched", "trust_id", c.TrustID, "trust_name", c.TrustName, "count", len(claimed))
	}
	return reply, nil
}

func (s *Server) result(r *http.Request) (hubapi.ResultReply, error) {
	c := callerFrom(r.Context())
	rawID := chi.URLParam(r, "task_id")
	id, err := uuid.Parse(rawID)
	if err != nil {
		var errs fieldErrors
		errs.add("uuid_parsing", "Input should be a valid UUID", "path", "task_id")
		return hubapi.ResultReply{}, unprocessable(errs)
	}
	body, err := readBody(r)
	if err != nil {
		return hubapi.ResultReply{}, err
	}
	in, errs := parseResult(body)
	if len(errs) > 0 {
		return hubapi.ResultReply{}, unprocessable(errs)
	}
	taskID := id.String()
	task, err := s.store.RecordResult(taskID, c.TrustID, in.Success, in.Result, s.cfg.Now())
	var statusErr *store.StatusError
	switch {
	case errors.Is(err, store.ErrTaskNotFound):
		return hubapi.ResultReply{}, detail(http.StatusNotFound, "Task %s not found", taskID)
	case errors.Is(err, store.ErrNotOwner):
		return hubapi.ResultReply{}, detail(http.StatusForbidden, "Task %s does not belong to trust '%s'", taskID, c.TrustName)
	case errors.As(err, &statusErr):
		s.logger.Warn("result refused", "trust_id", c.TrustID, "task_id", taskID, "status", string(statusErr.Status), "refused_posts", task.RefusedPosts)
		return hubapi.ResultReply{}, detail(http.StatusConflict, "Task %s is not in progress (current status: %s)", taskID, statusErr.Status)
	case err != nil:
		s.logger.Error("record result failed", "trust_id", c.TrustID, "task_id", taskID, "err", err)
		return hubapi.ResultReply{}, err
	}
	s.logger.Info("task result recorded", "trust_id", c.TrustID, "task_id", taskID, "task_type", string(task.TaskType), "status", string(task.Status))
	return hubapi.ResultReply{Identity: c.Identity, Message: fmt.Sprintf("Task %s result recorded", taskID)}, nil
}

func (s *Server) heartbeat(r *http.Request) (hubapi.HeartbeatReply, error) {
	c := callerFrom(r.Context())
	body, err := readBody(r)
	if err != nil {
		return hubapi.HeartbeatReply{}, err
	}
	services, errs := parseHeartbeat(body)
	if len(errs) > 0 {
		s.logger.Warn("rejected health snapshot", "trust_name", c.TrustName, "trust_id", c.TrustID, "errors", len(errs))
		return hubapi.HeartbeatReply{}, unprocessable(errs)
	}
	var snapshot json.RawMessage
	if services != nil {
		if snapshot, err = json.Marshal(services); err != nil {
			return hubapi.HeartbeatReply{}, fmt.Errorf("encode health snapshot: %w", err)
		}
	}
	if _, err := s.store.Heartbeat(c.TrustID, snapshot, s.cfg.Now()); err != nil {
		s.logger.Error("heartbeat failed", "trust_id", c.TrustID, "err", err)
		return hubapi.HeartbeatReply{}, err
	}
	reply := hubapi.HeartbeatReply{Identity: c.Identity, Message: "Heartbeat recorded"}
	if s.cfg.HubVersion != "" {
		v := s.cfg.HubVersion
		reply.HubVersion = &v
	}
	fp := s.fingerprint
	reply.AESKeyFingerprint = &fp
	return reply, nil
}

func (s *Server) cohortResults(r *http.Request) (hubapi.CohortResultsReply, error) {
	c := callerFrom(r.Context())
	body, err := readBody(r)
	if err != nil {
		return hubapi.CohortResultsReply{}, err
	}
	in, errs := parseCohortResults(body)
	if len(errs) > 0 {
		return hubapi.CohortResultsReply{}, unprocessable(errs)
	}
	if in.TrustID != c.TrustID {
		return hubapi.CohortResultsReply{}, detail(http.StatusForbidden, "Trust '%s' cannot submit results for another trust", c.TrustName)
	}
	if _, err := s.store.UpsertCohortResult(in, s.cfg.Now()); err != nil {
		s.logger.Error("store cohort results failed", "trust_id", c.TrustID, "err", err)
		return hubapi.CohortResultsReply{}, err
	}
	s.logger.Info("cohort results received", "trust_id", c.TrustID, "query_id", in.QueryID, "failed", in.Error != nil, "suppressed", in.Suppressed)
	return hubapi.CohortResultsReply{Message: "Cohort results processed successfully"}, nil
}
