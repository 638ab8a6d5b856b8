package xnat

import (
	"fmt"
	"net/url"
	"strings"
)

// ValidSegment reports whether s is a safe single identifier for an XNAT URL
// and a file name: non-empty, not "." or "..", and made only of RFC 3986
// unreserved characters [A-Za-z0-9._~-]. FLIP applies it to accession, scan
// and resource ids before any XNAT call.
func ValidSegment(s string) bool {
	if s == "" || s == "." || s == ".." {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !unreserved(s[i]) {
			return false
		}
	}
	return true
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

// escapeSegment percent-encodes every byte of s that is not unreserved, "/"
// included.
func escapeSegment(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if unreserved(c) {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}

// url builds base + "/" + escaped segments + "?" + query, refusing empty and
// dot segments.
func (cl *Client) url(segments []string, query url.Values) (string, error) {
	var b strings.Builder
	b.WriteString(strings.TrimRight(cl.base.String(), "/"))
	for _, s := range segments {
		if s == "" || s == "." || s == ".." {
			return "", fmt.Errorf("%w: %q", ErrInvalidSegment, s)
		}
		b.WriteByte('/')
		b.WriteString(escapeSegment(s))
	}
	if len(query) > 0 {
		b.WriteByte('?')
		b.WriteString(query.Encode())
	}
	return b.String(), nil
}
