package importer

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"unicode/utf8"
)

// MaxAccessionLen is the longest accession number accepted. DICOM limits an
// AccessionNumber (VR SH) to 16 characters; the bound only keeps garbage
// input out of the state file.
const MaxAccessionLen = 64

// maxProjectLen bounds a project id (it is part of every state key).
const maxProjectLen = 256

// ValidAccession reports whether s can be imported: a single RFC 3986 path
// segment of unreserved characters ([A-Za-z0-9._~-]+), not "." or "..", at
// most MaxAccessionLen bytes. Other accessions end as queue_failed.
func ValidAccession(s string) bool {
	if s == "" || s == "." || s == ".." || len(s) > MaxAccessionLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// checkProject validates a project id.
func checkProject(project string) error {
	if project == "" || len(project) > maxProjectLen || !utf8.ValidString(project) {
		return fmt.Errorf("%w", ErrInvalidProject)
	}
	for i := 0; i < len(project); i++ {
		if project[i] == 0 {
			return fmt.Errorf("%w", ErrInvalidProject)
		}
	}
	return nil
}

// accessionKey is the name an accession is stored under: the accession
// itself when valid, otherwise "!" and the hex sha256 of it (no valid
// accession starts with "!", and arbitrary input never reaches the file).
func accessionKey(accession string) string {
	if ValidAccession(accession) {
		return accession
	}
	sum := sha256.Sum256([]byte(accession))
	return "!" + hex.EncodeToString(sum[:])
}

// hashAccession is the form an accession takes in log lines: the first 12
// hex digits of its sha256.
func hashAccession(accession string) string {
	sum := sha256.Sum256([]byte(accession))
	return hex.EncodeToString(sum[:])[:12]
}

// selectStudy applies FLIP's exact-accession rule to the PACS answer: only
// studies whose accession number equals accession exactly (and that carry a
// study UID) count, the same study listed twice counts once; none is
// ReasonNotFound, more than one is ReasonAmbiguous, and exactly one is used.
func selectStudy(accession string, matches []Match) (Match, Reason) {
	var chosen Match
	seen := map[string]bool{}
	for _, m := range matches {
		if m.AccessionNumber != accession || m.StudyUID == "" || seen[m.StudyUID] {
			continue
		}
		seen[m.StudyUID] = true
		chosen = m
	}
	switch len(seen) {
	case 0:
		return Match{}, ReasonNotFound
	case 1:
		return chosen, ""
	default:
		return Match{}, ReasonAmbiguous
	}
}
