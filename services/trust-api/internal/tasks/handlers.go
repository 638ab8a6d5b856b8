package tasks

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/url"
	"regexp"
	"strings"

	"github.com/flip-trust/node/shared/hubapi"
)

var (
	// pathSegment admits the project ids imaging-api issues (UUIDs, XNAT ids)
	// and nothing that could change the path: no dots, slashes or escapes.
	pathSegment = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$`)
	// base64URL is the alphabet of encoded_query (padding tolerated).
	base64URL = regexp.MustCompile(`^[A-Za-z0-9_-]+={0,2}$`)
)

// validation builds the failure for a payload that does not pass validation;
// no request is made. The text names fields, never their values.
func validation(model string, problems ...string) Outcome {
	noun := "error"
	if len(problems) > 1 {
		noun = "errors"
	}
	return failure(fmt.Sprintf("%d validation %s for %s: %s", len(problems), noun, model, strings.Join(problems, "; ")))
}

// str reads a string field; ok is false when it is absent, null or not a string.
func str(p map[string]json.RawMessage, key string) (string, bool) {
	raw, present := p[key]
	if !present {
		return "", false
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", false
	}
	return s, true
}

func requireString(p map[string]json.RawMessage, key string, problems *[]string) string {
	s, ok := str(p, key)
	if !ok {
		*problems = append(*problems, key+": field required (string)")
	}
	return s
}

// resultText serialises an upstream JSON reply as the task's result string.
func resultText(raw json.RawMessage) (*string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		return nil, err
	}
	s := buf.String()
	return &s, nil
}

// --- cohort_query ------------------------------------------------------

func (e *Executor) cohortQuery(ctx context.Context, p map[string]json.RawMessage, raw []byte) Outcome {
	queryID, _ := str(p, "query_id")
	trustID, _ := str(p, "trust_id")
	var problems []string
	requireString(p, "query", &problems)
	if len(problems) > 0 {
		return e.cohortFailure(queryID, trustID, validation("CohortQuery", problems...).Err)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CohortQueryTimeout)
	defer cancel()
	reply, err := e.call(ctx, request{
		method: http.MethodPost, url: e.cfg.DataAccessURL + "/cohort",
		audience: AudienceDataAccess, body: raw,
	})
	if err != nil {
		return e.cohortFailure(queryID, trustID, err.Error())
	}
	stats, err := normaliseStats(reply, queryID, trustID)
	if err != nil {
		return e.cohortFailure(queryID, trustID, "502: External API returned an invalid cohort statistics response")
	}
	return Outcome{Success: true, CohortResults: stats}
}

// cohortFailure reports a failed cohort query and queues FLIP's error
// envelope for /cohort/results, unless the payload lacked the ids it needs.
func (e *Executor) cohortFailure(queryID, trustID, msg string) Outcome {
	out := failure(msg)
	if queryID == "" || trustID == "" {
		return out
	}
	body, err := json.Marshal(hubapi.CohortResults{
		QueryID:     queryID,
		TrustID:     trustID,
		Created:     e.cfg.Now().UTC().Format("2006-01-02"),
		RecordCount: 0,
		Data:        []hubapi.CohortStat{},
		Error:       &msg,
	})
	if err == nil {
		out.CohortResults = body
	}
	return out
}

// CohortErrorEnvelope is the /cohort/results body reporting msg for a query;
// delivery uses it when the hub refuses a statistics body for good.
func CohortErrorEnvelope(queryID, trustID, created, msg string) json.RawMessage {
	body, _ := json.Marshal(hubapi.CohortResults{
		QueryID: queryID, TrustID: trustID, Created: created,
		Data: []hubapi.CohortStat{}, Error: &msg,
	})
	return body
}

// normaliseStats checks a data-access-api statistics reply and turns every
// data[].results[].value into a string, as the hub's schema requires.
// Missing query_id/trust_id are filled from the payload; other fields pass
// through untouched.
func normaliseStats(reply json.RawMessage, queryID, trustID string) (json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(reply))
	dec.UseNumber()
	var body map[string]any
	if err := dec.Decode(&body); err != nil || body == nil {
		return nil, errors.New("statistics reply is not a JSON object")
	}
	if _, ok := body["query_id"]; !ok && queryID != "" {
		body["query_id"] = queryID
	}
	if _, ok := body["trust_id"]; !ok && trustID != "" {
		body["trust_id"] = trustID
	}
	if data, ok := body["data"].([]any); ok {
		for _, stat := range data {
			m, ok := stat.(map[string]any)
			if !ok {
				continue
			}
			results, ok := m["results"].([]any)
			if !ok {
				continue
			}
			for _, r := range results {
				if rm, ok := r.(map[string]any); ok {
					if v, present := rm["value"]; present {
						rm["value"] = stringify(v)
					}
				}
			}
		}
	}
	return json.Marshal(body)
}

// stringify renders a JSON value as Python's str() would for the same
// decoded value, so the hub sees FLIP's bucket labels.
func stringify(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "True"
		}
		return "False"
	case nil:
		return "None"
	default:
		b, _ := json.Marshal(x)
		return string(b)
	}
}

// --- persist_cohort ----------------------------------------------------

func (e *Executor) persistCohort(ctx context.Context, p map[string]json.RawMessage, _ []byte) Outcome {
	var problems []string
	encID := requireString(p, "encrypted_project_id", &problems)
	query := requireString(p, "query", &problems)
	if len(problems) > 0 {
		return validation("PersistCohort", problems...)
	}
	body, _ := json.Marshal(map[string]string{"encrypted_project_id": encID, "query": query})
	ctx, cancel := context.WithTimeout(ctx, e.cfg.CohortQueryTimeout)
	defer cancel()
	reply, err := e.call(ctx, request{
		method: http.MethodPost, url: e.cfg.DataAccessURL + "/cohort/snapshot",
		audience: AudienceDataAccess, body: body,
		header: map[string]string{e.cfg.CohortAdminHeader: e.cfg.CohortAdminProof},
	})
	return e.jsonResult(reply, err, false)
}

// --- imaging -----------------------------------------------------------

func (e *Executor) createImaging(ctx context.Context, p map[string]json.RawMessage, raw []byte) Outcome {
	var problems []string
	if id, _ := str(p, "project_id"); !hubapi.ValidTaskID(id) {
		problems = append(problems, "project_id: must be a UUID")
	}
	if id, _ := str(p, "trust_id"); !hubapi.ValidTaskID(id) {
		problems = append(problems, "trust_id: must be a UUID")
	}
	requireString(p, "project_name", &problems)
	if users, ok := p["users"]; ok {
		var list []map[string]json.RawMessage
		if err := json.Unmarshal(users, &list); err != nil {
			problems = append(problems, "users: must be a list of objects")
		}
	}
	if len(problems) > 0 {
		return validation("CentralHubProject", problems...)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	reply, err := e.call(ctx, request{
		method: http.MethodPost, url: e.cfg.ImagingURL + "/projects/create-project-from-central-hub-project",
		audience: AudienceImaging, body: raw,
	})
	return e.jsonResult(reply, err, false)
}

func (e *Executor) deleteImaging(ctx context.Context, p map[string]json.RawMessage, _ []byte) Outcome {
	id, _ := str(p, "imaging_project_id")
	if !hubapi.ValidTaskID(id) {
		return validation("DeleteImagingProject", "imaging_project_id: must be a UUID")
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	_, err := e.call(ctx, request{
		method: http.MethodDelete, url: e.cfg.ImagingURL + "/projects/" + url.PathEscape(id),
		audience: AudienceImaging,
	})
	return e.nullResult(err)
}

// imagingQuery validates the {imaging_project_id, encoded_query} payload and
// returns the URL suffix "<id>?encoded_query=<q>".
func imagingQuery(model string, p map[string]json.RawMessage) (string, *Outcome) {
	var problems []string
	id, _ := str(p, "imaging_project_id")
	if !pathSegment.MatchString(id) {
		problems = append(problems, "imaging_project_id: must be a project id (letters, digits, '-', '_')")
	}
	q, ok := str(p, "encoded_query")
	if !ok || !base64URL.MatchString(q) {
		problems = append(problems, "encoded_query: must be base64url text")
	}
	if len(problems) > 0 {
		out := validation(model, problems...)
		return "", &out
	}
	return url.PathEscape(id) + "?" + url.Values{"encoded_query": {q}}.Encode(), nil
}

func (e *Executor) getImagingStatus(ctx context.Context, p map[string]json.RawMessage, _ []byte) Outcome {
	suffix, bad := imagingQuery("ImagingStatusQuery", p)
	if bad != nil {
		return *bad
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	reply, err := e.call(ctx, request{
		method: http.MethodGet, url: e.cfg.ImagingURL + "/retrieval/import_status_count/" + suffix,
		audience: AudienceImaging,
	})
	return e.jsonResult(reply, err, true)
}

func (e *Executor) reimportStudies(ctx context.Context, p map[string]json.RawMessage, _ []byte) Outcome {
	suffix, bad := imagingQuery("ReimportStudiesQuery", p)
	if bad != nil {
		return *bad
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	_, err := e.call(ctx, request{
		method: http.MethodPut, url: e.cfg.ImagingURL + "/retrieval/reimport_imaging_project_studies/" + suffix,
		audience: AudienceImaging,
	})
	return e.nullResult(err)
}

func (e *Executor) updateUserProfile(ctx context.Context, p map[string]json.RawMessage, raw []byte) Outcome {
	var problems []string
	email, _ := str(p, "email")
	if !validEmail(email) {
		problems = append(problems, "email: must be an email address")
	}
	var enabled bool
	if v, ok := p["enabled"]; !ok || json.Unmarshal(v, &enabled) != nil {
		problems = append(problems, "enabled: field required (boolean)")
	}
	if len(problems) > 0 {
		return validation("UpdateUserProfile", problems...)
	}
	ctx, cancel := context.WithTimeout(ctx, e.cfg.RequestTimeout)
	defer cancel()
	_, err := e.call(ctx, request{
		method: http.MethodPut, url: e.cfg.ImagingURL + "/users",
		audience: AudienceImaging, body: raw,
	})
	return e.nullResult(err)
}

// validEmail accepts a bare address with a dotted domain.
func validEmail(s string) bool {
	if s == "" || len(s) > 254 || strings.ContainsAny(s, " \t\r\n<>") {
		return false
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" {
		return false
	}
	at := strings.LastIndexByte(s, '@')
	domain := s[at+1:]
	return at > 0 && strings.Contains(domain, ".") && !strings.HasPrefix(domain, ".") && !strings.HasSuffix(domain, ".")
}

// jsonResult turns an internal reply into an outcome whose result is the
// reply's JSON text; withStatus makes a failure carry its HTTP status.
func (e *Executor) jsonResult(reply json.RawMessage, err error, withStatus bool) Outcome {
	if err != nil {
		return callFailure(err, withStatus)
	}
	text, cerr := resultText(reply)
	if cerr != nil {
		return callFailure(&CallError{Status: 502, Detail: "External API returned non-JSON response"}, withStatus)
	}
	return Outcome{Success: true, Result: text}
}

func (e *Executor) nullResult(err error) Outcome {
	if err != nil {
		return callFailure(err, false)
	}
	return Outcome{Success: true}
}

func callFailure(err error, withStatus bool) Outcome {
	out := failure(err.Error())
	var ce *CallError
	if withStatus && errors.As(err, &ce) {
		code := ce.Status
		out.StatusCode = &code
	}
	return out
}
