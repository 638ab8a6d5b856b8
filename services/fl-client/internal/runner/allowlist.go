package runner

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/distribution/reference"
)

// imageRef is an image reference pinned by digest: a repository (""
// for a bare digest) and the digest "sha256:<hex>".
type imageRef struct {
	name   string
	digest string
}

func (r imageRef) String() string {
	if r.name == "" {
		return r.digest
	}
	return r.name + "@" + r.digest
}

// parsePinned parses "repo@sha256:<hex>" (a tag beside the digest is
// ignored) or a bare "sha256:<hex>". A reference without a digest is refused.
func parsePinned(s string) (imageRef, error) {
	if strings.HasPrefix(s, "sha256:") {
		if !isSHA256(strings.TrimPrefix(s, "sha256:")) {
			return imageRef{}, fmt.Errorf("%q is not a sha256 digest", s)
		}
		return imageRef{digest: s}, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("parse image reference %q: %w", s, err)
	}
	canonical, ok := named.(reference.Canonical)
	if !ok {
		return imageRef{}, fmt.Errorf("image %q is not pinned by digest (repo@sha256:<hex>)", s)
	}
	d := canonical.Digest()
	if d.Algorithm() != "sha256" {
		return imageRef{}, fmt.Errorf("image %q: digest algorithm %s, want sha256", s, d.Algorithm())
	}
	return imageRef{name: named.Name(), digest: d.String()}, nil
}

func isSHA256(h string) bool {
	if len(h) != 64 {
		return false
	}
	for _, c := range h {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// Allowlist is the site's list of the images container jobs may run.
type Allowlist struct {
	refs []imageRef
}

// ParseAllowlist parses entries, each "repo@sha256:<hex>" or a bare
// "sha256:<hex>" (an image id or a manifest digest); every bad entry is
// reported.
func ParseAllowlist(entries []string) (Allowlist, error) {
	var (
		a    Allowlist
		errs []error
	)
	for _, e := range entries {
		e = strings.TrimSpace(e)
		if e == "" {
			continue
		}
		r, err := parsePinned(e)
		if err != nil {
			errs = append(errs, fmt.Errorf("allowlist entry: %w", err))
			continue
		}
		a.refs = append(a.refs, r)
	}
	return a, errors.Join(errs...)
}

// Len is the number of entries.
func (a Allowlist) Len() int { return len(a.refs) }

// allows reports whether r may run: an entry has its digest and, when
// both name a repository, the same one. The digest is what identifies the
// image; a repository only narrows an entry.
func (a Allowlist) allows(r imageRef) bool {
	return slices.ContainsFunc(a.refs, func(e imageRef) bool {
		return e.digest == r.digest && (e.name == "" || r.name == "" || e.name == r.name)
	})
}

// matchesLocal reports whether the local image with id and repoDigests is
// the one r pins: its id is r's digest, or one of its repository digests is
// r (any repository's, for a bare digest).
func (r imageRef) matchesLocal(id string, repoDigests []string) bool {
	if id == r.digest {
		return true
	}
	for _, rd := range repoDigests {
		l, err := parsePinned(rd)
		if err != nil {
			continue
		}
		if l.digest == r.digest && (r.name == "" || l.name == r.name) {
			return true
		}
	}
	return false
}
