// Package tasks runs the seven FLIP hub task types against the trust's
// internal services. The Executor opens the sealed payload under the task
// type's context and dispatches it to a handler that calls data-access-api or
// imaging-api with FLIP's paths and bodies. Every outcome is a value: handlers
// never panic or return errors, and they never log payload contents (SQL,
// emails, ids from the hub go to the wire only).
package tasks

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
)

// Outcome is the result of one task.
type Outcome struct {
	// Success is the reported success flag.
	Success bool
	// Result is the success result text (nil reports JSON null).
	Result *string
	// Err is the failure message (FLIP's error text).
	Err string
	// StatusCode is set on failures that must carry the upstream status.
	StatusCode *int
	// CohortResults is a body for POST /cohort/results, posted to the hub
	// before the result; nil when there is none.
	CohortResults json.RawMessage
	// Project is the project id the payload names (project_id, or the
	// opened encrypted_project_id), recorded in the audit ledger.
	Project string
}

// failure builds a failed Outcome.
func failure(msg string) Outcome { return Outcome{Err: msg} }

// Opener opens sealed payload envelopes; *envelope.Cipher implements it.
type Opener interface {
	Open(envelope string, context string) ([]byte, error)
}

var _ Opener = (*envelope.Cipher)(nil)

// Config holds what the handlers need to reach the internal services.
type Config struct {
	// DataAccessURL and ImagingURL are the base URLs of the services.
	DataAccessURL string
	ImagingURL    string
	// CohortQueryTimeout bounds cohort_query and persist_cohort calls (300 s).
	CohortQueryTimeout time.Duration
	// RequestTimeout bounds every other internal call (30 s).
	RequestTimeout time.Duration
	// CohortAdminProof is the X-Cohort-Admin-Key value, envelope.CohortAdminProof(AES_KEY_BASE64).
	CohortAdminProof string
	// CohortAdminHeader is the header carrying the proof (X-Cohort-Admin-Key).
	CohortAdminHeader string
	// Now replaces time.Now in tests (cohort error envelopes are dated by it).
	Now func() time.Time
}

type handler func(ctx context.Context, payload map[string]json.RawMessage, raw []byte) Outcome

// Executor decrypts and runs tasks. It is safe for concurrent use.
type Executor struct {
	cfg      Config
	opener   Opener
	auth     Authorizer
	client   *http.Client
	logger   *slog.Logger
	handlers map[hubapi.TaskType]handler
}

// NewExecutor wires the handlers. client should have no overall timeout:
// each call gets its own deadline from cfg.
func NewExecutor(cfg Config, opener Opener, auth Authorizer, client *http.Client, logger *slog.Logger) *Executor {
	if cfg.CohortQueryTimeout <= 0 {
		cfg.CohortQueryTimeout = 300 * time.Second
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 30 * time.Second
	}
	if cfg.CohortAdminHeader == "" {
		cfg.CohortAdminHeader = "X-Cohort-Admin-Key"
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	cfg.DataAccessURL = strings.TrimRight(cfg.DataAccessURL, "/")
	cfg.ImagingURL = strings.TrimRight(cfg.ImagingURL, "/")
	e := &Executor{cfg: cfg, opener: opener, auth: auth, client: client, logger: logger}
	e.handlers = map[hubapi.TaskType]handler{
		hubapi.CohortQuery:       e.cohortQuery,
		hubapi.PersistCohort:     e.persistCohort,
		hubapi.CreateImaging:     e.createImaging,
		hubapi.DeleteImaging:     e.deleteImaging,
		hubapi.GetImagingStatus:  e.getImagingStatus,
		hubapi.ReimportStudies:   e.reimportStudies,
		hubapi.UpdateUserProfile: e.updateUserProfile,
	}
	return e
}

// Known reports whether t has a handler.
func (e *Executor) Known(t hubapi.TaskType) bool {
	_, ok := e.handlers[t]
	return ok
}

// ReadOnly reports whether running t twice is harmless, so a run
// interrupted by a restart may be repeated.
func ReadOnly(t hubapi.TaskType) bool {
	return t == hubapi.CohortQuery || t == hubapi.GetImagingStatus
}

// Execute runs one task: the unknown-type check comes before decryption, then
// the payload is opened under task:<type> and handed to the handler.
func (e *Executor) Execute(ctx context.Context, id string, t hubapi.TaskType, sealed string) Outcome {
	h, ok := e.handlers[t]
	if !ok {
		e.logger.Warn("unknown task type", "task_id", id, "task_type", string(t))
		return failure("Unknown task type: " + string(t))
	}
	plain, err := e.opener.Open(sealed, envelope.TaskContext(string(t)))
	if err != nil {
		if errors.Is(err, envelope.ErrAuthentication) {
			e.logger.Error("task payload failed authentication", "task_id", id, "task_type", string(t))
			return failure("Invalid payload: failed authentication")
		}
		e.logger.Error("task payload could not be opened", "task_id", id, "task_type", string(t), "error", err.Error())
		return failure("Invalid payload: " + err.Error())
	}
	var payload map[string]json.RawMessage
	if err := json.Unmarshal(plain, &payload); err != nil || payload == nil {
		e.logger.Error("task payload is not a JSON object", "task_id", id, "task_type", string(t))
		return failure("Invalid payload: payload is not a JSON object")
	}
	e.logger.Info("Processing task "+id+" (type="+string(t)+")", "task_id", id, "task_type", string(t))
	out := h(ctx, payload, plain)
	out.Project = e.project(payload)
	return out
}

// project is the payload's project id for the audit ledger: project_id in
// clear when it is a UUID, else the opened encrypted_project_id; "" when
// neither is there.
func (e *Executor) project(p map[string]json.RawMessage) string {
	if id, ok := str(p, "project_id"); ok && hubapi.ValidTaskID(id) {
		return id
	}
	sealed, ok := str(p, "encrypted_project_id")
	if !ok || sealed == "" {
		return ""
	}
	plain, err := e.opener.Open(sealed, envelope.ProjectIDContext)
	if err != nil || !hubapi.ValidTaskID(string(plain)) {
		return ""
	}
	return string(plain)
}
