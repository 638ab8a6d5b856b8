package egresscheck

import (
	"strings"
	"testing"
)

var rules = Rules{
	Senders:  []string{"statistics", "post"},
	Payloads: map[string][]string{"Response": {"handlers.go"}},
}

func TestGoodPackagePasses(t *testing.T) {
	t.Parallel()
	got, err := Check("testdata/good", rules)
	if err != nil || len(got) != 0 {
		t.Fatalf("Check = %v, %v; want no findings", got, err)
	}
}

// The check can fail: a package whose senders take raw payloads and which
// builds its payload type elsewhere is reported on every count.
func TestBadPackageIsReported(t *testing.T) {
	t.Parallel()
	got, err := Check("testdata/bad", Rules{
		Senders:  []string{"statistics", "post", "submit"},
		Payloads: rules.Payloads,
	})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"handlers.go:12:1: statistics writes an outgoing payload but neither returns nor takes disclosure.Released",
		"handlers.go:16:1: post writes an outgoing payload",
		"other.go:4:31: payload type Response built outside handlers.go",
		"sender submit not found",
	}
	if len(got) != len(want) {
		t.Fatalf("findings:\n%s", strings.Join(got, "\n"))
	}
	for _, w := range want {
		hit := false
		for _, g := range got {
			hit = hit || strings.Contains(g, w)
		}
		if !hit {
			t.Errorf("no finding contains %q in:\n%s", w, strings.Join(got, "\n"))
		}
	}
}
