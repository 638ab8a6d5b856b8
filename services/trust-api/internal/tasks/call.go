package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/flip-trust/node/shared/disclosure"
	"github.com/flip-trust/node/shared/mesh"
)

// Authorizer adds trust-internal authentication to an outbound request for
// the named audience (the called service). It is safe for concurrent use.
type Authorizer interface {
	Apply(req *http.Request, audience string) error
}

// Audiences of the trust's internal services.
const (
	AudienceDataAccess = "data-access-api"
	AudienceImaging    = "imaging-api"
)

// maxResponseBytes bounds what is read from an internal service's reply.
const maxResponseBytes = 32 << 20

// CallError is a failed internal call in FLIP's shape: its text is
// "<status>: <detail>", which the hub splits on the first colon.
type CallError struct {
	Status int
	Detail string
}

func (e *CallError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Detail) }

// HTTPStatus implements disclosure.StatusCoder.
func (e *CallError) HTTPStatus() int { return e.Status }

// request describes one internal call.
type request struct {
	method   string
	url      string
	audience string
	body     []byte
	header   map[string]string
}

// call performs req and returns the JSON reply (JSON null for an empty one).
// Every failure is a *CallError: status >= 400 gives the status and the body's
// first 1000 characters; a transport failure, a 2xx that is not JSON, or a
// missing authentication gives 502. The upstream body never becomes the
// detail: it is reduced to its status's disclosure category (no identifiers,
// SQL, addresses or upstream text leave in a task result), and a transport
// failure to its category too, so error texts never contain the request URL
// (whose query may carry an encoded cohort query) or internal addresses.
func (e *Executor) call(ctx context.Context, r request) (json.RawMessage, error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(ctx, r.method, r.url, body)
	if err != nil {
		return nil, &CallError{Status: 502, Detail: "Failed to connect to remote service: invalid request URL"}
	}
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Accept", "application/json")
	for k, v := range r.header {
		req.Header.Set(k, v)
	}
	if err := e.auth.Apply(req, r.audience); err != nil {
		return nil, &CallError{Status: 502, Detail: "Failed to authenticate to remote service"}
	}
	resp, err := e.client.Do(req)
	if err != nil {
		return nil, &CallError{Status: 502, Detail: "Failed to connect to remote service: " + transportText(err)}
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseBytes+1))
	if err != nil {
		return nil, &CallError{Status: 502, Detail: "Failed to connect to remote service: " + transportText(err)}
	}
	if resp.StatusCode >= 400 {
		return nil, &CallError{Status: resp.StatusCode, Detail: disclosure.StatusCategory(resp.StatusCode)}
	}
	if len(raw) > maxResponseBytes {
		return nil, &CallError{Status: 502, Detail: "External API response too large"}
	}
	if len(bytes.TrimSpace(raw)) == 0 {
		return json.RawMessage("null"), nil
	}
	if !json.Valid(raw) {
		return nil, &CallError{Status: 502, Detail: "External API returned non-JSON response"}
	}
	return json.RawMessage(raw), nil
}

// transportText describes a transport error by its category only: url.Error
// quotes the full URL (query included) and dial errors name internal
// addresses.
func transportText(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) && ue.Timeout() {
		return "request timed out"
	}
	return disclosure.ErrorCategory(err)
}

// MeshAuthorizer authenticates internal calls with a mesh.Signer in the
// configured mode (JWT bearer, or FLIP's raw key header).
type MeshAuthorizer struct {
	Signer    *mesh.Signer
	Mode      mesh.AuthMode
	KeyHeader string
}

var _ Authorizer = MeshAuthorizer{}

// Apply implements Authorizer.
func (m MeshAuthorizer) Apply(req *http.Request, audience string) error {
	return m.Signer.Apply(req, audience, m.Mode, m.KeyHeader)
}
