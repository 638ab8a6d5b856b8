package hubserver

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/google/uuid"

	"github.com/flip-trust/node/shared/hubapi"
)

// fieldError is one entry of a 422 detail list, in the shape FastAPI gives
// pydantic validation errors: the error type, the location path, a message.
type fieldError struct {
	Type string `json:"type"`
	Loc  []any  `json:"loc"`
	Msg  string `json:"msg"`
}

type fieldErrors []fieldError

func (e *fieldErrors) add(typ, msg string, loc ...any) {
	*e = append(*e, fieldError{Type: typ, Loc: loc, Msg: msg})
}

func loc(base []any, more ...any) []any {
	out := make([]any, 0, len(base)+len(more))
	return append(append(out, base...), more...)
}

// decodeObject parses body as a JSON object, keeping member values raw.
// ok is false, with errs filled, when body is not a JSON object.
func decodeObject(body []byte, errs *fieldErrors) (map[string]json.RawMessage, bool) {
	dec := json.NewDecoder(bytes.NewReader(body))
	var v json.RawMessage
	if err := dec.Decode(&v); err != nil || dec.More() {
		errs.add("json_invalid", "JSON decode error", "body")
		return nil, false
	}
	var obj map[string]json.RawMessage
	if !isJSONObject(v) || json.Unmarshal(v, &obj) != nil {
		errs.add("model_attributes_type", "Input should be a valid dictionary or object to extract fields from", "body")
		return nil, false
	}
	return obj, true
}

func isJSONObject(raw json.RawMessage) bool {
	t := bytes.TrimSpace(raw)
	return len(t) > 0 && t[0] == '{'
}

func isNull(raw json.RawMessage) bool {
	return raw == nil || string(bytes.TrimSpace(raw)) == "null"
}

func asString(raw json.RawMessage) (string, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || t[0] != '"' {
		return "", false
	}
	var s string
	if json.Unmarshal(t, &s) != nil {
		return "", false
	}
	return s, true
}

func asBool(raw json.RawMessage) (bool, bool) {
	switch string(bytes.TrimSpace(raw)) {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	return false, false
}

// asInt accepts a JSON number with no fractional part.
func asInt(raw json.RawMessage) (int, bool) {
	t := bytes.TrimSpace(raw)
	if len(t) == 0 || !(t[0] == '-' || (t[0] >= '0' && t[0] <= '9')) {
		return 0, false
	}
	var f float64
	if json.Unmarshal(t, &f) != nil || f != math.Trunc(f) || math.Abs(f) > 1<<53 {
		return 0, false
	}
	return int(f), true
}

// parseResult validates a TaskResultInput body: success is a boolean, result
// a string of at most MaxResultLength characters or null.
func parseResult(body []byte) (hubapi.TaskResult, fieldErrors) {
	var errs fieldErrors
	var in hubapi.TaskResult
	obj, ok := decodeObject(body, &errs)
	if !ok {
		return in, errs
	}
	switch raw, present := obj["success"]; {
	case !present:
		errs.add("missing", "Field required", "body", "success")
	default:
		b, ok := asBool(raw)
		if !ok {
			errs.add("bool_type", "Input should be a valid boolean", "body", "success")
		}
		in.Success = b
	}
	if raw, present := obj["result"]; present && !isNull(raw) {
		s, ok := asString(raw)
		switch {
		case !ok:
			errs.add("string_type", "Input should be a valid string", "body", "result")
		case len(s) > hubapi.MaxResultLength && utf8.RuneCountInString(s) > hubapi.MaxResultLength:
			errs.add("string_too_long", fmt.Sprintf("String should have at most %d characters", hubapi.MaxResultLength), "body", "result")
		default:
			in.Result = &s
		}
	}
	return in, errs
}

// Bounds of a heartbeat health snapshot (the hub's TrustHeartbeatInput).
const (
	maxServices       = 16
	maxVersionLength  = 64
	maxResponseMillis = 1_000_000
)

var serviceKeyPattern = regexp.MustCompile(`^[a-z0-9-]{1,32}$`)

var healthStates = map[string]bool{
	hubapi.HealthHealthy: true, hubapi.HealthDegraded: true, hubapi.HealthDown: true, hubapi.HealthUnknown: true,
}

// parseHeartbeat validates an optional heartbeat body. It returns a nil map
// for a bodyless (empty or JSON null) heartbeat, and every problem at once.
func parseHeartbeat(body []byte) (map[string]hubapi.ServiceHealth, fieldErrors) {
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) == 0 || string(trimmed) == "null" {
		return nil, nil
	}
	var errs fieldErrors
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil || dec.More() {
		errs.add("json_invalid", "JSON decode error", "body")
		return nil, errs
	}
	var obj map[string]json.RawMessage
	if !isJSONObject(raw) || json.Unmarshal(raw, &obj) != nil {
		errs.add("dict_type", "Input should be a valid dictionary", "body")
		return nil, errs
	}

	if at, present := obj["collected_at"]; present && !isNull(at) && !validDatetime(at) {
		errs.add("datetime_parsing", "Input should be a valid datetime", "body", "collected_at")
	}

	rawServices, present := obj["services"]
	if !present {
		errs.add("missing", "Field required", "body", "services")
		return nil, errs
	}
	var services map[string]json.RawMessage
	if !isJSONObject(rawServices) || json.Unmarshal(rawServices, &services) != nil {
		errs.add("dict_type", "Input should be a valid dictionary", "body", "services")
		return nil, errs
	}
	switch n := len(services); {
	case n < 1:
		errs.add("too_short", "Dictionary should have at least 1 item after validation, not 0", "body", "services")
	case n > maxServices:
		errs.add("too_long", fmt.Sprintf("Dictionary should have at most %d items after validation, not %d", maxServices, n), "body", "services")
	}

	names := make([]string, 0, len(services))
	for name := range services {
		names = append(names, name)
	}
	sort.Strings(names)
	out := make(map[string]hubapi.ServiceHealth, len(services))
	for _, name := range names {
		base := []any{"body", "services", name}
		if !serviceKeyPattern.MatchString(name) {
			errs.add("string_pattern_mismatch", "String should match pattern '^[a-z0-9-]{1,32}$'", loc(base, "[key]")...)
		}
		if sh, ok := parseServiceHealth(services[name], base, &errs); ok {
			out[name] = sh
		}
	}
	if len(errs) > 0 {
		return nil, errs
	}
	return out, nil
}

func parseServiceHealth(raw json.RawMessage, base []any, errs *fieldErrors) (hubapi.ServiceHealth, bool) {
	var sh hubapi.ServiceHealth
	var obj map[string]json.RawMessage
	if !isJSONObject(raw) || json.Unmarshal(raw, &obj) != nil {
		errs.add("model_type", "Input should be a valid dictionary or instance of ServiceHealth", base...)
		return sh, false
	}
	before := len(*errs)
	status, present := obj["status"]
	switch s, isStr := asString(status); {
	case !present:
		errs.add("missing", "Field required", loc(base, "status")...)
	case !isStr || !healthStates[s]:
		errs.add("literal_error", "Input should be 'healthy', 'degraded', 'down' or 'unknown'", loc(base, "status")...)
	default:
		sh.Status = s
	}
	if v, present := obj["version"]; present && !isNull(v) {
		s, ok := asString(v)
		switch {
		case !ok:
			errs.add("string_type", "Input should be a valid string", loc(base, "version")...)
		case utf8.RuneCountInString(s) > maxVersionLength:
			errs.add("string_too_long", fmt.Sprintf("String should have at most %d characters", maxVersionLength), loc(base, "version")...)
		default:
			sh.Version = &s
		}
	}
	if v, present := obj["response_ms"]; present && !isNull(v) {
		n, ok := asInt(v)
		switch {
		case !ok:
			errs.add("int_type", "Input should be a valid integer", loc(base, "response_ms")...)
		case n < 0:
			errs.add("greater_than_equal", "Input should be greater than or equal to 0", loc(base, "response_ms")...)
		case n > maxResponseMillis:
			errs.add("less_than_equal", fmt.Sprintf("Input should be less than or equal to %d", maxResponseMillis), loc(base, "response_ms")...)
		default:
			sh.ResponseMS = &n
		}
	}
	return sh, len(*errs) == before
}

// validDatetime accepts an ISO 8601 date-time string (with or without a zone,
// "T" or space separated) or a Unix timestamp number.
func validDatetime(raw json.RawMessage) bool {
	if _, ok := asInt(raw); ok {
		return true
	}
	var f float64
	if t := bytes.TrimSpace(raw); len(t) > 0 && t[0] != '"' && json.Unmarshal(t, &f) == nil {
		return true
	}
	s, ok := asString(raw)
	if !ok {
		return false
	}
	s = strings.Replace(s, " ", "T", 1)
	for _, layout := range []string{time.RFC3339Nano, "2006-01-02T15:04:05.999999999", "2006-01-02T15:04"} {
		if _, err := time.Parse(layout, s); err == nil {
			return true
		}
	}
	return false
}

// parseCohortResults validates an OmopCohortResults body and returns it with
// query_id and trust_id in canonical form.
func parseCohortResults(body []byte) (hubapi.CohortResults, fieldErrors) {
	var errs fieldErrors
	var in hubapi.CohortResults
	obj, ok := decodeObject(body, &errs)
	if !ok {
		return in, errs
	}
	for _, f := range []struct {
		name string
		dst  *string
	}{{"query_id", &in.QueryID}, {"trust_id", &in.TrustID}} {
		raw, present := obj[f.name]
		if !present {
			errs.add("missing", "Field required", "body", f.name)
			continue
		}
		s, _ := asString(raw)
		u, err := uuid.Parse(s)
		if err != nil {
			errs.add("uuid_parsing", "Input should be a valid UUID", "body", f.name)
			continue
		}
		*f.dst = u.String()
	}
	if raw, present := obj["created"]; present {
		if s, ok := asString(raw); ok {
			in.Created = s
		} else {
			errs.add("string_type", "Input should be a valid string", "body", "created")
		}
	} else {
		errs.add("missing", "Field required", "body", "created")
	}
	if raw, present := obj["record_count"]; present {
		if n, ok := asInt(raw); ok {
			in.RecordCount = n
		} else {
			errs.add("int_type", "Input should be a valid integer", "body", "record_count")
		}
	} else {
		errs.add("missing", "Field required", "body", "record_count")
	}
	if raw, present := obj["suppressed"]; present && !isNull(raw) {
		if b, ok := asBool(raw); ok {
			in.Suppressed = b
		} else {
			errs.add("bool_type", "Input should be a valid boolean", "body", "suppressed")
		}
	}
	if raw, present := obj["error"]; present && !isNull(raw) {
		if s, ok := asString(raw); ok {
			in.Error = &s
		} else {
			errs.add("string_type", "Input should be a valid string", "body", "error")
		}
	}
	raw, present := obj["data"]
	if !present {
		errs.add("missing", "Field required", "body", "data")
		return in, errs
	}
	var stats []json.RawMessage
	if t := bytes.TrimSpace(raw); len(t) == 0 || t[0] != '[' || json.Unmarshal(t, &stats) != nil {
		errs.add("list_type", "Input should be a valid list", "body", "data")
		return in, errs
	}
	in.Data = make([]hubapi.CohortStat, 0, len(stats))
	for i, rawStat := range stats {
		base := []any{"body", "data", i}
		var stat map[string]json.RawMessage
		if !isJSONObject(rawStat) || json.Unmarshal(rawStat, &stat) != nil {
			errs.add("model_type", "Input should be a valid dictionary", base...)
			continue
		}
		var cs hubapi.CohortStat
		if s, ok := asString(stat["name"]); ok {
			cs.Name = s
		} else {
			errs.add("string_type", "Input should be a valid string", loc(base, "name")...)
		}
		var values []json.RawMessage
		if t := bytes.TrimSpace(stat["results"]); len(t) == 0 || t[0] != '[' || json.Unmarshal(t, &values) != nil {
			errs.add("list_type", "Input should be a valid list", loc(base, "results")...)
			continue
		}
		cs.Results = make([]hubapi.CohortValue, 0, len(values))
		for j, rawValue := range values {
			vb := loc(base, "results", j)
			var v map[string]json.RawMessage
			if !isJSONObject(rawValue) || json.Unmarshal(rawValue, &v) != nil {
				errs.add("model_type", "Input should be a valid dictionary", vb...)
				continue
			}
			var cv hubapi.CohortValue
			if s, ok := asString(v["value"]); ok {
				cv.Value = s
			} else {
				errs.add("string_type", "Input should be a valid string", loc(vb, "value")...)
			}
			if n, ok := asInt(v["count"]); ok {
				cv.Count = n
			} else {
				errs.add("int_type", "Input should be a valid integer", loc(vb, "count")...)
			}
			cs.Results = append(cs.Results, cv)
		}
		in.Data = append(in.Data, cs)
	}
	return in, errs
}
