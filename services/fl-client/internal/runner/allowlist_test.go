package runner

import (
	"strings"
	"testing"
)

func TestAllowlist(t *testing.T) {
	t.Parallel()
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	a, err := ParseAllowlist([]string{"registry.example/flip/job@" + d1, " " + d2 + " ", ""})
	if err != nil || a.Len() != 2 {
		t.Fatalf("ParseAllowlist = %d entries, %v", a.Len(), err)
	}
	for _, tc := range []struct {
		image string
		want  bool
	}{
		{"registry.example/flip/job@" + d1, true},
		{"registry.example/flip/job:v1@" + d1, true}, // the tag is not what is pinned
		{d1, true},
		{"registry.example/other@" + d1, false},
		{"registry.example/any@" + d2, true}, // a bare entry allows its digest from anywhere
		{"busybox@" + d2, true},
		{"registry.example/flip/job@sha256:" + strings.Repeat("3", 64), false},
	} {
		ref, err := parsePinned(tc.image)
		if err != nil {
			t.Fatalf("parsePinned(%q): %v", tc.image, err)
		}
		if got := a.allows(ref); got != tc.want {
			t.Errorf("allows(%s) = %v, want %v", tc.image, got, tc.want)
		}
	}
	for _, bad := range []string{"registry.example/flip/job:latest", "registry.example/flip/job", "sha256:abc",
		"sha256:" + strings.Repeat("G", 64), "Bad Name@" + d1} {
		if _, err := parsePinned(bad); err == nil {
			t.Errorf("parsePinned(%q) accepted", bad)
		}
	}
	if _, err := ParseAllowlist([]string{"ok@" + d1, "job:latest", "sha256:12"}); err == nil ||
		!strings.Contains(err.Error(), "job:latest") || !strings.Contains(err.Error(), "sha256:12") {
		t.Fatalf("ParseAllowlist of bad entries: %v, want both named", err)
	}
}

func TestMatchesLocal(t *testing.T) {
	t.Parallel()
	d1 := "sha256:" + strings.Repeat("1", 64)
	d2 := "sha256:" + strings.Repeat("2", 64)
	for _, tc := range []struct {
		image       string
		id          string
		repoDigests []string
		want        bool
	}{
		{"job@" + d1, d1, nil, true},                                     // a locally built image: its id
		{"job@" + d1, d2, []string{"docker.io/library/job@" + d1}, true}, // a pulled image: its repository digest
		{d1, d2, []string{"registry.example/x@" + d1}, true},
		{"job@" + d1, d2, []string{"other@" + d1}, false},
		{"job@" + d1, d2, []string{"job@" + d2}, false},
		{d1, d2, nil, false},
	} {
		ref, err := parsePinned(tc.image)
		if err != nil {
			t.Fatal(err)
		}
		if got := ref.matchesLocal(tc.id, tc.repoDigests); got != tc.want {
			t.Errorf("%s matchesLocal(%s, %q) = %v, want %v", tc.image, tc.id[:12], tc.repoDigests, got, tc.want)
		}
	}
}
