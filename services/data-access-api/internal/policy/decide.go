package policy

import (
	"fmt"
	"strings"
)

// Decision ids reported when no rule decided.
const (
	// RuleUnset: no policy is configured; the trust's floor applies.
	RuleUnset = "default.unset"
	// RuleUnmentioned: the policy has no rule for the action.
	RuleUnmentioned = "default.unmentioned"
	// RuleInvalidProject: the project id is not a UUID and the action's
	// rules are project-scoped.
	RuleInvalidProject = "default.invalid_project"
	// RuleDefaultDeny: the action has rules but none matched.
	RuleDefaultDeny = "default.deny"
	// RulePrefix prefixes the id of the rule that decided ("policy:<id>").
	RulePrefix = "policy:"
)

// Decision is the outcome of evaluating the policy for one request.
type Decision struct {
	// Permit reports whether the request may proceed.
	Permit bool
	// RuleID is "policy:<rule id>" or one of the default.* ids.
	RuleID string
	// Reason explains the decision for the service's log; it is never
	// returned to a caller.
	Reason string
	// EffectiveThreshold is the minimum number of distinct subjects the
	// request's cohort must have; never below the floor.
	EffectiveThreshold int
}

// Decide evaluates the policy for action on projectID ("" when the request
// carries no project). floor is the trust's COHORT_QUERY_THRESHOLD. A nil
// policy permits at the floor.
//
// Deny rules override permit rules; among matching permit rules the one with
// the highest min_cohort_size decides (the first in document order among
// equals), so the order of rules never changes whether a request is permitted
// nor its threshold. An action with rules but no matching rule is denied. A
// project-scoped rule never matches a request without a valid project UUID.
// An unknown action is denied (fail closed).
func Decide(p *Policy, action Action, projectID string, floor int) Decision {
	if !action.Valid() {
		return Decision{RuleID: RuleDefaultDeny, Reason: fmt.Sprintf("unknown action %q", action), EffectiveThreshold: floor}
	}
	if p == nil {
		return Decision{Permit: true, RuleID: RuleUnset, Reason: "no governance policy configured", EffectiveThreshold: floor}
	}
	section := max(floor, p.MinCohortSize)
	mentioned := false
	for i := range p.Rules {
		if p.Rules[i].Action == action {
			mentioned = true
			break
		}
	}
	if !mentioned {
		return Decision{Permit: true, RuleID: RuleUnmentioned, Reason: fmt.Sprintf("no rule governs %s", action), EffectiveThreshold: section}
	}

	project := ""
	if projectID != "" {
		var ok bool
		if project, ok = canonicalUUID(projectID); !ok && p.ScopesProjects(action) {
			return Decision{RuleID: RuleInvalidProject, Reason: fmt.Sprintf("project id is not a UUID and rules for %s name projects", action), EffectiveThreshold: section}
		}
	}

	var permit *Rule
	for i := range p.Rules {
		r := &p.Rules[i]
		if r.Action != action || !r.appliesTo(project) {
			continue
		}
		if r.Effect == EffectDeny {
			return Decision{RuleID: RulePrefix + r.ID, Reason: fmt.Sprintf("denied by rule %q", r.ID), EffectiveThreshold: section}
		}
		if permit == nil || r.MinCohortSize > permit.MinCohortSize {
			permit = r
		}
	}
	if permit == nil {
		return Decision{RuleID: RuleDefaultDeny, Reason: fmt.Sprintf("rules govern %s but none matches this project", action), EffectiveThreshold: section}
	}
	return Decision{
		Permit:             true,
		RuleID:             RulePrefix + permit.ID,
		Reason:             fmt.Sprintf("permitted by rule %q", permit.ID),
		EffectiveThreshold: max(section, permit.MinCohortSize),
	}
}

// ScopesProjects reports whether some rule for action names projects, so that
// decisions for the action depend on the project id.
func (p *Policy) ScopesProjects(action Action) bool {
	if p == nil {
		return false
	}
	for i := range p.Rules {
		if p.Rules[i].Action == action && p.Rules[i].Projects != nil {
			return true
		}
	}
	return false
}

// Describe returns the one-line "[governance] ..." summary logged at startup.
// Operators' tooling waits for this line and compares the digest, so its
// format is fixed.
func Describe(p *Policy, floor int) string {
	if p == nil {
		return fmt.Sprintf("[governance] no policy configured (%s unset) — platform defaults apply: COHORT_QUERY_THRESHOLD=%d", SourceEnv, floor)
	}
	digest := p.Digest
	if len(digest) > 12 {
		digest = digest[:12]
	}
	var b strings.Builder
	fmt.Fprintf(&b, "[governance] policy ACTIVE from %s sha256=%s: min_cohort_size=%d, %d access rule(s)",
		p.Source, digest, max(floor, p.MinCohortSize), len(p.Rules))
	for i, r := range p.Rules {
		if i == 0 {
			b.WriteString(": ")
		} else {
			b.WriteString("; ")
		}
		scope := "all projects"
		switch n := len(r.Projects); {
		case r.Projects == nil:
		case n == 1:
			scope = "1 project"
		default:
			scope = fmt.Sprintf("%d projects", n)
		}
		fmt.Fprintf(&b, "%s=%s %s (%s", r.ID, r.Effect, r.Action, scope)
		if r.MinCohortSize > 0 {
			fmt.Fprintf(&b, ", min_cohort_size=%d", r.MinCohortSize)
		}
		b.WriteString(")")
	}
	return b.String()
}
