package sitepolicy

import (
	"strconv"
	"strings"
)

// lines maps the dotted key paths of a TOML document ("review.fl_weights",
// `budget.<uuid>.epsilon`) to the line where each is first written. It reads
// the shapes the site policy uses — [table] and [a."b"] headers, key = value
// lines, dotted keys — and is only used to put line numbers on problems: a
// path it cannot place gets line 0.
type lines map[string]int

func (l lines) line(path ...string) int { return l[strings.Join(path, "\x00")] }

func locate(src string) lines {
	l := lines{}
	var table []string
	inMulti := ""
	for n, raw := range strings.Split(src, "\n") {
		s := strings.TrimSpace(raw)
		if inMulti != "" {
			if strings.Contains(s, inMulti) {
				inMulti = ""
			}
			continue
		}
		if s == "" || s[0] == '#' {
			continue
		}
		if strings.HasPrefix(s, "[") {
			s = strings.TrimPrefix(strings.TrimPrefix(s, "["), "[")
			end := strings.Index(s, "]")
			if end < 0 {
				continue
			}
			table = splitKey(s[:end])
			l.set(table, n+1)
			continue
		}
		eq := keyEnd(s)
		if eq < 0 {
			continue
		}
		key := append(append([]string{}, table...), splitKey(s[:eq])...)
		l.set(key, n+1)
		rest := strings.TrimSpace(s[eq+1:])
		for _, q := range []string{`"""`, `'''`} {
			if strings.HasPrefix(rest, q) && !strings.Contains(rest[3:], q) {
				inMulti = q
			}
		}
	}
	return l
}

func (l lines) set(path []string, line int) {
	for i := 1; i <= len(path); i++ {
		k := strings.Join(path[:i], "\x00")
		if _, ok := l[k]; !ok {
			l[k] = line
		}
	}
}

// keyEnd returns the index of the '=' ending the key part of s, skipping
// quoted segments, or -1.
func keyEnd(s string) int {
	var quote byte
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else if c == '\\' && quote == '"' {
				i++
			}
		case c == '"' || c == '\'':
			quote = c
		case c == '=':
			return i
		}
	}
	return -1
}

// splitKey splits a (possibly dotted, possibly quoted) TOML key.
func splitKey(s string) []string {
	var out []string
	s = strings.TrimSpace(s)
	for s != "" {
		var seg string
		switch s[0] {
		case '"':
			end := 1
			for end < len(s) && s[end] != '"' {
				if s[end] == '\\' {
					end++
				}
				end++
			}
			if end >= len(s) {
				return append(out, s)
			}
			if u, err := strconv.Unquote(s[:end+1]); err == nil {
				seg = u
			} else {
				seg = s[1:end]
			}
			s = s[end+1:]
		case '\'':
			end := strings.IndexByte(s[1:], '\'')
			if end < 0 {
				return append(out, s)
			}
			seg, s = s[1:end+1], s[end+2:]
		default:
			end := strings.IndexByte(s, '.')
			if end < 0 {
				end = len(s)
			}
			seg, s = strings.TrimSpace(s[:end]), s[end:]
		}
		out = append(out, seg)
		s = strings.TrimSpace(s)
		s = strings.TrimPrefix(s, ".")
		s = strings.TrimSpace(s)
	}
	return out
}
