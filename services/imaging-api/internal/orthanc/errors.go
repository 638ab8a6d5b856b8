package orthanc

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Error kinds. Every error the client returns for a failed request is an
// *Error whose Kind is one of these (or nil for an unexpected answer such as
// a rejected request body); test with errors.Is.
var (
	// ErrPACSUnreachable: the staging Orthanc could not open a DICOM
	// association with the PACS (connection refused, timeout, association
	// rejected).
	ErrPACSUnreachable = errors.New("PACS unreachable")
	// ErrPACSFailed: the PACS answered a C-FIND or C-MOVE with a failure
	// status (for a C-MOVE: unknown study or unknown destination AE).
	ErrPACSFailed = errors.New("PACS reported a failure")
	// ErrUnauthorized: the staging Orthanc refused the credentials.
	ErrUnauthorized = errors.New("authentication failed")
	// ErrNotFound: no such study, query or modality on the staging Orthanc.
	ErrNotFound = errors.New("not found")
	// ErrUnavailable: the staging Orthanc's REST API did not answer, or
	// answered with a server error.
	ErrUnavailable = errors.New("staging Orthanc unavailable")
	// ErrInvalid: an argument was rejected before any request was sent.
	ErrInvalid = errors.New("invalid argument")
)

// orthancStatusNetwork is Orthanc's "Error in the network protocol" code,
// which it reports for failed DICOM associations and DIMSE failures.
const orthancStatusNetwork = 9

// Error describes a failed call. Its message never holds patient
// identifiers, accession numbers or UIDs: only the operation, the HTTP
// status and Orthanc's own error text.
type Error struct {
	// Op names the operation, e.g. "echo", "find studies", "move study".
	Op string
	// Kind is one of the Err* kinds, or nil.
	Kind error
	// HTTPStatus is the REST answer's status; 0 when none arrived.
	HTTPStatus int
	// OrthancStatus, Message and Details are Orthanc's error description
	// (HttpDescribeErrors), when it sent one.
	OrthancStatus    int
	Message, Details string
	// Err is the underlying transport or decoding error, if any.
	Err error
}

// Error formats the failure.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("orthanc: ")
	b.WriteString(e.Op)
	if e.Kind != nil {
		b.WriteString(": ")
		b.WriteString(e.Kind.Error())
	}
	if e.HTTPStatus != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.HTTPStatus)
	}
	if e.Details != "" {
		b.WriteString(": ")
		b.WriteString(e.Details)
	} else if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.Err != nil {
		b.WriteString(": ")
		b.WriteString(e.Err.Error())
	}
	return b.String()
}

// Unwrap exposes the kind and the underlying error to errors.Is/As.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Kind != nil {
		errs = append(errs, e.Kind)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// orthancError is the JSON body Orthanc sends with an error status.
type orthancError struct {
	OrthancStatus int
	Message       string
	Details       string
}

// statusError classifies an error answer. dimse marks calls that make the
// staging Orthanc talk DICOM to a remote modality.
func statusError(op string, status int, body []byte, dimse bool) *Error {
	e := &Error{Op: op, HTTPStatus: status}
	var oe orthancError
	if json.Unmarshal(body, &oe) == nil {
		e.OrthancStatus, e.Message, e.Details = oe.OrthancStatus, oe.Message, oe.Details
	}
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		e.Kind = ErrUnauthorized
	case status == http.StatusNotFound:
		e.Kind = ErrNotFound
	case dimse && e.OrthancStatus == orthancStatusNetwork && status == http.StatusUnprocessableEntity:
		e.Kind = ErrPACSFailed
	case dimse && e.OrthancStatus == orthancStatusNetwork:
		e.Kind = ErrPACSUnreachable
	case status >= 500:
		e.Kind = ErrUnavailable
	}
	return e
}
