package guard

import (
	"errors"
	"os"
	"strings"
	"testing"
)

// loadCorpus reads testdata/attacks.sql.
func loadCorpus(tb testing.TB) []CorpusCase {
	tb.Helper()
	f, err := os.Open("testdata/attacks.sql")
	if err != nil {
		tb.Fatalf("open corpus: %v", err)
	}
	defer f.Close()
	cases, err := ParseCorpus(f)
	if err != nil {
		tb.Fatalf("parse corpus: %v", err)
	}
	return cases
}

// generatedAttacks are attacks too long to keep in the corpus file.
func generatedAttacks() []CorpusCase {
	return []CorpusCase{
		{Name: "over-length-padding", SQL: "SELECT * FROM person" + strings.Repeat(" ", MaxQueryLength)},
		{Name: "over-length-comment", SQL: "SELECT 1 /*" + strings.Repeat("x", MaxQueryLength) + "*/"},
		{Name: "over-length-hidden-statement", SQL: "SELECT '" + strings.Repeat("a", MaxQueryLength) + "'; DROP TABLE person"},
	}
}

func TestAttackCorpusRefused(t *testing.T) {
	cases := loadCorpus(t)
	if len(cases) < 100 {
		t.Fatalf("corpus has %d cases, want at least 100", len(cases))
	}
	cases = append(cases, generatedAttacks()...)
	seen := make(map[string]bool, len(cases))
	for _, c := range cases {
		if seen[c.Name] {
			t.Errorf("duplicate case name %q", c.Name)
		}
		seen[c.Name] = true
		t.Run(c.Name, func(t *testing.T) {
			out, err := Check(c.SQL)
			var ref *Refusal
			if !errors.As(err, &ref) {
				t.Fatalf("Check(%q) = %q, %v; want a *Refusal", c.SQL, out, err)
			}
			if strings.TrimSpace(ref.Reason) == "" {
				t.Fatalf("Check(%q): empty refusal reason", c.SQL)
			}
			if out != "" {
				t.Errorf("Check(%q) returned SQL %q with a refusal", c.SQL, out)
			}
			t.Logf("%s", ref.Reason)
		})
	}
}

func TestParseCorpus(t *testing.T) {
	in := "-- header comment\n\n" +
		"-- case: first\nSELECT 1\n\n" +
		"-- case:   second  \r\nSELECT 2 -- trailing\r\n-- a comment line inside\r\n; DROP TABLE x\r\n" +
		"-- case: last\n  SELECT 3  "
	got, err := ParseCorpus(strings.NewReader(in))
	if err != nil {
		t.Fatal(err)
	}
	want := []CorpusCase{
		{Name: "first", SQL: "SELECT 1"},
		{Name: "second", SQL: "SELECT 2 -- trailing\n-- a comment line inside\n; DROP TABLE x"},
		{Name: "last", SQL: "SELECT 3"},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d cases %q, want %d", len(got), got, len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("case %d = %q, want %q", i, got[i], want[i])
		}
	}
}

func TestParseCorpusErrors(t *testing.T) {
	cases := map[string]string{
		"sql before first case": "SELECT 1\n-- case: a\nSELECT 2",
		"case without name":     "-- case:\nSELECT 1",
		"case without sql":      "-- case: a\n\n-- case: b\nSELECT 1",
		"last case without sql": "-- case: a\nSELECT 1\n-- case: b\n  \n",
	}
	for name, in := range cases {
		t.Run(name, func(t *testing.T) {
			if got, err := ParseCorpus(strings.NewReader(in)); err == nil {
				t.Errorf("ParseCorpus(%q) = %q, want an error", in, got)
			}
		})
	}
}

func TestParseCorpusEmpty(t *testing.T) {
	got, err := ParseCorpus(strings.NewReader("-- only a header\n"))
	if err != nil || len(got) != 0 {
		t.Errorf("ParseCorpus(header only) = %q, %v; want no cases", got, err)
	}
}
