package policy

import (
	"testing"
)

const (
	projA = "0f8fad5b-d9cb-469f-a165-70867728950e"
	projB = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

func mustParse(t *testing.T, doc string) *Policy {
	t.Helper()
	p, err := Parse([]byte(doc), "ACCESS_POLICY_FILE=test.toml", floor)
	if err != nil {
		t.Fatalf("parse: %v", err)
	}
	return p
}

func TestDecideMatrix(t *testing.T) {
	t.Parallel()
	imaging := `[disclosure]
min_cohort_size = 20

[[access.rule]]
id = "withdrawn"
action = "cohort.accession_ids"
effect = "deny"
projects = ["` + projA + `"]

[[access.rule]]
id = "imaging-all"
action = "cohort.accession_ids"
effect = "permit"
min_cohort_size = 50
`
	scopedPermit := `[[access.rule]]
id = "only-b"
action = "cohort.dataframe"
effect = "permit"
projects = ["` + projB + `"]
`
	unscoped := `[[access.rule]]
id = "stats"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 30
`
	thresholds := `[[access.rule]]
id = "low"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 15

[[access.rule]]
id = "high"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 40

[[access.rule]]
id = "high-too"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 40

[[access.rule]]
id = "b-only"
action = "cohort.statistics"
effect = "permit"
projects = ["` + projB + `"]
min_cohort_size = 60
`
	tests := []struct {
		name      string
		doc       string // "" = no policy
		action    Action
		project   string
		permit    bool
		rule      string
		threshold int
	}{
		{"no policy", "", Dataframe, projA, true, RuleUnset, floor},
		{"no policy without project", "", Statistics, "", true, RuleUnset, floor},
		{"unmentioned action uses disclosure", imaging, Dataframe, projA, true, RuleUnmentioned, 20},
		{"unmentioned action below floor disclosure", unscoped, Dataframe, projA, true, RuleUnmentioned, floor},
		{"deny overrides broad permit", imaging, AccessionIDs, projA, false, "policy:withdrawn", 20},
		{"deny matches any UUID spelling", imaging, AccessionIDs, "{0F8FAD5B-D9CB-469F-A165-70867728950E}", false, "policy:withdrawn", 20},
		{"other project gets the permit threshold", imaging, AccessionIDs, projB, true, "policy:imaging-all", 50},
		{"no project never matches a scoped deny", imaging, AccessionIDs, "", true, "policy:imaging-all", 50},
		{"invalid project with scoped rules", imaging, AccessionIDs, "not-a-uuid", false, RuleInvalidProject, 20},
		{"invalid project without scoped rules", unscoped, Statistics, "not-a-uuid", true, "policy:stats", 30},
		{"scoped permit matches its project", scopedPermit, Dataframe, projB, true, "policy:only-b", floor},
		{"scoped permit, other project: default deny", scopedPermit, Dataframe, projA, false, RuleDefaultDeny, floor},
		{"scoped permit, no project: default deny", scopedPermit, Dataframe, "", false, RuleDefaultDeny, floor},
		{"highest permit threshold wins, first among equals", thresholds, Statistics, projA, true, "policy:high", 40},
		{"project-scoped higher permit wins for its project", thresholds, Statistics, projB, true, "policy:b-only", 60},
		{"unknown action fails closed", imaging, Action("cohort.rows"), projB, false, RuleDefaultDeny, floor},
		{"unknown action fails closed without policy", "", Action(""), projB, false, RuleDefaultDeny, floor},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var p *Policy
			if tc.doc != "" {
				p = mustParse(t, tc.doc)
			}
			d := Decide(p, tc.action, tc.project, floor)
			if d.Permit != tc.permit || d.RuleID != tc.rule || d.EffectiveThreshold != tc.threshold {
				t.Errorf("Decide = %+v; want permit=%v rule=%s threshold=%d", d, tc.permit, tc.rule, tc.threshold)
			}
			if d.Reason == "" {
				t.Error("decision has no reason")
			}
		})
	}
}

// TestDecideIgnoresDocumentOrder evaluates every permutation of a rule set
// and requires the same outcome each time.
func TestDecideIgnoresDocumentOrder(t *testing.T) {
	t.Parallel()
	rules := []string{
		"[[access.rule]]\nid = \"deny-a\"\naction = \"cohort.dataframe\"\neffect = \"deny\"\nprojects = [\"" + projA + "\"]\n",
		"[[access.rule]]\nid = \"permit-all\"\naction = \"cohort.dataframe\"\neffect = \"permit\"\nmin_cohort_size = 25\n",
		"[[access.rule]]\nid = \"permit-a\"\naction = \"cohort.dataframe\"\neffect = \"permit\"\nprojects = [\"" + projA + "\"]\nmin_cohort_size = 90\n",
		"[[access.rule]]\nid = \"permit-b\"\naction = \"cohort.dataframe\"\neffect = \"permit\"\nprojects = [\"" + projB + "\"]\nmin_cohort_size = 35\n",
	}
	want := map[string]Decision{
		projA: {Permit: false, RuleID: "policy:deny-a", EffectiveThreshold: floor},
		projB: {Permit: true, RuleID: "policy:permit-b", EffectiveThreshold: 35},
		"":    {Permit: true, RuleID: "policy:permit-all", EffectiveThreshold: 25},
	}
	perms := 0
	permute(rules, 0, func(order []string) {
		perms++
		doc := ""
		for _, r := range order {
			doc += r + "\n"
		}
		p := mustParse(t, doc)
		for project, w := range want {
			d := Decide(p, Dataframe, project, floor)
			if d.Permit != w.Permit || d.RuleID != w.RuleID || d.EffectiveThreshold != w.EffectiveThreshold {
				t.Errorf("project %q, order %v: %+v, want %+v", project, ruleIDs(p), d, w)
			}
		}
	})
	if perms != 24 {
		t.Fatalf("evaluated %d orders, want 24", perms)
	}
}

func permute(s []string, k int, visit func([]string)) {
	if k == len(s) {
		visit(s)
		return
	}
	for i := k; i < len(s); i++ {
		s[k], s[i] = s[i], s[k]
		permute(s, k+1, visit)
		s[k], s[i] = s[i], s[k]
	}
}

func ruleIDs(p *Policy) []string {
	var ids []string
	for _, r := range p.Rules {
		ids = append(ids, r.ID)
	}
	return ids
}

func TestScopesProjects(t *testing.T) {
	t.Parallel()
	p := mustParse(t, "[[access.rule]]\nid = \"a\"\naction = \"cohort.dataframe\"\neffect = \"deny\"\nprojects = [\""+projA+"\"]\n"+
		"[[access.rule]]\nid = \"b\"\naction = \"cohort.statistics\"\neffect = \"permit\"\n")
	if !p.ScopesProjects(Dataframe) {
		t.Error("dataframe rules name projects")
	}
	if p.ScopesProjects(Statistics) || p.ScopesProjects(AccessionIDs) {
		t.Error("statistics and accession rules do not name projects")
	}
	var none *Policy
	if none.ScopesProjects(Dataframe) {
		t.Error("nil policy scopes nothing")
	}
}
