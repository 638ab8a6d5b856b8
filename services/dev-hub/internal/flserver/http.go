package flserver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/httpx"
)

// MaxResultBytes bounds the body of a result or heartbeat.
const MaxResultBytes = 1 << 20

// TaskAPI serves the trust-facing task routes of the FL protocol:
// GET /fl/v1/tasks/next, POST /fl/v1/tasks/{id}/heartbeat and
// POST /fl/v1/tasks/{id}/result. It does not authenticate: mount it behind
// the client authentication middleware, which ClientOf reads.
type TaskAPI struct {
	srv      *Server
	clientOf func(*http.Request) (string, bool)
}

// NewTaskAPI serves srv's tasks to the client that clientOf names for each
// request (false: the request is refused with 401).
func NewTaskAPI(srv *Server, clientOf func(*http.Request) (string, bool)) *TaskAPI {
	return &TaskAPI{srv: srv, clientOf: clientOf}
}

// Mount registers the task routes, with their full /fl/v1 paths, on r.
func (a *TaskAPI) Mount(r chi.Router) {
	r.Get(flproto.PathNextTask, a.next)
	r.Post(flproto.PathHeartbeat, httpx.Handle(a.heartbeat))
	r.Post(flproto.PathResult, httpx.Handle(a.result))
}

func (a *TaskAPI) client(r *http.Request) (string, error) {
	name, ok := a.clientOf(r)
	if !ok || name == "" {
		return "", httpx.Errorf(http.StatusUnauthorized, "Not authenticated: %s and a bearer secret are required", flproto.HeaderClient)
	}
	return name, nil
}

// parseWait reads ?wait=<seconds>: default flproto.DefaultWait, capped at
// flproto.MaxWait.
func parseWait(raw string) (time.Duration, error) {
	if raw == "" {
		return flproto.DefaultWait, nil
	}
	secs, err := strconv.ParseFloat(raw, 64)
	if err != nil || secs < 0 || secs != secs {
		return 0, httpx.Errorf(http.StatusBadRequest, "wait must be a number of seconds between 0 and %d", int(flproto.MaxWait/time.Second))
	}
	return min(time.Duration(secs*float64(time.Second)), flproto.MaxWait), nil
}

func (a *TaskAPI) next(w http.ResponseWriter, r *http.Request) {
	client, err := a.client(r)
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	wait, err := parseWait(r.URL.Query().Get("wait"))
	if err != nil {
		httpx.WriteError(w, r, err)
		return
	}
	task, ok, err := a.srv.NextTask(r.Context(), client, wait)
	switch {
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return // the client went away
	case err != nil:
		httpx.WriteError(w, r, httpError(err))
	case !ok:
		w.WriteHeader(http.StatusNoContent)
	default:
		httpx.WriteJSON(w, http.StatusOK, task)
	}
}

func (a *TaskAPI) heartbeat(r *http.Request) (flproto.Heartbeat, error) {
	client, err := a.client(r)
	if err != nil {
		return flproto.Heartbeat{}, err
	}
	hb, err := a.srv.Heartbeat(client, chi.URLParam(r, "id"))
	return hb, httpError(err)
}

// Accepted is the answer to an accepted result.
type Accepted struct {
	Accepted bool `json:"accepted"`
}

func (a *TaskAPI) result(r *http.Request) (Accepted, error) {
	client, err := a.client(r)
	if err != nil {
		return Accepted{}, err
	}
	var res flproto.Result
	if err := decodeStrict(r, &res); err != nil {
		return Accepted{}, err
	}
	if err := a.srv.Result(client, chi.URLParam(r, "id"), res); err != nil {
		return Accepted{}, httpError(err)
	}
	return Accepted{Accepted: true}, nil
}

// decodeStrict reads one JSON object; a malformed body is 400 as the
// protocol says, an oversized one 413.
func decodeStrict(r *http.Request, v any) error {
	body := http.MaxBytesReader(nil, r.Body, MaxResultBytes)
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var maxErr *http.MaxBytesError
		if errors.As(err, &maxErr) {
			return httpx.Errorf(http.StatusRequestEntityTooLarge, "body over %d bytes", MaxResultBytes)
		}
		return httpx.Errorf(http.StatusBadRequest, "invalid JSON body: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return httpx.Errorf(http.StatusBadRequest, "invalid JSON body: unexpected data after the object")
	}
	return nil
}

// httpError maps the server's domain errors to the protocol's status codes.
func httpError(err error) error {
	var ve *ValidationError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ve):
		return httpx.Errorf(http.StatusBadRequest, "%s", strings.Join(ve.Problems, "; "))
	case errors.Is(err, ErrTaskNotFound):
		return httpx.Errorf(http.StatusNotFound, "task not found")
	case errors.Is(err, ErrRoundClosed):
		return httpx.Errorf(http.StatusConflict, "the round already closed; the result is discarded")
	case errors.Is(err, ErrResultConflict):
		return httpx.Errorf(http.StatusConflict, "a different result was already accepted for this task")
	case errors.Is(err, ErrUnknownClient):
		return httpx.Errorf(http.StatusUnauthorized, "unknown client")
	case errors.Is(err, ErrClosed):
		return httpx.Errorf(http.StatusServiceUnavailable, "the FL server is shutting down")
	}
	return err
}
