package policy

import (
	"strconv"
	"strings"
)

// lineIndex maps the key paths of a TOML document to the line (1-based) where
// each key, table header or array element starts. Array elements and the
// tables of an array of tables are addressed with an index segment "[n]"
// (0-based), so the second [[access.rule]] table is
// path("access", "rule", "[1]") whether it was written as a table header or as
// an inline table inside `rule = [...]`.
//
// The index is built by a lightweight structural scan that runs only on
// documents the TOML parser has already accepted; it never decodes values and
// it never fails: on anything unexpected it simply records less, and lookups
// fall back to the nearest enclosing key.
type lineIndex map[string]int

// pathKey joins key segments into a lineIndex key.
func pathKey(parts []string) string { return strings.Join(parts, "\x00") }

// elem is the index segment of the n-th element of an array.
func elem(n int) string { return "[" + strconv.Itoa(n) + "]" }

// line returns the line of the longest prefix of path that the document
// defines, or 0 when none is known.
func (ix lineIndex) line(path ...string) int {
	for n := len(path); n > 0; n-- {
		if l, ok := ix[pathKey(path[:n])]; ok {
			return l
		}
	}
	return 0
}

// setFirst records the line of path unless an earlier definition exists.
func (ix lineIndex) setFirst(path []string, line int) {
	k := pathKey(path)
	if _, ok := ix[k]; !ok {
		ix[k] = line
	}
}

// indexLines scans a TOML document and returns its lineIndex.
func indexLines(src []byte) lineIndex {
	s := &lineScanner{src: src, line: 1, ix: lineIndex{}, arrays: map[string]int{}}
	s.document()
	return s.ix
}

type lineScanner struct {
	src    []byte
	i      int
	line   int
	ix     lineIndex
	table  []string       // path of the current [table] or [[array]] element
	arrays map[string]int // resolved path of each array of tables → current index
}

func (s *lineScanner) eof() bool  { return s.i >= len(s.src) }
func (s *lineScanner) peek() byte { return s.src[s.i] }

func (s *lineScanner) hasPrefix(p string) bool {
	return strings.HasPrefix(string(s.src[s.i:min(len(s.src), s.i+len(p))]), p)
}

// advance moves past one byte, counting lines.
func (s *lineScanner) advance() {
	if s.src[s.i] == '\n' {
		s.line++
	}
	s.i++
}

// skipBlank skips spaces and tabs, and also newlines and comments when
// multiline is set.
func (s *lineScanner) skipBlank(multiline bool) {
	for !s.eof() {
		switch c := s.peek(); {
		case c == ' ' || c == '\t' || c == '\r':
			s.i++
		case multiline && c == '\n':
			s.advance()
		case multiline && c == '#':
			s.skipComment()
		default:
			return
		}
	}
}

func (s *lineScanner) skipComment() {
	for !s.eof() && s.peek() != '\n' {
		s.i++
	}
}

func (s *lineScanner) document() {
	for {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		start := s.i
		if s.peek() == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		// Rest of the line: trailing blanks and an optional comment.
		s.skipBlank(false)
		if !s.eof() && s.peek() == '#' {
			s.skipComment()
		}
		if s.i == start { // never loop without progress
			s.advance()
		}
	}
}

// resolve turns raw key parts into a path with the current index of every
// array of tables it passes through.
func (s *lineScanner) resolve(parts []string) []string {
	var out []string
	for _, p := range parts {
		out = append(out, p)
		if n, ok := s.arrays[pathKey(out)]; ok {
			out = append(out, elem(n))
		}
	}
	return out
}

func (s *lineScanner) header() {
	line := s.line
	array := s.hasPrefix("[[")
	if array {
		s.i += 2
	} else {
		s.i++
	}
	parts := s.key()
	s.skipBlank(false)
	for n := 0; n < 2 && !s.eof() && s.peek() == ']'; n++ {
		s.i++
	}
	if len(parts) == 0 {
		return
	}
	path := s.resolve(parts[:len(parts)-1])
	path = append(path, parts[len(parts)-1])
	if array {
		k := pathKey(path)
		n, seen := s.arrays[k]
		if seen {
			n++
		}
		s.arrays[k] = n
		s.ix.setFirst(path, line)
		path = append(path, elem(n))
		s.ix[pathKey(path)] = line
	} else {
		if n, ok := s.arrays[pathKey(path)]; ok { // [a] naming an array: invalid, be safe
			path = append(path, elem(n))
		}
		s.ix.setFirst(path, line)
	}
	s.table = path
}

// keyValue scans `key = value` inside the table at base.
func (s *lineScanner) keyValue(base []string) {
	line := s.line
	parts := s.key()
	if len(parts) == 0 {
		return
	}
	path := append(append([]string(nil), base...), parts...)
	for n := len(base) + 1; n < len(path); n++ {
		s.ix.setFirst(path[:n], line)
	}
	s.ix[pathKey(path)] = line
	s.skipBlank(false)
	if s.eof() || s.peek() != '=' {
		return
	}
	s.i++
	s.skipBlank(false)
	s.value(path)
}

// key scans a possibly dotted key and returns its decoded parts.
func (s *lineScanner) key() []string {
	var parts []string
	for {
		s.skipBlank(false)
		if s.eof() {
			return parts
		}
		switch c := s.peek(); {
		case c == '"':
			start := s.i
			s.basicString()
			raw := string(s.src[start:s.i])
			if v, err := strconv.Unquote(raw); err == nil {
				parts = append(parts, v)
			} else {
				parts = append(parts, strings.Trim(raw, `"`))
			}
		case c == '\'':
			s.i++
			start := s.i
			for !s.eof() && s.peek() != '\'' && s.peek() != '\n' {
				s.i++
			}
			parts = append(parts, string(s.src[start:s.i]))
			if !s.eof() && s.peek() == '\'' {
				s.i++
			}
		case isBareKeyByte(c):
			start := s.i
			for !s.eof() && isBareKeyByte(s.peek()) {
				s.i++
			}
			parts = append(parts, string(s.src[start:s.i]))
		default:
			return parts
		}
		s.skipBlank(false)
		if s.eof() || s.peek() != '.' {
			return parts
		}
		s.i++
	}
}

func isBareKeyByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value scans one value; arrays and inline tables are indexed element by
// element under path.
func (s *lineScanner) value(path []string) {
	if s.eof() {
		return
	}
	switch {
	case s.hasPrefix(`"""`):
		s.multilineString('"')
	case s.hasPrefix(`'''`):
		s.multilineString('\'')
	case s.peek() == '"':
		s.basicString()
	case s.peek() == '\'':
		s.i++
		for !s.eof() && s.peek() != '\'' && s.peek() != '\n' {
			s.i++
		}
		if !s.eof() && s.peek() == '\'' {
			s.i++
		}
	case s.peek() == '[':
		s.array(path)
	case s.peek() == '{':
		s.inlineTable(path)
	default: // number, boolean, date-time: up to a delimiter
		for !s.eof() && !strings.ContainsRune(",]}#\n", rune(s.peek())) {
			s.i++
		}
	}
}

func (s *lineScanner) array(path []string) {
	s.i++ // [
	for n := 0; ; n++ {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		if s.peek() == ']' {
			s.i++
			return
		}
		start := s.i
		el := append(append([]string(nil), path...), elem(n))
		s.ix[pathKey(el)] = s.line
		s.value(el)
		s.skipBlank(true)
		if !s.eof() && s.peek() == ',' {
			s.i++
		} else if s.i == start && !s.eof() {
			s.advance()
		}
	}
}

func (s *lineScanner) inlineTable(path []string) {
	s.i++ // {
	for {
		s.skipBlank(true)
		if s.eof() {
			return
		}
		if s.peek() == '}' {
			s.i++
			return
		}
		start := s.i
		s.keyValue(path)
		s.skipBlank(true)
		if !s.eof() && s.peek() == ',' {
			s.i++
		} else if s.i == start && !s.eof() {
			s.advance()
		}
	}
}

// basicString scans a single-line "..." string, honouring escapes.
func (s *lineScanner) basicString() {
	s.i++ // opening quote
	for !s.eof() {
		switch s.peek() {
		case '\\':
			s.i++
			if !s.eof() && s.peek() != '\n' {
				s.i++
			}
		case '"':
			s.i++
			return
		case '\n':
			return
		default:
			s.i++
		}
	}
}

// multilineString scans a multi-line basic or literal string (delimited
// by three quotes q), counting the lines it spans.
func (s *lineScanner) multilineString(q byte) {
	delim := strings.Repeat(string(q), 3)
	s.i += 3
	for !s.eof() {
		if q == '"' && s.peek() == '\\' {
			s.advance()
			if !s.eof() {
				s.advance()
			}
			continue
		}
		if s.hasPrefix(delim) {
			s.i += 3
			// Up to two further quotes belong to the content.
			for n := 0; n < 2 && !s.eof() && s.peek() == q; n++ {
				s.i++
			}
			return
		}
		s.advance()
	}
}
