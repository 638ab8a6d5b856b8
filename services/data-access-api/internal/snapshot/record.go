package snapshot

import (
	"fmt"
	"iter"
	"os"
	"strconv"
	"unicode/utf8"
)

// The keys of membership.json, in the order they are written.
const (
	keyQuery         = "query"
	keyQueryHash     = "query_hash"
	keyPersons       = "person_ids"
	keyAccessions    = "accession_ids"
	keyRowCount      = "row_count"
	keySubjectCount  = "subject_count"
	keyColumns       = "columns"
	keyCreatedAt     = "created_at"
	keyFormatVersion = "format_version"
)

// recordKeys lists every key a record must have, and no other.
var recordKeys = []string{keyQuery, keyQueryHash, keyPersons, keyAccessions, keyRowCount,
	keySubjectCount, keyColumns, keyCreatedAt, keyFormatVersion}

// timeLayout is RFC 3339 in UTC with microseconds.
const timeLayout = "2006-01-02T15:04:05.000000Z07:00"

// recordWriter streams a record as JSON (indented by one space per level)
// and enforces the size limit on every byte it accepts.
type recordWriter struct {
	f   *os.File
	buf []byte
	n   int64 // bytes accepted so far
	max int64 // 0 or less: no limit
	err error
}

func (w *recordWriter) grew(before int) {
	w.n += int64(len(w.buf) - before)
	if w.max > 0 && w.n > w.max {
		w.err = ErrTooLarge
		return
	}
	if len(w.buf) >= 60<<10 {
		w.err = w.flush()
	}
}

func (w *recordWriter) raw(s string) {
	if w.err != nil {
		return
	}
	before := len(w.buf)
	w.buf = append(w.buf, s...)
	w.grew(before)
}

func (w *recordWriter) str(s string) {
	if w.err != nil {
		return
	}
	before := len(w.buf)
	w.buf = appendJSONString(w.buf, s)
	w.grew(before)
}

func (w *recordWriter) flush() error {
	if len(w.buf) == 0 {
		return nil
	}
	_, err := w.f.Write(w.buf)
	w.buf = w.buf[:0]
	return err
}

func (w *recordWriter) record(m *Meta, persons, accessions iter.Seq2[string, error]) error {
	w.raw("{\n \"" + keyQuery + "\": ")
	w.str(m.Query)
	w.raw(",\n \"" + keyQueryHash + "\": ")
	w.str(m.QueryHash)
	w.raw(",\n \"" + keyPersons + "\": ")
	n, err := w.list(persons, Persons)
	if err != nil {
		return err
	}
	m.PersonCount = n
	w.raw(",\n \"" + keyAccessions + "\": ")
	if n, err = w.list(accessions, Accessions); err != nil {
		return err
	}
	m.AccessionCount = n
	w.raw(",\n \"" + keyRowCount + "\": " + strconv.FormatInt(m.RowCount, 10))
	w.raw(",\n \"" + keySubjectCount + "\": " + strconv.FormatInt(m.SubjectCount, 10))
	w.raw(",\n \"" + keyColumns + "\": [")
	for i, c := range m.Columns {
		if i > 0 {
			w.raw(",")
		}
		w.raw("\n  ")
		w.str(c)
	}
	if len(m.Columns) > 0 {
		w.raw("\n ")
	}
	w.raw("],\n \"" + keyCreatedAt + "\": ")
	w.str(m.CreatedAt.Format(timeLayout))
	w.raw(",\n \"" + keyFormatVersion + "\": " + strconv.Itoa(FormatVersion) + "\n}")
	return w.err
}

// list writes one id list (null for a nil sequence) and returns its length.
func (w *recordWriter) list(ids iter.Seq2[string, error], kind Kind) (int64, error) {
	if ids == nil {
		w.raw("null")
		return 0, w.err
	}
	w.raw("[")
	var (
		n    int64
		prev string
	)
	for id, err := range ids {
		if err != nil {
			return 0, fmt.Errorf("%s: %w", kind, err)
		}
		if n > 0 && id <= prev {
			return 0, fmt.Errorf("%s: %w", kind, ErrUnsorted)
		}
		if !utf8.ValidString(id) {
			return 0, fmt.Errorf("%s: an id is not valid UTF-8", kind)
		}
		if n > 0 {
			w.raw(",")
		}
		w.raw("\n  ")
		w.str(id)
		if w.err != nil {
			return 0, w.err
		}
		prev = id
		n++
	}
	if n > 0 {
		w.raw("\n ")
	}
	w.raw("]")
	return n, w.err
}

// appendJSONString appends s, which must be valid UTF-8, as a JSON string.
func appendJSONString(b []byte, s string) []byte {
	const hexDigits = "0123456789abcdef"
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c == '\r':
			b = append(b, '\\', 'r')
		case c == '\t':
			b = append(b, '\\', 't')
		case c < 0x20:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}
