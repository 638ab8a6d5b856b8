// Package sitepolicy loads the site policy file (docs/egress.md, "Site
// policy file"): the one TOML document, named by SITE_POLICY_FILE, in which
// a trust states its egress rules — the disclosure floor and rounding,
// review modes per egress channel, differential-privacy parameters,
// per-project privacy budgets and the job images fl-client may run. The hub
// cannot override it.
//
// The loader is strict: unknown keys, wrong types and bad values are all
// reported at once, each with its line. The [access] table and
// [disclosure] min_cohort_size (and [fl_privacy]) belong to data-access-api's
// governance policy (ACCESS_POLICY_FILE), so a site can keep everything in
// one file: this loader accepts them without interpreting them, and
// data-access-api's loader validates them.
//
// Load and Parse are safe for concurrent use; a *Policy is read-only after
// loading.
package sitepolicy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/flip-trust/node/shared/disclosure"
)

// Environment variables.
const (
	// EnvFile names the site policy file.
	EnvFile = "SITE_POLICY_FILE"
	// EnvReview holds review modes that make channels stricter than the
	// file ("cohort_results=hold,fl_weights=refuse").
	EnvReview = "EGRESS_REVIEW"
)

// Channel is an egress channel (docs/egress.md, "Channels").
type Channel string

// The egress channels.
const (
	CohortResults Channel = "cohort_results"
	ImagingStatus Channel = "imaging_status"
	TaskResult    Channel = "task_result"
	FLMetrics     Channel = "fl_metrics"
	FLWeights     Channel = "fl_weights"
)

// Channels lists every channel.
var Channels = []Channel{CohortResults, ImagingStatus, TaskResult, FLMetrics, FLWeights}

// Mode is a channel's review mode. Larger is stricter.
type Mode int

// Review modes.
const (
	Release Mode = iota
	Hold
	Refuse
)

func (m Mode) String() string {
	switch m {
	case Release:
		return "release"
	case Hold:
		return "hold"
	case Refuse:
		return "refuse"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// ParseMode reads "release", "hold" or "refuse".
func ParseMode(s string) (Mode, bool) {
	switch s {
	case "release":
		return Release, true
	case "hold":
		return Hold, true
	case "refuse":
		return Refuse, true
	}
	return 0, false
}

// DefaultExpiry is how long a held item waits for a reviewer by default.
const DefaultExpiry = 72 * time.Hour

// DP is the [dp] table: fl-client's DP filter parameters.
type DP struct {
	// Set is true when the file has a [dp] table.
	Set             bool
	ClipNorm        float64
	NoiseMultiplier float64
	Delta           float64
}

// Budget is one project's (ε, δ) privacy budget.
type Budget struct {
	Epsilon float64
	Delta   float64
}

// Policy is a validated site policy.
type Policy struct {
	// Floor is [disclosure] floor: 0 means the trust's
	// COHORT_QUERY_THRESHOLD; otherwise at least that.
	Floor int64
	// Rounding is [disclosure] rounding: 0 (off) or the multiple released
	// counts are rounded to.
	Rounding int64
	// Review is the mode of every channel (Release unless configured).
	Review map[Channel]Mode
	// Expiry is how long held items wait for a reviewer.
	Expiry time.Duration
	// DP is the [dp] table.
	DP DP
	// Budgets are keyed by canonical lower-case project UUID.
	Budgets map[string]Budget
	// Images are the allowed job image digests ("sha256:<64 hex>"); empty
	// means none is restricted.
	Images []string
	// Source is "SITE_POLICY_FILE=<path>", or "defaults".
	Source string
	// Digest is the SHA-256 (hex) of the file; "" for the defaults.
	Digest string
}

// Default is the policy of a site without a file: the trust's threshold as
// the floor, no rounding, every channel released, no DP defaults, no
// budgets, no image restriction.
func Default() *Policy {
	p := &Policy{Review: map[Channel]Mode{}, Expiry: DefaultExpiry, Budgets: map[string]Budget{}, Source: "defaults"}
	for _, c := range Channels {
		p.Review[c] = Release
	}
	return p
}

// Disclosure returns the disclosure kernel's policy for a trust whose
// COHORT_QUERY_THRESHOLD is threshold.
func (p *Policy) Disclosure(threshold int64) (disclosure.Policy, error) {
	return disclosure.NewPolicy(threshold, p.Floor, p.Rounding)
}

// Problem is one defect of a site policy document.
type Problem struct {
	// Line is 1-based; 0 when the problem concerns the whole file or the
	// line is unknown.
	Line    int
	Message string
}

// Error lists every problem of a site policy file (or of EGRESS_REVIEW).
type Error struct {
	File     string
	Problems []Problem
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("site policy ")
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

const maxFileSize = 1 << 20

// Load reads and validates the file at path for a trust whose
// COHORT_QUERY_THRESHOLD is threshold. An empty path gives Default(). Every
// problem, an unreadable file included, is reported in one *Error.
func Load(path string, threshold int64) (*Policy, error) {
	if strings.TrimSpace(path) == "" {
		p := Default()
		if threshold < 1 {
			return nil, &Error{File: "defaults", Problems: []Problem{{Message: fmt.Sprintf("COHORT_QUERY_THRESHOLD must be at least 1, got %d", threshold)}}}
		}
		return p, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, &Error{File: path, Problems: []Problem{{Message: fmt.Sprintf("cannot read the file: %v", err)}}}
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFileSize+1))
	if err == nil && len(data) > maxFileSize {
		err = fmt.Errorf("larger than %d bytes", maxFileSize)
	}
	if err != nil {
		return nil, &Error{File: path, Problems: []Problem{{Message: fmt.Sprintf("cannot read the file: %v", err)}}}
	}
	return Parse(data, path, threshold)
}

var (
	uuidRe   = regexp.MustCompile(`^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$`)
	digestRe = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
)

// Parse validates a site policy document; file names it in errors.
func Parse(data []byte, file string, threshold int64) (*Policy, error) {
	p := Default()
	sum := sha256.Sum256(data)
	p.Digest, p.Source = hex.EncodeToString(sum[:]), EnvFile+"="+file
	var doc map[string]any
	if _, err := toml.Decode(string(data), &doc); err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, &Error{File: file, Problems: []Problem{{Line: pe.Position.Line, Message: "invalid TOML: " + pe.Message}}}
		}
		return nil, &Error{File: file, Problems: []Problem{{Message: "invalid TOML: " + err.Error()}}}
	}
	v := &validator{at: locate(string(data)), threshold: threshold}
	if threshold < 1 {
		v.add(0, "COHORT_QUERY_THRESHOLD must be at least 1, got %d", threshold)
	}
	v.document(doc, p)
	if len(v.problems) > 0 {
		slices.SortStableFunc(v.problems, func(a, b Problem) int { return a.Line - b.Line })
		return nil, &Error{File: file, Problems: v.problems}
	}
	return p, nil
}

type validator struct {
	at        lines
	threshold int64
	problems  []Problem
}

func (v *validator) add(line int, format string, args ...any) {
	v.problems = append(v.problems, Problem{Line: line, Message: fmt.Sprintf(format, args...)})
}

// sortedKeys returns m's keys in document order.
func (v *validator) sortedKeys(m map[string]any, path ...string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b string) int {
		la, lb := v.at.line(append(slices.Clip(path), a)...), v.at.line(append(slices.Clip(path), b)...)
		if la != lb {
			return la - lb
		}
		return strings.Compare(a, b)
	})
	return keys
}

func (v *validator) table(raw any, path ...string) (map[string]any, bool) {
	t, ok := raw.(map[string]any)
	if !ok {
		v.add(v.at.line(path...), "%s must be a table ([%s])", strings.Join(path, "."), strings.Join(path, "."))
	}
	return t, ok
}

func (v *validator) document(doc map[string]any, p *Policy) {
	for _, k := range v.sortedKeys(doc) {
		raw := doc[k]
		switch k {
		case "disclosure":
			if t, ok := v.table(raw, k); ok {
				v.disclosure(t, p)
			}
		case "review":
			if t, ok := v.table(raw, k); ok {
				v.review(t, p)
			}
		case "dp":
			if t, ok := v.table(raw, k); ok {
				v.dp(t, p)
			}
		case "budget":
			if t, ok := v.table(raw, k); ok {
				v.budgets(t, p)
			}
		case "images":
			if t, ok := v.table(raw, k); ok {
				v.images(t, p)
			}
		case "access", "fl_privacy":
			// data-access-api's governance policy: validated by its loader.
		default:
			v.add(v.at.line(k), "unknown top-level key %q (allowed: disclosure, review, dp, budget, images; access and fl_privacy belong to data-access-api)", k)
		}
	}
}

// integer reads a TOML integer.
func (v *validator) integer(raw any, path ...string) (int64, bool) {
	n, ok := raw.(int64)
	if !ok {
		v.add(v.at.line(path...), "%s must be an integer, got %s", strings.Join(path, "."), tomlType(raw))
	}
	return n, ok
}

// number reads a TOML float or integer as a finite float.
func (v *validator) number(raw any, path ...string) (float64, bool) {
	var f float64
	switch x := raw.(type) {
	case float64:
		f = x
	case int64:
		f = float64(x)
	default:
		v.add(v.at.line(path...), "%s must be a number, got %s", strings.Join(path, "."), tomlType(raw))
		return 0, false
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		v.add(v.at.line(path...), "%s must be finite, got %v", strings.Join(path, "."), f)
		return 0, false
	}
	return f, true
}

func (v *validator) disclosure(t map[string]any, p *Policy) {
	for _, k := range v.sortedKeys(t, "disclosure") {
		line := v.at.line("disclosure", k)
		switch k {
		case "floor":
			if n, ok := v.integer(t[k], "disclosure", k); ok {
				if n < v.threshold {
					v.add(line, "disclosure.floor %d is below COHORT_QUERY_THRESHOLD %d: the site policy can only raise the floor", n, v.threshold)
				} else {
					p.Floor = n
				}
			}
		case "rounding":
			if n, ok := v.integer(t[k], "disclosure", k); ok {
				if n < 0 {
					v.add(line, "disclosure.rounding must be 0 (off) or a positive integer, got %d", n)
				} else {
					p.Rounding = n
				}
			}
		case "min_cohort_size":
			// data-access-api's governance threshold: validated by its loader.
		default:
			v.add(line, "[disclosure]: unknown key %q (allowed: floor, rounding)", k)
		}
	}
}

func (v *validator) review(t map[string]any, p *Policy) {
	for _, k := range v.sortedKeys(t, "review") {
		line := v.at.line("review", k)
		if k == "expiry" {
			s, ok := t[k].(string)
			if !ok {
				v.add(line, "review.expiry must be a duration string such as \"72h\", got %s", tomlType(t[k]))
				continue
			}
			d, err := time.ParseDuration(s)
			if err != nil || d <= 0 {
				v.add(line, "review.expiry must be a positive duration such as \"72h\", got %q", s)
				continue
			}
			p.Expiry = d
			continue
		}
		if !slices.Contains(Channels, Channel(k)) {
			v.add(line, "[review]: unknown channel %q (channels: %s; and expiry)", k, channelList())
			continue
		}
		s, ok := t[k].(string)
		if !ok {
			v.add(line, "review.%s must be a string (release, hold or refuse), got %s", k, tomlType(t[k]))
			continue
		}
		m, ok := ParseMode(s)
		if !ok {
			v.add(line, "review.%s: unknown mode %q (release, hold or refuse)", k, s)
			continue
		}
		p.Review[Channel(k)] = m
	}
}

func (v *validator) dp(t map[string]any, p *Policy) {
	p.DP.Set = true
	for _, k := range v.sortedKeys(t, "dp") {
		line := v.at.line("dp", k)
		switch k {
		case "clip_norm", "noise_multiplier":
			f, ok := v.number(t[k], "dp", k)
			if !ok {
				continue
			}
			if f < 0 || (k == "clip_norm" && f == 0) {
				v.add(line, "dp.%s must be positive, got %v", k, f)
				continue
			}
			if k == "clip_norm" {
				p.DP.ClipNorm = f
			} else {
				p.DP.NoiseMultiplier = f
			}
		case "delta":
			if f, ok := v.number(t[k], "dp", k); ok {
				if !(f > 0 && f < 1) {
					v.add(line, "dp.delta must be in (0, 1), got %v", f)
				} else {
					p.DP.Delta = f
				}
			}
		default:
			v.add(line, "[dp]: unknown key %q (allowed: clip_norm, noise_multiplier, delta)", k)
		}
	}
}

func (v *validator) budgets(t map[string]any, p *Policy) {
	for _, project := range v.sortedKeys(t, "budget") {
		line := v.at.line("budget", project)
		if !uuidRe.MatchString(project) {
			v.add(line, "[budget.%q]: the project must be a UUID", project)
			continue
		}
		bt, ok := v.table(t[project], "budget", project)
		if !ok {
			continue
		}
		b, good := Budget{}, true
		for _, k := range v.sortedKeys(bt, "budget", project) {
			kl := v.at.line("budget", project, k)
			switch k {
			case "epsilon":
				f, ok := v.number(bt[k], "budget", project, k)
				if ok && f <= 0 {
					v.add(kl, "budget.%q.epsilon must be positive, got %v", project, f)
					ok = false
				}
				b.Epsilon, good = f, good && ok
			case "delta":
				f, ok := v.number(bt[k], "budget", project, k)
				if ok && !(f > 0 && f < 1) {
					v.add(kl, "budget.%q.delta must be in (0, 1), got %v", project, f)
					ok = false
				}
				b.Delta, good = f, good && ok
			default:
				v.add(kl, "[budget.%q]: unknown key %q (allowed: epsilon, delta)", project, k)
				good = false
			}
		}
		for _, k := range []string{"epsilon", "delta"} {
			if _, ok := bt[k]; !ok {
				v.add(line, "[budget.%q]: %s is required", project, k)
				good = false
			}
		}
		key := strings.ToLower(project)
		if _, dup := p.Budgets[key]; dup {
			v.add(line, "[budget.%q]: the project has another budget table", project)
			good = false
		}
		if good {
			p.Budgets[key] = b
		}
	}
}

func (v *validator) images(t map[string]any, p *Policy) {
	for _, k := range v.sortedKeys(t, "images") {
		line := v.at.line("images", k)
		if k != "allowed" {
			v.add(line, "[images]: unknown key %q (allowed: allowed)", k)
			continue
		}
		list, ok := t[k].([]any)
		if !ok {
			v.add(line, "images.allowed must be an array of digests, got %s", tomlType(t[k]))
			continue
		}
		for i, raw := range list {
			s, ok := raw.(string)
			if !ok || !digestRe.MatchString(s) {
				v.add(line, "images.allowed[%d] must be a digest \"sha256:<64 lower-case hex>\", got %v", i, raw)
				continue
			}
			if !slices.Contains(p.Images, s) {
				p.Images = append(p.Images, s)
			}
		}
	}
}

func tomlType(raw any) string {
	switch raw.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case []any, []map[string]any:
		return "an array"
	case map[string]any:
		return "a table"
	case time.Time:
		return "a date-time"
	}
	return fmt.Sprintf("%T", raw)
}

func channelList() string {
	s := make([]string, len(Channels))
	for i, c := range Channels {
		s[i] = string(c)
	}
	return strings.Join(s, ", ")
}

// ParseReview reads EGRESS_REVIEW ("cohort_results=hold,fl_weights=refuse";
// empty: nothing). Every bad entry is reported in one *Error.
func ParseReview(s string) (map[Channel]Mode, error) {
	out := map[Channel]Mode{}
	var problems []Problem
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, mode, ok := strings.Cut(part, "=")
		name, mode = strings.TrimSpace(name), strings.TrimSpace(mode)
		switch m, good := ParseMode(mode); {
		case !ok:
			problems = append(problems, Problem{Message: fmt.Sprintf("%q is not channel=mode", part)})
		case !slices.Contains(Channels, Channel(name)):
			problems = append(problems, Problem{Message: fmt.Sprintf("unknown channel %q (channels: %s)", name, channelList())})
		case !good:
			problems = append(problems, Problem{Message: fmt.Sprintf("%s: unknown mode %q (release, hold or refuse)", name, mode)})
		default:
			out[Channel(name)] = max(out[Channel(name)], m)
		}
	}
	if len(problems) > 0 {
		return nil, &Error{File: EnvReview, Problems: problems}
	}
	return out, nil
}

// WithReview returns a copy of p in which each channel's mode is the
// stricter of the file's and env's: the environment can tighten a channel,
// never loosen it.
func (p *Policy) WithReview(env map[Channel]Mode) *Policy {
	q := *p
	q.Review = make(map[Channel]Mode, len(p.Review))
	for c, m := range p.Review {
		q.Review[c] = m
	}
	for c, m := range env {
		q.Review[c] = max(q.Review[c], m)
	}
	return &q
}
