// Package policy loads and evaluates the trust's governance policy: the TOML
// document named by ACCESS_POLICY_FILE that decides, per cohort action and
// project, whether a request may proceed and which disclosure threshold
// applies to it.
//
// The loader is strict: every problem in the document is an error that names
// the line it was found on, and a service must refuse to start with an invalid
// policy. Rules can only raise the trust's floor (COHORT_QUERY_THRESHOLD),
// never lower it. Decisions are pure functions of the policy, the action and
// the project: deny rules override permit rules, and the order of rules in the
// document never changes a decision.
package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/google/uuid"
)

// Action is a cohort operation governed by the policy.
type Action string

// The governed actions.
const (
	// Statistics is the aggregate statistics route (and freezing a cohort
	// snapshot, which reports aggregates).
	Statistics Action = "cohort.statistics"
	// Dataframe is the row-level training data route.
	Dataframe Action = "cohort.dataframe"
	// AccessionIDs is the imaging accession id route.
	AccessionIDs Action = "cohort.accession_ids"
)

// Actions lists every governed action.
var Actions = []Action{Statistics, Dataframe, AccessionIDs}

// Valid reports whether a is one of the governed actions.
func (a Action) Valid() bool { return slices.Contains(Actions, a) }

// Rule effects.
const (
	EffectPermit = "permit"
	EffectDeny   = "deny"
)

// SourceEnv is the environment variable that names the policy file.
const SourceEnv = "ACCESS_POLICY_FILE"

// Rule is one [[access.rule]] table.
type Rule struct {
	// ID is the rule's unique, non-empty name, reported in decisions as
	// "policy:<ID>".
	ID string
	// Action is the governed action the rule applies to.
	Action Action
	// Effect is EffectPermit or EffectDeny.
	Effect string
	// Projects holds canonical lower-case project UUIDs; nil means the rule
	// applies to every project.
	Projects []string
	// MinCohortSize is the permit rule's threshold; 0 means unset.
	MinCohortSize int
	// Line is the line of the file where the rule starts.
	Line int
}

// appliesTo reports whether the rule covers the canonical project id
// (empty: no usable project id).
func (r *Rule) appliesTo(project string) bool {
	if r.Projects == nil {
		return true
	}
	return project != "" && slices.Contains(r.Projects, project)
}

// Policy is a validated governance document.
type Policy struct {
	// MinCohortSize is [disclosure] min_cohort_size; 0 means unset.
	MinCohortSize int
	// Rules are the access rules in document order.
	Rules []Rule
	// Digest is the SHA-256 (lower-case hex) of the file's raw bytes, as
	// printed by sha256sum.
	Digest string
	// Source describes where the policy came from, normally
	// "ACCESS_POLICY_FILE=<path>".
	Source string
	// FLPrivacy is the [fl_privacy] table, accepted but not interpreted
	// here; nil when absent.
	FLPrivacy map[string]any
}

// Problem is one defect found in a policy document.
type Problem struct {
	// Line is the 1-based line of the file the problem is on; 0 when the
	// problem concerns the whole file.
	Line int
	// Message describes the problem.
	Message string
}

// Error reports every problem that made a policy document invalid.
type Error struct {
	// File names the document (its path).
	File string
	// Problems are in document order; there is at least one.
	Problems []Problem
}

// Error formats as `governance policy <file>: line <n>: <message>`, with
// several problems separated by "; ".
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("governance policy ")
	b.WriteString(e.File)
	for i, p := range e.Problems {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		if p.Line > 0 {
			fmt.Fprintf(&b, "line %d: ", p.Line)
		}
		b.WriteString(p.Message)
	}
	return b.String()
}

// Load reads and validates the policy file at path. An empty or whitespace
// path means no policy and returns (nil, nil). floor is the trust's
// COHORT_QUERY_THRESHOLD. Every problem, including an unreadable file, is
// returned as an *Error.
func Load(path string, floor int) (*Policy, error) {
	if strings.TrimSpace(path) == "" {
		return nil, nil
	}
	data, err := readFile(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []Problem{{Message: fmt.Sprintf("cannot read the file: %v", err)}}}
	}
	return Parse(data, SourceEnv+"="+path, floor)
}

// maxFileSize bounds the policy file; a governance document is a few
// kilobytes.
const maxFileSize = 1 << 20

func readFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxFileSize {
		return nil, fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	return data, nil
}

// Parse validates a policy document. source is recorded as Policy.Source;
// errors name the file as source without any "ACCESS_POLICY_FILE=" prefix.
// floor is the trust's COHORT_QUERY_THRESHOLD. Every problem is returned as an
// *Error.
func Parse(data []byte, source string, floor int) (*Policy, error) {
	file := strings.TrimPrefix(source, SourceEnv+"=")
	sum := sha256.Sum256(data)
	p := &Policy{Digest: hex.EncodeToString(sum[:]), Source: source}

	if !utf8.Valid(data) {
		return nil, &Error{File: file, Problems: []Problem{{Line: invalidUTF8Line(data), Message: "the file is not valid UTF-8"}}}
	}
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: file, Problems: []Problem{{Line: pe.Position.Line, Message: "invalid TOML: " + pe.Message}}}
		}
		return nil, &Error{File: file, Problems: []Problem{{Message: "invalid TOML: " + err.Error()}}}
	}

	v := &validator{ix: indexLines(data), floor: floor}
	v.document(doc, p)
	if len(v.problems) == 0 && p.MinCohortSize == 0 && len(p.Rules) == 0 && len(p.FLPrivacy) == 0 && !v.site {
		v.problems = append(v.problems, Problem{Message: "the document configures nothing: no [disclosure] min_cohort_size, no [[access.rule]] and no [fl_privacy]"})
	}
	if len(v.problems) > 0 {
		slices.SortStableFunc(v.problems, func(a, b Problem) int { return a.Line - b.Line })
		return nil, &Error{File: file, Problems: v.problems}
	}
	return p, nil
}

// invalidUTF8Line returns the line of the first byte that is not UTF-8.
func invalidUTF8Line(data []byte) int {
	line := 1
	for i := 0; i < len(data); {
		r, n := utf8.DecodeRune(data[i:])
		if r == utf8.RuneError && n <= 1 {
			return line
		}
		if r == '\n' {
			line++
		}
		i += n
	}
	return line
}

// canonicalUUID returns the canonical lower-case form of a UUID written in any
// of the usual notations (upper case, braces, urn:uuid:, no hyphens).
func canonicalUUID(s string) (string, bool) {
	u, err := uuid.Parse(s)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

const (
	allowedTop     = "disclosure, access, fl_privacy; review, dp, budget, images belong to the site policy"
	allowedRuleKey = "id, action, effect, projects, min_cohort_size"
)

// validator collects the problems of one document.
type validator struct {
	ix       lineIndex
	floor    int
	problems []Problem
	// site is set when the document carries site policy settings.
	site bool
}

// siteDisclosureKeys, like the review, dp, budget and images tables, belong
// to the site policy (SITE_POLICY_FILE, shared/sitepolicy), which validates
// them: one file can serve as both documents.
var siteDisclosureKeys = []string{"floor", "rounding"}

func (v *validator) add(line int, format string, args ...any) {
	v.problems = append(v.problems, Problem{Line: line, Message: fmt.Sprintf(format, args...)})
}

// keysInOrder returns the keys of m in document order (by line, then name).
func (v *validator) keysInOrder(m map[string]any, path ...string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := v.ix.line(append(slices.Clip(path), a)...), v.ix.line(append(slices.Clip(path), b)...)
		if la != lb {
			return la - lb
		}
		return strings.Compare(a, b)
	})
	return keys
}

func (v *validator) document(doc map[string]any, p *Policy) {
	for _, k := range v.keysInOrder(doc) {
		switch k {
		case "disclosure", "access", "fl_privacy":
		case "review", "dp", "budget", "images":
			v.site = true
		default:
			v.add(v.ix.line(k), "unknown top-level key %q (allowed: %s)", k, allowedTop)
		}
	}
	if raw, ok := doc["disclosure"]; ok {
		v.disclosure(raw, p)
	}
	if raw, ok := doc["access"]; ok {
		v.access(raw, p)
	}
	if raw, ok := doc["fl_privacy"]; ok {
		if t, ok := raw.(map[string]any); ok {
			p.FLPrivacy = t
		} else {
			v.add(v.ix.line("fl_privacy"), "fl_privacy must be a table ([fl_privacy])")
		}
	}
}

func (v *validator) disclosure(raw any, p *Policy) {
	t, ok := raw.(map[string]any)
	if !ok {
		v.add(v.ix.line("disclosure"), "disclosure must be a table ([disclosure])")
		return
	}
	for _, k := range v.keysInOrder(t, "disclosure") {
		if slices.Contains(siteDisclosureKeys, k) {
			v.site = true
			continue
		}
		if k != "min_cohort_size" {
			v.add(v.ix.line("disclosure", k), "[disclosure]: unknown key %q (allowed: min_cohort_size)", k)
		}
	}
	if raw, ok := t["min_cohort_size"]; ok {
		line := v.ix.line("disclosure", "min_cohort_size")
		if n, ok := v.threshold(line, "[disclosure]", raw); ok {
			p.MinCohortSize = n
		}
	}
}

// threshold validates a min_cohort_size value against the floor.
func (v *validator) threshold(line int, label string, raw any) (int, bool) {
	i, ok := raw.(int64)
	if !ok {
		v.add(line, "%s: min_cohort_size must be an integer, not %s", label, tomlTypeName(raw))
		return 0, false
	}
	if i < 1 {
		v.add(line, "%s: min_cohort_size must be a positive integer, got %d", label, i)
		return 0, false
	}
	if i > math.MaxInt32 {
		v.add(line, "%s: min_cohort_size=%d is too large", label, i)
		return 0, false
	}
	if int(i) < v.floor {
		v.add(line, "%s: min_cohort_size=%d is below the trust's floor COHORT_QUERY_THRESHOLD=%d (a policy may only raise it)", label, i, v.floor)
		return 0, false
	}
	return int(i), true
}

func (v *validator) access(raw any, p *Policy) {
	t, ok := raw.(map[string]any)
	if !ok {
		v.add(v.ix.line("access"), "access must be a table ([access])")
		return
	}
	for _, k := range v.keysInOrder(t, "access") {
		if k != "rule" {
			v.add(v.ix.line("access", k), "[access]: unknown key %q (allowed: rule)", k)
		}
	}
	raw, ok = t["rule"]
	if !ok {
		return
	}
	tables, ok := ruleTables(raw)
	if !ok {
		v.add(v.ix.line("access", "rule"), "access.rule must be an array of tables ([[access.rule]])")
		return
	}
	seen := map[string]int{} // id → line
	for i, rt := range tables {
		if r, ok := v.rule(i, rt, p.MinCohortSize, seen); ok {
			p.Rules = append(p.Rules, r)
		}
	}
}

// ruleTables accepts both [[access.rule]] tables and an inline array whose
// every element is a table.
func ruleTables(raw any) ([]map[string]any, bool) {
	switch r := raw.(type) {
	case []map[string]any:
		return r, true
	case []any:
		out := make([]map[string]any, 0, len(r))
		for _, e := range r {
			t, ok := e.(map[string]any)
			if !ok {
				return nil, false
			}
			out = append(out, t)
		}
		return out, true
	}
	return nil, false
}

// rule validates the i-th rule table. disclosure is the validated [disclosure]
// threshold (0 when unset).
func (v *validator) rule(i int, t map[string]any, disclosure int, seen map[string]int) (Rule, bool) {
	at := func(key ...string) int { return v.ix.line(append([]string{"access", "rule", elem(i)}, key...)...) }
	r := Rule{Line: at()}
	before := len(v.problems)
	label := fmt.Sprintf("rule #%d", i+1)

	switch raw, ok := t["id"]; {
	case !ok:
		v.add(r.Line, "%s: missing \"id\"", label)
	default:
		id, isStr := raw.(string)
		switch {
		case !isStr || strings.TrimSpace(id) == "":
			v.add(at("id"), "%s: \"id\" must be a non-empty string", label)
		case strings.ContainsFunc(id, unicode.IsControl):
			v.add(at("id"), "%s: \"id\" must not contain control characters", label)
		default:
			label = fmt.Sprintf("rule %q", id)
			if first, dup := seen[id]; dup {
				v.add(at("id"), "%s: duplicate id (first used at line %d)", label, first)
			} else {
				seen[id] = at("id")
			}
			r.ID = id
		}
	}

	for _, k := range v.keysInOrder(t, "access", "rule", elem(i)) {
		switch k {
		case "id", "action", "effect", "projects", "min_cohort_size":
		default:
			v.add(at(k), "%s: unknown field %q (allowed: %s)", label, k, allowedRuleKey)
		}
	}

	switch raw, ok := t["action"]; {
	case !ok:
		v.add(r.Line, "%s: missing \"action\" (one of %s)", label, actionList())
	default:
		a, isStr := raw.(string)
		switch {
		case !isStr:
			v.add(at("action"), "%s: \"action\" must be a string, not %s", label, tomlTypeName(raw))
		case !Action(a).Valid():
			v.add(at("action"), "%s: unknown action %q (allowed: %s)", label, a, actionList())
		default:
			r.Action = Action(a)
		}
	}

	switch raw, ok := t["effect"]; {
	case !ok:
		v.add(r.Line, "%s: missing \"effect\" (permit or deny)", label)
	default:
		e, isStr := raw.(string)
		switch {
		case !isStr:
			v.add(at("effect"), "%s: \"effect\" must be a string, not %s", label, tomlTypeName(raw))
		case e != EffectPermit && e != EffectDeny:
			v.add(at("effect"), "%s: unknown effect %q (allowed: permit, deny)", label, e)
		default:
			r.Effect = e
		}
	}

	if raw, ok := t["projects"]; ok {
		r.Projects = v.projects(label, raw, at)
	}

	if raw, ok := t["min_cohort_size"]; ok {
		line := at("min_cohort_size")
		if r.Effect == EffectDeny {
			v.add(line, "%s: min_cohort_size is only allowed on permit rules", label)
		} else if n, ok := v.threshold(line, label, raw); ok {
			if disclosure > 0 && n < disclosure {
				v.add(line, "%s: min_cohort_size=%d is below [disclosure] min_cohort_size=%d", label, n, disclosure)
			} else {
				r.MinCohortSize = n
			}
		}
	}
	return r, len(v.problems) == before
}

// projects validates a rule's projects list and returns the canonical ids.
func (v *validator) projects(label string, raw any, at func(key ...string) int) []string {
	line := at("projects")
	list, ok := raw.([]any)
	if !ok {
		v.add(line, "%s: \"projects\" must be a list of project UUID strings, not %s", label, tomlTypeName(raw))
		return nil
	}
	if len(list) == 0 {
		v.add(line, "%s: \"projects\" must not be empty (omit it to cover every project)", label)
		return nil
	}
	out := make([]string, 0, len(list))
	for n, e := range list {
		s, ok := e.(string)
		if !ok {
			v.add(at("projects", elem(n)), "%s: \"projects\" must be a list of project UUID strings, entry %d is %s", label, n+1, tomlTypeName(e))
			continue
		}
		id, ok := canonicalUUID(s)
		if !ok {
			v.add(at("projects", elem(n)), "%s: \"projects\" entry %q is not a UUID", label, s)
			continue
		}
		if !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}

func actionList() string {
	var b bytes.Buffer
	for i, a := range Actions {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(string(a))
	}
	return b.String()
}

// tomlTypeName names the TOML type of a decoded value for error messages.
func tomlTypeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	default:
		return "a date/time"
	}
}
