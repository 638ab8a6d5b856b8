package sitepolicy

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestLoadComplete(t *testing.T) {
	t.Parallel()
	p, err := Load("testdata/site.toml", 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Floor != 15 || p.Rounding != 5 || p.Expiry != 48*time.Hour {
		t.Fatalf("disclosure/expiry = %d %d %v", p.Floor, p.Rounding, p.Expiry)
	}
	want := map[Channel]Mode{CohortResults: Hold, ImagingStatus: Release, TaskResult: Release, FLMetrics: Hold, FLWeights: Refuse}
	for c, m := range want {
		if p.Review[c] != m {
			t.Errorf("review %s = %v, want %v", c, p.Review[c], m)
		}
	}
	if !p.DP.Set || p.DP.ClipNorm != 1.0 || p.DP.NoiseMultiplier != 1.1 || p.DP.Delta != 1e-5 {
		t.Errorf("dp = %+v", p.DP)
	}
	if b, ok := p.Budgets["6f9619ff-8b86-d011-b42d-00c04fc964ff"]; !ok || b.Epsilon != 8 || b.Delta != 1e-5 {
		t.Errorf("budgets = %+v", p.Budgets)
	}
	if len(p.Images) != 1 || len(p.Digest) != 64 || p.Source != "SITE_POLICY_FILE=testdata/site.toml" {
		t.Errorf("images %v digest %q source %q", p.Images, p.Digest, p.Source)
	}
	dp, err := p.Disclosure(10)
	if err != nil || dp.Floor() != 15 || dp.Rounding() != 5 {
		t.Fatalf("Disclosure = %v %v", dp, err)
	}
}

func TestLoadDefaults(t *testing.T) {
	t.Parallel()
	p, err := Load("", 10)
	if err != nil {
		t.Fatal(err)
	}
	if p.Floor != 0 || p.Rounding != 0 || p.Expiry != DefaultExpiry || len(p.Review) != len(Channels) || p.Review[FLWeights] != Release {
		t.Fatalf("defaults = %+v", p)
	}
	if dp, _ := p.Disclosure(10); dp.Floor() != 10 {
		t.Fatalf("default floor = %d", dp.Floor())
	}
	if _, err := Load(filepath.Join(t.TempDir(), "missing.toml"), 10); err == nil || !strings.Contains(err.Error(), "cannot read") {
		t.Fatalf("missing file: %v", err)
	}
}

func TestParseReportsEveryProblemWithItsLine(t *testing.T) {
	t.Parallel()
	doc := `[disclosure]
floor = 5
rounding = -5
colour = "red"

[review]
cohort_results = "maybe"
fl_weights = 3
hub_uploads = "hold"
expiry = "soon"

[dp]
clip_norm = "big"
delta = 1.5
sigma = 1

[budget."not-a-uuid"]
epsilon = 1.0
delta = 1e-5

[budget."6f9619ff-8b86-d011-b42d-00c04fc964ff"]
epsilon = 0
delta = 1.0

[images]
allowed = ["sha256:abc", "latest"]

[extra]
x = 1
`
	_, err := Parse([]byte(doc), "site.toml", 10)
	var pe *Error
	if !errors.As(err, &pe) {
		t.Fatalf("Parse = %v, want *Error", err)
	}
	want := []struct {
		line int
		text string
	}{
		{2, "below COHORT_QUERY_THRESHOLD 10"},
		{3, "rounding must be 0"},
		{4, `unknown key "colour"`},
		{7, `unknown mode "maybe"`},
		{8, "fl_weights must be a string"},
		{9, `unknown channel "hub_uploads"`},
		{10, "positive duration"},
		{13, "clip_norm must be a number"},
		{14, "dp.delta must be in (0, 1)"},
		{15, `unknown key "sigma"`},
		{17, "must be a UUID"},
		{22, "epsilon must be positive"},
		{23, "delta must be in (0, 1)"},
		{26, "images.allowed[0]"},
		{26, "images.allowed[1]"},
		{28, `unknown top-level key "extra"`},
	}
	if len(pe.Problems) != len(want) {
		t.Fatalf("%d problems, want %d:\n%v", len(pe.Problems), len(want), err)
	}
	for i, w := range want {
		got := pe.Problems[i]
		if got.Line != w.line || !strings.Contains(got.Message, w.text) {
			t.Errorf("problem %d = line %d %q, want line %d containing %q", i, got.Line, got.Message, w.line, w.text)
		}
	}
	if !strings.HasPrefix(err.Error(), "site policy site.toml: line 2: ") {
		t.Errorf("error text = %q", err)
	}
}

func TestParseRejects(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name, doc, want string
		line            int
	}{
		{"syntax", "[review]\nx = = 1\n", "invalid TOML", 2},
		{"table expected", "review = \"hold\"\n", "review must be a table", 1},
		{"budget missing delta", "[budget.\"6f9619ff-8b86-d011-b42d-00c04fc964ff\"]\nepsilon = 2.0\n", "delta is required", 1},
		{"floor as float", "[disclosure]\nfloor = 12.5\n", "floor must be an integer, got a float", 2},
		{"images not array", "[images]\nallowed = \"sha256:x\"\n", "must be an array", 2},
		{"digest upper case", "[images]\nallowed = [\"sha256:" + strings.Repeat("A", 64) + "\"]\n", "lower-case hex", 2},
		{"nan", "[dp]\nnoise_multiplier = nan\n", "finite", 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := Parse([]byte(tc.doc), "f", 10)
			var pe *Error
			if !errors.As(err, &pe) || len(pe.Problems) != 1 || pe.Problems[0].Line != tc.line || !strings.Contains(pe.Problems[0].Message, tc.want) {
				t.Fatalf("Parse = %v, want line %d %q", err, tc.line, tc.want)
			}
		})
	}
}

func TestParseAccepts(t *testing.T) {
	t.Parallel()
	cases := []struct{ name, doc string }{
		{"empty", ""},
		{"floor equal to threshold, rounding off", "[disclosure]\nfloor = 10\nrounding = 0\n"},
		{"integer numbers in dp", "[dp]\nclip_norm = 2\nnoise_multiplier = 0\ndelta = 0.001\n"},
		{"access only", "[[access.rule]]\nid = \"x\"\n[fl_privacy]\nk = 1\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Parse([]byte(tc.doc), "f", 10); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestReviewEnvOnlyTightens(t *testing.T) {
	t.Parallel()
	file, err := Parse([]byte("[review]\ncohort_results = \"refuse\"\nfl_metrics = \"hold\"\n"), "f", 10)
	if err != nil {
		t.Fatal(err)
	}
	env, err := ParseReview(" cohort_results=release, fl_metrics=refuse,fl_weights=hold ,")
	if err != nil {
		t.Fatal(err)
	}
	got := file.WithReview(env)
	want := map[Channel]Mode{CohortResults: Refuse, FLMetrics: Refuse, FLWeights: Hold, TaskResult: Release, ImagingStatus: Release}
	for c, m := range want {
		if got.Review[c] != m {
			t.Errorf("%s = %v, want %v", c, got.Review[c], m)
		}
	}
	if file.Review[FLMetrics] != Hold {
		t.Error("WithReview changed the original policy")
	}
	_, err = ParseReview("cohort_results=hold,uploads=hold,fl_metrics=maybe,oops")
	var pe *Error
	if !errors.As(err, &pe) || len(pe.Problems) != 3 {
		t.Fatalf("ParseReview = %v, want 3 problems", err)
	}
	if m, err := ParseReview(""); err != nil || len(m) != 0 {
		t.Fatalf("empty EGRESS_REVIEW = %v %v", m, err)
	}
}

func TestLoadFromFile(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "site.toml")
	if err := os.WriteFile(path, []byte("[disclosure]\nfloor = 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path, 10)
	if err == nil || !strings.Contains(err.Error(), path+": line 2: disclosure.floor 3 is below") {
		t.Fatalf("Load = %v", err)
	}
}
