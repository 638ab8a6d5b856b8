package disclosure

import (
	"context"
	"errors"
	"net/http"
)

// Error categories: the only words an error text that leaves the trust may
// carry about an upstream failure. None of them contains an identifier, SQL,
// an address or any text the upstream service produced.
const (
	CategoryInvalid       = "invalid request"
	CategoryUnauthorized  = "not authorised"
	CategoryRefused       = "refused by policy"
	CategoryNotFound      = "not found"
	CategoryConflict      = "conflict"
	CategoryTooLarge      = "too large"
	CategoryNotEnabled    = "not enabled"
	CategoryBusy          = "busy"
	CategoryTimeout       = "timed out"
	CategoryCanceled      = "cancelled"
	CategoryInternal      = "internal error"
	CategoryNotSupported  = "not supported"
	CategoryUnavailable   = "unavailable"
	CategoryUpstreamError = "upstream error"
)

// StatusCategory reduces an upstream HTTP status to its category.
func StatusCategory(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusMethodNotAllowed, http.StatusNotAcceptable,
		http.StatusUnsupportedMediaType, http.StatusUnprocessableEntity, http.StatusLengthRequired,
		http.StatusPreconditionFailed, http.StatusRequestURITooLong, http.StatusRequestHeaderFieldsTooLarge:
		return CategoryInvalid
	case http.StatusUnauthorized:
		return CategoryUnauthorized
	case http.StatusForbidden, http.StatusUnavailableForLegalReasons:
		return CategoryRefused
	case http.StatusNotFound, http.StatusGone:
		return CategoryNotFound
	case http.StatusConflict:
		return CategoryConflict
	case http.StatusRequestEntityTooLarge:
		return CategoryTooLarge
	case http.StatusTeapot:
		return CategoryNotEnabled
	case http.StatusTooManyRequests:
		return CategoryBusy
	case http.StatusRequestTimeout, http.StatusGatewayTimeout:
		return CategoryTimeout
	case http.StatusInternalServerError:
		return CategoryInternal
	case http.StatusNotImplemented:
		return CategoryNotSupported
	case http.StatusBadGateway, http.StatusServiceUnavailable:
		return CategoryUnavailable
	}
	if status >= 400 && status < 500 {
		return CategoryInvalid
	}
	return CategoryUpstreamError
}

// StatusCoder is an error that carries the HTTP status of a failed call.
type StatusCoder interface {
	HTTPStatus() int
}

// ErrorCategory reduces err to a category for a task result string: the
// status category of the first error in its chain that carries an HTTP
// status, the timeout or cancellation category of a context error, and
// CategoryInternal for anything else. The error's text is never used.
func ErrorCategory(err error) string {
	var sc StatusCoder
	switch {
	case err == nil:
		return ""
	case errors.As(err, &sc):
		return StatusCategory(sc.HTTPStatus())
	case errors.Is(err, context.DeadlineExceeded):
		return CategoryTimeout
	case errors.Is(err, context.Canceled):
		return CategoryCanceled
	}
	var te interface{ Timeout() bool }
	if errors.As(err, &te) && te.Timeout() {
		return CategoryTimeout
	}
	return CategoryInternal
}
