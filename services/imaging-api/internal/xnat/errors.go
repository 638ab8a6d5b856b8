package xnat

import (
	"errors"
	"fmt"
	"net/http"
)

// Sentinel errors. Compare with errors.Is; an *Error matches the sentinel of
// its status (404 ErrNotFound, 401 ErrUnauthorized, 403 ErrForbidden, 409
// ErrAlreadyExists, no response or 502/503/504 ErrUnavailable).
var (
	ErrNotFound      = errors.New("not found")
	ErrUnauthorized  = errors.New("unauthorized")
	ErrForbidden     = errors.New("forbidden")
	ErrAlreadyExists = errors.New("already exists")
	ErrUnavailable   = errors.New("xnat unavailable")
	// ErrBadResponse: XNAT answered success with a body of the wrong shape.
	ErrBadResponse = errors.New("unexpected xnat response")
	// ErrInvalidSegment: an identifier cannot be a URL path segment.
	ErrInvalidSegment = errors.New("invalid path segment")
	// ErrPACSUnreachable and ErrPACSDisabled: the PACS status ping said so.
	ErrPACSUnreachable = errors.New("pacs not reachable")
	ErrPACSDisabled    = errors.New("pacs disabled")
	// ErrNoStudies: DQR queued none of the requested studies (none is on
	// the PACS). It wraps ErrNotFound.
	ErrNoStudies = fmt.Errorf("no studies found on PACS: %w", ErrNotFound)
	// ErrStudiesMissing: DQR queued fewer studies than requested.
	ErrStudiesMissing = errors.New("some studies not found on PACS")
	// ErrCommandNotFound: no Container Service command uses the image.
	ErrCommandNotFound = errors.New("container service command not found")
	// ErrNoDatabase: the operation needs XNAT's database, which the client
	// was built without.
	ErrNoDatabase = errors.New("xnat database not configured")
)

// Error is a failed XNAT call: the operation, XNAT's status code (0 when no
// response came) and the start of XNAT's reply. The reply may quote
// identifiers, so Error() leaves it out; log Op and Status only.
type Error struct {
	// Op names the operation ("list projects", "login", ...).
	Op string
	// Status is XNAT's HTTP status, 0 when the request got no response.
	Status int
	// Body is the start of XNAT's reply (at most 2 KiB).
	Body string
	// Err is the transport error when Status is 0.
	Err error
}

// Error implements error.
func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("xnat %s: %v", e.Op, e.Err)
	}
	return fmt.Sprintf("xnat %s: status %d %s", e.Op, e.Status, http.StatusText(e.Status))
}

// Unwrap returns the transport error.
func (e *Error) Unwrap() error { return e.Err }

// Is matches the sentinel of e's status.
func (e *Error) Is(target error) bool {
	switch target {
	case ErrNotFound:
		return e.Status == http.StatusNotFound
	case ErrUnauthorized:
		return e.Status == http.StatusUnauthorized
	case ErrForbidden:
		return e.Status == http.StatusForbidden
	case ErrAlreadyExists:
		return e.Status == http.StatusConflict
	case ErrUnavailable:
		return e.Status == 0 || e.Status == http.StatusBadGateway || e.Status == http.StatusServiceUnavailable ||
			e.Status == http.StatusGatewayTimeout
	}
	return false
}

// StatusCode returns the XNAT status carried by err, or 0.
func StatusCode(err error) int {
	var e *Error
	if errors.As(err, &e) {
		return e.Status
	}
	return 0
}
