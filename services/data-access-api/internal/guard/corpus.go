package guard

import (
	"bufio"
	"fmt"
	"io"
	"strings"
)

// corpusCaseMarker starts a case in an attack corpus file.
const corpusCaseMarker = "-- case:"

// CorpusCase is one query of an attack corpus: a short name and its SQL.
type CorpusCase struct{ Name, SQL string }

// ParseCorpus reads an attack corpus. Each case starts with a line
// "-- case: <short-name>"; its SQL is every following line up to the next
// such line or the end of the input, trimmed. Other "--" lines inside a case
// belong to its SQL. Before the first case only blank lines and "--" comment
// lines may appear. A case without a name or without SQL is an error.
func ParseCorpus(r io.Reader) ([]CorpusCase, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 4*1024*1024)
	var (
		cases []CorpusCase
		cur   *CorpusCase
		body  strings.Builder
		line  int
		start int
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		cur.SQL = strings.TrimSpace(body.String())
		if cur.SQL == "" {
			return fmt.Errorf("corpus line %d: case %q has no SQL", start, cur.Name)
		}
		cases = append(cases, *cur)
		body.Reset()
		return nil
	}
	for sc.Scan() {
		line++
		text := strings.TrimSuffix(sc.Text(), "\r")
		if name, ok := strings.CutPrefix(text, corpusCaseMarker); ok {
			if err := finish(); err != nil {
				return nil, err
			}
			name = strings.TrimSpace(name)
			if name == "" {
				return nil, fmt.Errorf("corpus line %d: case without a name", line)
			}
			cur, start = &CorpusCase{Name: name}, line
			continue
		}
		if cur == nil {
			if t := strings.TrimSpace(text); t != "" && !strings.HasPrefix(t, "--") {
				return nil, fmt.Errorf("corpus line %d: SQL before the first %q line", line, corpusCaseMarker)
			}
			continue
		}
		body.WriteString(text)
		body.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read corpus: %w", err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return cases, nil
}
