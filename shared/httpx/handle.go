package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"time"
)

// Error is an error with the HTTP status and the JSON "detail" a handler
// wants the caller to see.
type Error struct {
	Status int
	Detail any
}

// Error implements error.
func (e *Error) Error() string {
	return fmt.Sprintf("http %d: %v", e.Status, e.Detail)
}

// NewError returns an *Error with status and detail.
func NewError(status int, detail any) *Error { return &Error{Status: status, Detail: detail} }

// Errorf returns an *Error with status and a formatted detail text.
func Errorf(status int, format string, args ...any) *Error {
	return &Error{Status: status, Detail: fmt.Sprintf(format, args...)}
}

// ErrorBody is the JSON shape of every error reply: {"detail": ...}.
type ErrorBody struct {
	Detail any `json:"detail"`
}

// StatusCoder may be implemented by a Handle result to answer a status other
// than 200 (for example 201 or 202).
type StatusCoder interface {
	StatusCode() int
}

// Handle adapts fn to an http.HandlerFunc: the result is written as JSON with
// 200 (or its StatusCode()); an *Error anywhere in the error chain gives its
// status and {"detail": ...}; any other error is logged with the request's
// logger and answers 500 {"detail":"Internal server error"}.
func Handle[T any](fn func(r *http.Request) (T, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := fn(r)
		if err != nil {
			WriteError(w, r, err)
			return
		}
		status := http.StatusOK
		if sc, ok := any(v).(StatusCoder); ok {
			status = sc.StatusCode()
		}
		WriteJSON(w, status, v)
	}
}

// WriteError writes err as Handle does.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var he *Error
	if errors.As(err, &he) {
		if he.Status >= 500 {
			LoggerFrom(r.Context()).Error("request failed", "status", he.Status, "error", err.Error())
		}
		WriteJSON(w, he.Status, ErrorBody{Detail: he.Detail})
		return
	}
	LoggerFrom(r.Context()).Error("request failed", "status", http.StatusInternalServerError, "error", err.Error())
	WriteJSON(w, http.StatusInternalServerError, ErrorBody{Detail: "Internal server error"})
}

// WriteJSON writes v as JSON with status. An unencodable v is logged nowhere
// and answers 500 {"detail":"Internal server error"}.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		body = []byte(`{"detail":"Internal server error"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// DecodeJSON reads one JSON value from r's body into v. Unknown fields are
// ignored (FLIP's models do the same). A missing, malformed, mistyped or
// trailing-garbage body returns a 422 *Error naming the fault; a body over the
// server's limit returns a 413 *Error.
func DecodeJSON(r *http.Request, v any) error {
	return decode(r, v, false)
}

// DecodeJSONStrict is DecodeJSON that also rejects unknown fields.
func DecodeJSONStrict(r *http.Request, v any) error {
	return decode(r, v, true)
}

func decode(r *http.Request, v any, strict bool) error {
	if r.Body == nil || r.Body == http.NoBody {
		return Errorf(http.StatusUnprocessableEntity, "Request body is required (JSON)")
	}
	dec := json.NewDecoder(r.Body)
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		return decodeError(err)
	}
	if err := dec.Decode(&struct{}{}); !errors.Is(err, io.EOF) {
		if err != nil {
			return decodeError(err)
		}
		return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: unexpected data after the JSON value")
	}
	return nil
}

func decodeError(err error) *Error {
	var (
		maxErr    *http.MaxBytesError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
	)
	switch {
	case errors.As(err, &maxErr):
		return Errorf(http.StatusRequestEntityTooLarge, "%s", tooLarge(maxErr.Limit))
	case errors.Is(err, io.EOF):
		return Errorf(http.StatusUnprocessableEntity, "Request body is required (JSON)")
	case errors.Is(err, io.ErrUnexpectedEOF):
		return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: unexpected end of input")
	case errors.As(err, &syntaxErr):
		return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: syntax error at byte %d", syntaxErr.Offset)
	case errors.As(err, &typeErr):
		field := typeErr.Field
		if field == "" {
			return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: expected %s, got %s", typeErr.Type, typeErr.Value)
		}
		return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: field %q must be %s, got %s", field, typeErr.Type, typeErr.Value)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body: %s", strings.TrimPrefix(err.Error(), "json: "))
	}
	return Errorf(http.StatusUnprocessableEntity, "Invalid JSON body")
}

// NewClient returns an HTTP client whose every request is bounded by timeout
// (<= 0 means 30 s) and whose transport honours the proxy environment
// (HTTPS_PROXY, NO_PROXY) with its own dial, TLS and header timeouts.
func NewClient(timeout time.Duration) *http.Client {
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	step := min(timeout, 10*time.Second)
	t := &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: step, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   16,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   step,
		ExpectContinueTimeout: time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{Timeout: timeout, Transport: t}
}

// HealthFlag registers -health on fs: when set, main calls ProbeHealth and
// exits with its result instead of starting the service.
func HealthFlag(fs *flag.FlagSet) *bool {
	return fs.Bool("health", false, "probe the local /health endpoint and exit 0 when healthy, 1 otherwise")
}

// ProbeTimeout bounds ProbeHealth when ctx has no earlier deadline.
const ProbeTimeout = 5 * time.Second

// ProbeHealth GETs url and returns 0 when it answers 2xx, 1 otherwise (for
// container healthchecks, where it becomes the exit code).
func ProbeHealth(ctx context.Context, url string) int {
	ctx, cancel := context.WithTimeout(ctx, ProbeTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 1
	}
	resp, err := NewClient(ProbeTimeout).Do(req)
	if err != nil {
		return 1
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<16))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return 1
	}
	return 0
}

// LocalHealthURL is the /health URL a container healthcheck probes for a
// service listening on addr (":8000", "0.0.0.0:9000"...): always loopback,
// on addr's port, or on defaultPort when addr is empty or has none.
func LocalHealthURL(addr, defaultPort string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" {
		port = defaultPort
	}
	return "http://" + net.JoinHostPort("127.0.0.1", port) + "/health"
}
