package policy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

const floor = 10

const exampleFile = "testdata/governance.example.toml"

func TestLoadUnsetPathMeansNoPolicy(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"", "   ", "\t\n"} {
		p, err := Load(path, floor)
		if p != nil || err != nil {
			t.Errorf("Load(%q) = %v, %v; want nil, nil", path, p, err)
		}
	}
}

func TestLoadUnreadableFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	huge := filepath.Join(dir, "huge.toml")
	if err := os.WriteFile(huge, bytes.Repeat([]byte("#\n"), maxFileSize), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"missing":   filepath.Join(dir, "missing.toml"),
		"directory": dir,
		"too large": huge,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			p, err := Load(path, floor)
			if p != nil || err == nil {
				t.Fatalf("Load = %v, %v; want an error", p, err)
			}
			var pe *Error
			if !errors.As(err, &pe) || pe.File != path {
				t.Fatalf("error %v is not an *Error naming %s", err, path)
			}
			if !strings.HasPrefix(err.Error(), "governance policy "+path+": cannot read the file: ") {
				t.Errorf("error text %q", err)
			}
		})
	}
}

func TestShippedExampleIsValid(t *testing.T) {
	t.Parallel()
	raw, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Load(exampleFile, floor)
	if err != nil {
		t.Fatalf("example rejected: %v", err)
	}
	sum := sha256.Sum256(raw)
	if p.Digest != hex.EncodeToString(sum[:]) {
		t.Errorf("digest %s, want sha256 of the file", p.Digest)
	}
	if p.Source != "ACCESS_POLICY_FILE="+exampleFile {
		t.Errorf("source %q", p.Source)
	}
	if p.MinCohortSize != 20 {
		t.Errorf("min_cohort_size %d, want 20", p.MinCohortSize)
	}
	if p.FLPrivacy == nil || p.FLPrivacy["nvflare"] == nil {
		t.Errorf("fl_privacy not kept: %#v", p.FLPrivacy)
	}
	// Rule lines are the lines of the [[access.rule]] headers.
	var headers []int
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		if strings.TrimSpace(sc.Text()) == "[[access.rule]]" {
			headers = append(headers, n)
		}
	}
	var lines []int
	for _, r := range p.Rules {
		lines = append(lines, r.Line)
		if r.Action == Dataframe {
			t.Errorf("example mentions cohort.dataframe in rule %q; it must leave it unmentioned", r.ID)
		}
	}
	if !slices.Equal(lines, headers) {
		t.Errorf("rule lines %v, want %v", lines, headers)
	}

	other := "0f8fad5b-d9cb-469f-a165-70867728950e"
	if d := Decide(p, Dataframe, other, floor); !d.Permit || d.RuleID != RuleUnmentioned || d.EffectiveThreshold != 20 {
		t.Errorf("dataframe decision %+v", d)
	}
	if d := Decide(p, AccessionIDs, other, floor); !d.Permit || d.RuleID != "policy:imaging-for-everyone-else" || d.EffectiveThreshold != 50 {
		t.Errorf("imaging decision %+v, want permit at 50", d)
	}
	if d := Decide(p, AccessionIDs, "00000000-0000-0000-0000-000000000000", floor); d.Permit || d.RuleID != "policy:withdrawn-project-imaging" {
		t.Errorf("withdrawn project decision %+v", d)
	}
	if d := Decide(p, Statistics, "", floor); !d.Permit || d.EffectiveThreshold != 20 {
		t.Errorf("statistics decision %+v", d)
	}
}

func TestDigestIsOverRawBytesWithCRLF(t *testing.T) {
	t.Parallel()
	lf := []byte("[disclosure]\nmin_cohort_size = 12\n")
	crlf := []byte("[disclosure]\r\nmin_cohort_size = 12\r\n")
	pl, err := Parse(lf, "lf.toml", floor)
	if err != nil {
		t.Fatal(err)
	}
	pc, err := Parse(crlf, "crlf.toml", floor)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(crlf)
	if pc.Digest != hex.EncodeToString(want[:]) {
		t.Errorf("CRLF digest %s, want %x", pc.Digest, want)
	}
	if pc.Digest == pl.Digest {
		t.Error("CRLF and LF documents share a digest; line endings were normalised")
	}
	if pc.MinCohortSize != 12 {
		t.Errorf("CRLF document parsed to min_cohort_size %d", pc.MinCohortSize)
	}
}

func TestValidDocuments(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		doc   string
		check func(t *testing.T, p *Policy)
	}{
		{"disclosure only", "[disclosure]\nmin_cohort_size = 10\n", func(t *testing.T, p *Policy) {
			if p.MinCohortSize != 10 || len(p.Rules) != 0 {
				t.Errorf("got %+v", p)
			}
		}},
		{"fl_privacy only", "[fl_privacy.nvflare]\npolicy = \"percentile\"\n", func(t *testing.T, p *Policy) {
			if p.FLPrivacy == nil || p.MinCohortSize != 0 {
				t.Errorf("got %+v", p)
			}
		}},
		{"dotted keys", "disclosure.min_cohort_size = 15\n", func(t *testing.T, p *Policy) {
			if p.MinCohortSize != 15 {
				t.Errorf("got %+v", p)
			}
		}},
		{"projects normalised", `[[access.rule]]
id = "r"
action = "cohort.dataframe"
effect = "deny"
projects = ["0F8FAD5B-D9CB-469F-A165-70867728950E", "{0f8fad5b-d9cb-469f-a165-70867728950e}",
            "urn:uuid:7c9e6679-7425-40de-944b-e07fc1f90ae7", "7c9e6679742540de944be07fc1f90ae7"]
`, func(t *testing.T, p *Policy) {
			want := []string{"0f8fad5b-d9cb-469f-a165-70867728950e", "7c9e6679-7425-40de-944b-e07fc1f90ae7"}
			if len(p.Rules) != 1 || !slices.Equal(p.Rules[0].Projects, want) {
				t.Errorf("projects %v, want %v", p.Rules[0].Projects, want)
			}
		}},
		{"inline array of rule tables", `[access]
rule = [
  { id = "a", action = "cohort.statistics", effect = "permit" },
  { id = "b", action = "cohort.dataframe", effect = "permit", min_cohort_size = 30 },
]
`, func(t *testing.T, p *Policy) {
			if len(p.Rules) != 2 || p.Rules[1].MinCohortSize != 30 || p.Rules[0].Line != 3 || p.Rules[1].Line != 4 {
				t.Errorf("rules %+v", p.Rules)
			}
		}},
		{"rule threshold equal to disclosure", `[disclosure]
min_cohort_size = 25
[[access.rule]]
id = "r"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 25
`, func(t *testing.T, p *Policy) {
			if p.Rules[0].MinCohortSize != 25 || p.Rules[0].Projects != nil {
				t.Errorf("rule %+v", p.Rules[0])
			}
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Parse([]byte(tc.doc), "test.toml", floor)
			if err != nil {
				t.Fatalf("rejected: %v", err)
			}
			tc.check(t, p)
		})
	}
}

const goodRule = "id = \"r\"\naction = \"cohort.statistics\"\neffect = \"permit\"\n"

// TestRejections covers every loader rejection. line is the line the error
// must name (0: the problem concerns the whole file and no line is named).
func TestRejections(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		doc  string
		line int
		want string
	}{
		{"invalid TOML", "[disclosure]\nmin_cohort_size = \n", 2, "invalid TOML"},
		{"duplicate TOML key", "[disclosure]\nmin_cohort_size = 20\nmin_cohort_size = 30\n", 3, "invalid TOML"},
		{"not UTF-8", "[disclosure]\nmin_cohort_size = 20 # caf\xe9\n", 2, "not valid UTF-8"},
		{"empty document", "", 0, "configures nothing"},
		{"only comments", "# nothing here\n\n# at all\n", 0, "configures nothing"},
		{"only empty sections", "[disclosure]\n[access]\n[fl_privacy]\n", 0, "configures nothing"},
		{"empty rule list", "[access]\nrule = []\n", 0, "configures nothing"},
		{"unknown top-level table", "[disclosure]\nmin_cohort_size = 20\n\n[acess]\nx = 1\n", 4, `unknown top-level key "acess"`},
		{"unknown top-level key", "threshold = 5\n[disclosure]\nmin_cohort_size = 20\n", 1, `unknown top-level key "threshold"`},
		{"disclosure not a table", "disclosure = 20\n", 1, "disclosure must be a table"},
		{"key after a table header belongs to it", "[disclosure]\nmin_cohort_size = 20\naccess = 1\n", 3, `[disclosure]: unknown key "access"`},
		{"access scalar", "access = 1\n", 1, "access must be a table"},
		{"fl_privacy not a table", "fl_privacy = \"on\"\n", 1, "fl_privacy must be a table"},
		{"unknown disclosure key", "[disclosure]\nmin_cohort_size = 20\nmax_cohort_size = 3\n", 3, `[disclosure]: unknown key "max_cohort_size"`},
		{"unknown access key", "[access]\nrules = []\n", 2, `[access]: unknown key "rules"`},
		{"rule is a table", "[access.rule]\n" + goodRule, 1, "access.rule must be an array of tables"},
		{"rule is a string", "[access]\n\nrule = \"permit\"\n", 3, "access.rule must be an array of tables"},
		{"rule array of scalars", "[access]\nrule = [1, 2]\n", 2, "access.rule must be an array of tables"},
		{"unknown rule field", "[[access.rule]]\n" + goodRule + "project = []\n", 5, `rule "r": unknown field "project"`},
		{"missing id", "[[access.rule]]\naction = \"cohort.statistics\"\neffect = \"permit\"\n", 1, `rule #1: missing "id"`},
		{"empty id", "[[access.rule]]\nid = \"\"\naction = \"cohort.statistics\"\neffect = \"permit\"\n", 2, `rule #1: "id" must be a non-empty string`},
		{"blank id", "[[access.rule]]\nid = \"  \"\naction = \"cohort.statistics\"\neffect = \"permit\"\n", 2, `"id" must be a non-empty string`},
		{"id not a string", "[[access.rule]]\nid = 7\naction = \"cohort.statistics\"\neffect = \"permit\"\n", 2, `"id" must be a non-empty string`},
		{"duplicate id", "[[access.rule]]\n" + goodRule + "\n[[access.rule]]\n" + goodRule, 7, `rule "r": duplicate id (first used at line 2)`},
		{"unknown action", "[[access.rule]]\nid = \"x\"\naction = \"cohort.foo\"\neffect = \"permit\"\n", 3, `rule "x": unknown action "cohort.foo"`},
		{"missing action", "\n[[access.rule]]\nid = \"x\"\neffect = \"permit\"\n", 2, `rule "x": missing "action"`},
		{"action not a string", "[[access.rule]]\nid = \"x\"\naction = [\"cohort.statistics\"]\neffect = \"permit\"\n", 3, `"action" must be a string`},
		{"missing effect", "[[access.rule]]\nid = \"x\"\naction = \"cohort.statistics\"\n", 1, `rule "x": missing "effect"`},
		{"unknown effect", "[[access.rule]]\nid = \"x\"\naction = \"cohort.statistics\"\neffect = \"allow\"\n", 4, `rule "x": unknown effect "allow"`},
		{"effect is case sensitive", "[[access.rule]]\nid = \"x\"\naction = \"cohort.statistics\"\neffect = \"Permit\"\n", 4, `unknown effect "Permit"`},
		{"projects not a list", "[[access.rule]]\n" + goodRule + "projects = \"0f8fad5b-d9cb-469f-a165-70867728950e\"\n", 5, `"projects" must be a list`},
		{"projects empty", "[[access.rule]]\n" + goodRule + "projects = []\n", 5, `"projects" must not be empty`},
		{"projects entry not a string", "[[access.rule]]\n" + goodRule + "projects = [\n  \"0f8fad5b-d9cb-469f-a165-70867728950e\",\n  42,\n]\n", 7, `"projects" must be a list of project UUID strings, entry 2`},
		{"projects entry not a UUID", "[[access.rule]]\n" + goodRule + "projects = [\n  \"0f8fad5b-d9cb-469f-a165-70867728950e\",\n  \"project-7\",\n]\n", 7, `"projects" entry "project-7" is not a UUID`},
		{"threshold on deny", "[[access.rule]]\nid = \"x\"\naction = \"cohort.dataframe\"\neffect = \"deny\"\nmin_cohort_size = 50\n", 5, `rule "x": min_cohort_size is only allowed on permit rules`},
		{"threshold float", "[disclosure]\nmin_cohort_size = 25.0\n", 2, "min_cohort_size must be an integer, not a float"},
		{"threshold string", "[[access.rule]]\n" + goodRule + "min_cohort_size = \"50\"\n", 5, "min_cohort_size must be an integer, not a string"},
		{"threshold bool", "[disclosure]\nmin_cohort_size = true\n", 2, "min_cohort_size must be an integer, not a boolean"},
		{"threshold zero", "[disclosure]\nmin_cohort_size = 0\n", 2, "must be a positive integer"},
		{"disclosure below floor", "[disclosure]\nmin_cohort_size = 5\n", 2, "min_cohort_size=5 is below the trust's floor COHORT_QUERY_THRESHOLD=10"},
		{"rule below floor", "[[access.rule]]\n" + goodRule + "min_cohort_size = 9\n", 5, `rule "r": min_cohort_size=9 is below the trust's floor`},
		{"rule below disclosure", "[disclosure]\nmin_cohort_size = 25\n\n[[access.rule]]\n" + goodRule + "min_cohort_size = 20\n", 8, `rule "r": min_cohort_size=20 is below [disclosure] min_cohort_size=25`},
		{"rule id with control character", "[[access.rule]]\nid = \"a\\nb\"\naction = \"cohort.statistics\"\neffect = \"permit\"\n", 2, "control characters"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := Parse([]byte(tc.doc), "ACCESS_POLICY_FILE=/etc/gov.toml", floor)
			if err == nil {
				t.Fatalf("accepted: %+v", p)
			}
			if p != nil {
				t.Errorf("returned a policy with the error")
			}
			var pe *Error
			if !errors.As(err, &pe) {
				t.Fatalf("error %T is not *Error", err)
			}
			if pe.File != "/etc/gov.toml" {
				t.Errorf("file %q", pe.File)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
			if got := pe.Problems[0].Line; got != tc.line {
				t.Errorf("line %d, want %d (%v)", got, tc.line, err)
			}
			prefix := "governance policy /etc/gov.toml: "
			if tc.line > 0 {
				prefix += "line " + strconv.Itoa(tc.line) + ": "
			}
			if !strings.HasPrefix(err.Error(), prefix) {
				t.Errorf("error %q does not start with %q", err, prefix)
			}
		})
	}
}

func TestErrorReportsEveryProblemInDocumentOrder(t *testing.T) {
	t.Parallel()
	doc := `[disclosure]
min_cohort_size = 5

[[access.rule]]
id = "a"
action = "cohort.foo"
effect = "permit"

[[access.rule]]
id = "b"
action = "cohort.dataframe"
effect = "maybe"
`
	_, err := Parse([]byte(doc), "g.toml", floor)
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("want *Error, got %v", err)
	}
	var lines []int
	for _, p := range pe.Problems {
		lines = append(lines, p.Line)
	}
	if want := []int{2, 6, 12}; !slices.Equal(lines, want) {
		t.Errorf("problem lines %v, want %v (%v)", lines, want, err)
	}
	if !strings.Contains(err.Error(), "; line 6: ") {
		t.Errorf("problems not joined: %q", err)
	}
}

// TestLinesSurviveTrickyText checks that text inside strings and comments
// that looks like TOML structure does not shift the reported lines.
func TestLinesSurviveTrickyText(t *testing.T) {
	t.Parallel()
	doc := `# [[access.rule]] in a comment
[fl_privacy.notes]
text = """
[[access.rule]]
id = "fake"
"""
literal = '''
[access]'''
"quoted.key" = "a # not a comment [[x]]"

[[access.rule]]
id = "first"
action = "cohort.statistics"
effect = "permit"

[[ access . rule ]]   # spaced header
'id' = "second"
action = "cohort.statistics"
"effect" = "deny"
min_cohort_size = 40
`
	_, err := Parse([]byte(doc), "g.toml", floor)
	var pe *Error
	if !errors.As(err, &pe) || len(pe.Problems) != 1 {
		t.Fatalf("want one problem, got %v", err)
	}
	if pe.Problems[0].Line != 20 || !strings.Contains(pe.Problems[0].Message, `rule "second"`) {
		t.Errorf("problem %+v, want line 20 of rule \"second\"", pe.Problems[0])
	}
}

func TestInlineRuleErrorNamesItsLine(t *testing.T) {
	t.Parallel()
	doc := `[access]
rule = [
  { id = "a", action = "cohort.statistics", effect = "permit" },
  { id = "b", action = "cohort.statistic", effect = "permit" },
]
`
	_, err := Parse([]byte(doc), "g.toml", floor)
	var pe *Error
	if !errors.As(err, &pe) || pe.Problems[0].Line != 4 {
		t.Fatalf("want a problem on line 4, got %v", err)
	}
}

func TestDescribe(t *testing.T) {
	t.Parallel()
	if got, want := Describe(nil, 10), "[governance] no policy configured (ACCESS_POLICY_FILE unset) — platform defaults apply: COHORT_QUERY_THRESHOLD=10"; got != want {
		t.Errorf("no policy:\n got %q\nwant %q", got, want)
	}

	p, err := Load(exampleFile, floor)
	if err != nil {
		t.Fatal(err)
	}
	want := "[governance] policy ACTIVE from ACCESS_POLICY_FILE=" + exampleFile + " sha256=" + p.Digest[:12] +
		": min_cohort_size=20, 3 access rule(s): " +
		"statistics-for-every-project=permit cohort.statistics (all projects); " +
		"withdrawn-project-imaging=deny cohort.accession_ids (1 project); " +
		"imaging-for-everyone-else=permit cohort.accession_ids (all projects, min_cohort_size=50)"
	if got := Describe(p, floor); got != want {
		t.Errorf("active policy:\n got %q\nwant %q", got, want)
	}

	// The floor shows when it is above [disclosure]; several projects are
	// counted; a document without rules says so.
	p2 := &Policy{Source: "ACCESS_POLICY_FILE=/g.toml", Digest: strings.Repeat("ab", 32), MinCohortSize: 12,
		Rules: []Rule{{ID: "d", Action: Dataframe, Effect: EffectDeny, Projects: []string{"a", "b"}}}}
	if got, want := Describe(p2, 15), "[governance] policy ACTIVE from ACCESS_POLICY_FILE=/g.toml sha256=abababababab: min_cohort_size=15, 1 access rule(s): d=deny cohort.dataframe (2 projects)"; got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
	p2.Rules = nil
	if got, want := Describe(p2, 10), "[governance] policy ACTIVE from ACCESS_POLICY_FILE=/g.toml sha256=abababababab: min_cohort_size=12, 0 access rule(s)"; got != want {
		t.Errorf("\n got %q\nwant %q", got, want)
	}
}

// FuzzParse checks that no input makes the loader panic or hang, and that an
// accepted document always yields a consistent policy.
func FuzzParse(f *testing.F) {
	if raw, err := os.ReadFile(exampleFile); err == nil {
		f.Add(raw)
	}
	f.Add([]byte("[access]\nrule = [{ id = \"a\", action = \"cohort.statistics\", effect = \"permit\" }]\n"))
	f.Add([]byte("a = \"\"\"\n[[x]]\n\"\"\"\n[[access.rule]]\nid = 'x'\n"))
	f.Add([]byte("[[a.b]]\n[[a.b.c]]\nx = [1, [2, {y = 3}]]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data, "fuzz.toml", floor)
		if err != nil {
			if p != nil {
				t.Fatal("policy returned with an error")
			}
			return
		}
		for _, r := range p.Rules {
			if r.ID == "" || !r.Action.Valid() || (r.Effect != EffectPermit && r.Effect != EffectDeny) {
				t.Fatalf("invalid rule accepted: %+v", r)
			}
			if r.MinCohortSize != 0 && r.MinCohortSize < max(floor, p.MinCohortSize) {
				t.Fatalf("rule lowers the threshold: %+v", r)
			}
		}
		_ = Describe(p, floor)
	})
}
