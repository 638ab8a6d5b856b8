package snapshot

import (
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"
	"unicode/utf16"
	"unicode/utf8"
)

// visitError carries an error returned by a caller's id callback through
// readRecord, so it is not mistaken for a malformed record.
type visitError struct{ err error }

func (e visitError) Error() string { return e.err.Error() }
func (e visitError) Unwrap() error { return e.err }

// readRecord parses and validates a whole record from r in one streaming
// pass, holding at most one string of it at a time. The ids of the list of
// kind (0: none) are passed to visit as they are read; the slice is only
// valid during the call.
//
// The parser accepts standard JSON (any key order, any whitespace, \u
// escapes as written by other JSON encoders) but only the shape of a record:
// a flat object whose values are strings, non-negative integers, lists of
// strings and null, each where the record format puts it. Anything else is
// an error, so no value ever needs to be skipped.
func readRecord(r io.Reader, kind Kind, visit func([]byte) error) (Meta, error) {
	rd := newRecordReader(r)
	var m Meta
	if err := rd.expect('{', "the record is not a JSON object"); err != nil {
		return m, err
	}
	seen := make(map[string]bool, len(recordKeys))
	c, err := rd.next()
	if err != nil {
		return m, err
	}
	for c != '}' {
		if c != '"' {
			return m, errors.New("expected a key")
		}
		if err := rd.readString(); err != nil {
			return m, err
		}
		key := string(rd.sbuf)
		if seen[key] {
			return m, fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if err := rd.expect(':', "expected ':' after a key"); err != nil {
			return m, err
		}
		if err := rd.field(&m, key, kind, visit); err != nil {
			return m, err
		}
		if c, err = rd.next(); err != nil {
			return m, err
		}
		switch c {
		case ',':
			if c, err = rd.next(); err != nil {
				return m, err
			}
			if c == '}' {
				return m, errors.New("trailing comma")
			}
		case '}':
		default:
			return m, errors.New("expected ',' or '}'")
		}
	}
	if end, err := rd.atEOF(); err != nil {
		return m, err
	} else if !end {
		return m, errors.New("data after the end of the record")
	}
	for _, k := range recordKeys {
		if !seen[k] {
			return m, fmt.Errorf("missing key %q", k)
		}
	}
	if strings.TrimSpace(m.Query) == "" {
		return m, errors.New("blank query")
	}
	if !m.HasPersonIDs && !m.HasAccessionIDs {
		return m, errors.New("both id lists are null")
	}
	return m, nil
}

// field reads the value of one key into m.
func (rd *recordReader) field(m *Meta, key string, kind Kind, visit func([]byte) error) (err error) {
	switch key {
	case keyQuery:
		m.Query, err = rd.str(key)
	case keyQueryHash:
		m.QueryHash, err = rd.str(key)
	case keyPersons:
		var fn func([]byte) error
		if kind == Persons {
			fn = visit
		}
		m.HasPersonIDs, m.PersonCount, err = rd.ids(key, fn)
	case keyAccessions:
		var fn func([]byte) error
		if kind == Accessions {
			fn = visit
		}
		m.HasAccessionIDs, m.AccessionCount, err = rd.ids(key, fn)
	case keyRowCount:
		m.RowCount, err = rd.count(key)
	case keySubjectCount:
		m.SubjectCount, err = rd.count(key)
	case keyColumns:
		m.Columns, err = rd.strList(key)
	case keyCreatedAt:
		var s string
		if s, err = rd.str(key); err != nil {
			return err
		}
		t, perr := time.Parse(time.RFC3339Nano, s)
		if perr != nil {
			return fmt.Errorf("%s is not an RFC 3339 time", key)
		}
		m.CreatedAt = t.UTC()
	case keyFormatVersion:
		var v int64
		if v, err = rd.count(key); err == nil && v != FormatVersion {
			err = fmt.Errorf("unsupported %s %d (want %d)", key, v, FormatVersion)
		}
	default:
		err = fmt.Errorf("unknown key %q", key)
	}
	return err
}

// recordReader reads the tokens of a record from a stream through its own
// fixed buffer.
type recordReader struct {
	src      io.Reader
	buf      []byte
	pos, end int
	rerr     error  // sticky error of src (io.EOF at the end)
	sbuf     []byte // the last string read; reused
}

func newRecordReader(r io.Reader) *recordReader {
	return &recordReader{src: r, buf: make([]byte, 64<<10)}
}

// fill refills an exhausted buffer; false means no more bytes.
func (rd *recordReader) fill() bool {
	for rd.rerr == nil {
		n, err := rd.src.Read(rd.buf)
		rd.pos, rd.end, rd.rerr = 0, n, err
		if n > 0 {
			return true
		}
	}
	return false
}

// fail reports why no byte could be read: a truncated record or the
// stream's error.
func (rd *recordReader) fail() error {
	if rd.rerr == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return rd.rerr
}

func (rd *recordReader) readByte() (byte, error) {
	if rd.pos == rd.end && !rd.fill() {
		return 0, rd.fail()
	}
	c := rd.buf[rd.pos]
	rd.pos++
	return c, nil
}

// peekByte returns the next byte without consuming it; false at the end.
func (rd *recordReader) peekByte() (byte, bool) {
	if rd.pos == rd.end && !rd.fill() {
		return 0, false
	}
	return rd.buf[rd.pos], true
}

// next consumes and returns the next byte that is not JSON whitespace.
func (rd *recordReader) next() (byte, error) {
	for {
		if rd.pos == rd.end && !rd.fill() {
			return 0, rd.fail()
		}
		c := rd.buf[rd.pos]
		rd.pos++
		switch c {
		case ' ', '\t', '\n', '\r':
			continue
		}
		return c, nil
	}
}

// atEOF reports whether only whitespace is left.
func (rd *recordReader) atEOF() (bool, error) {
	_, err := rd.next()
	if err == io.ErrUnexpectedEOF {
		return true, nil
	}
	return false, err
}

func (rd *recordReader) expect(want byte, msg string) error {
	c, err := rd.next()
	if err != nil {
		return err
	}
	if c != want {
		return errors.New(msg)
	}
	return nil
}

// literal consumes the rest of a literal whose first byte was read.
func (rd *recordReader) literal(rest string) error {
	for i := 0; i < len(rest); i++ {
		c, err := rd.readByte()
		if err != nil {
			return err
		}
		if c != rest[i] {
			return errors.New("invalid literal")
		}
	}
	return nil
}

// readString reads a string whose opening quote was consumed into rd.sbuf.
func (rd *recordReader) readString() error {
	rd.sbuf = rd.sbuf[:0]
	for {
		if rd.pos == rd.end && !rd.fill() {
			return rd.fail()
		}
		// Copy the plain run up to the next quote, escape or control byte.
		chunk := rd.buf[rd.pos:rd.end]
		n := 0
		for n < len(chunk) && chunk[n] != '"' && chunk[n] != '\\' && chunk[n] >= 0x20 {
			n++
		}
		rd.sbuf = append(rd.sbuf, chunk[:n]...)
		rd.pos += n
		if n == len(chunk) {
			continue
		}
		rd.pos++
		switch c := chunk[n]; c {
		case '"':
			if !utf8.Valid(rd.sbuf) {
				return errors.New("a string is not valid UTF-8")
			}
			return nil
		case '\\':
			if err := rd.escape(); err != nil {
				return err
			}
		default:
			return errors.New("a control character in a string")
		}
	}
}

func (rd *recordReader) escape() error {
	c, err := rd.readByte()
	if err != nil {
		return err
	}
	switch c {
	case '"', '\\', '/':
		rd.sbuf = append(rd.sbuf, c)
	case 'b':
		rd.sbuf = append(rd.sbuf, '\b')
	case 'f':
		rd.sbuf = append(rd.sbuf, '\f')
	case 'n':
		rd.sbuf = append(rd.sbuf, '\n')
	case 'r':
		rd.sbuf = append(rd.sbuf, '\r')
	case 't':
		rd.sbuf = append(rd.sbuf, '\t')
	case 'u':
		r, err := rd.hex4()
		if err != nil {
			return err
		}
		if utf16.IsSurrogate(r) {
			// A UTF-16 surrogate pair: \uD8xx\uDCxx.
			if err := rd.literal(`\u`); err != nil {
				return errors.New("an unpaired surrogate in a string")
			}
			lo, err := rd.hex4()
			if err != nil {
				return err
			}
			if r = utf16.DecodeRune(r, lo); r == utf8.RuneError {
				return errors.New("an invalid surrogate pair in a string")
			}
		}
		rd.sbuf = utf8.AppendRune(rd.sbuf, r)
	default:
		return errors.New("an invalid escape in a string")
	}
	return nil
}

func (rd *recordReader) hex4() (rune, error) {
	var r rune
	for range 4 {
		c, err := rd.readByte()
		if err != nil {
			return 0, err
		}
		var d byte
		switch {
		case c >= '0' && c <= '9':
			d = c - '0'
		case c >= 'a' && c <= 'f':
			d = c - 'a' + 10
		case c >= 'A' && c <= 'F':
			d = c - 'A' + 10
		default:
			return 0, errors.New("an invalid \\u escape in a string")
		}
		r = r<<4 | rune(d)
	}
	return r, nil
}

// str reads a string value.
func (rd *recordReader) str(key string) (string, error) {
	c, err := rd.next()
	if err != nil {
		return "", err
	}
	if c != '"' {
		return "", fmt.Errorf("%s is not a string", key)
	}
	if err := rd.readString(); err != nil {
		return "", err
	}
	return string(rd.sbuf), nil
}

// count reads a non-negative integer: digits only, no sign, fraction or
// exponent (a JSON number with those is not a count).
func (rd *recordReader) count(key string) (int64, error) {
	c, err := rd.next()
	if err != nil {
		return 0, err
	}
	if c == '-' {
		return 0, fmt.Errorf("%s is negative", key)
	}
	if c < '0' || c > '9' {
		return 0, fmt.Errorf("%s is not an integer", key)
	}
	var buf [24]byte
	num := append(buf[:0], c)
	for {
		c, ok := rd.peekByte()
		if !ok || !strings.ContainsRune("0123456789.eE+-", rune(c)) {
			break
		}
		if len(num) == len(buf) {
			return 0, fmt.Errorf("%s is out of range", key)
		}
		num = append(num, c)
		rd.pos++
	}
	if len(num) > 1 && num[0] == '0' {
		return 0, fmt.Errorf("%s is not an integer", key)
	}
	n, err := strconv.ParseInt(string(num), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s is not an integer", key)
	}
	return n, nil
}

// strList reads a list of strings.
func (rd *recordReader) strList(key string) ([]string, error) {
	out := []string{}
	err := rd.list(key, func(b []byte) error {
		out = append(out, string(b))
		return nil
	})
	return out, err
}

// ids reads an id list or null, passing each id to fn (when not nil).
func (rd *recordReader) ids(key string, fn func([]byte) error) (present bool, n int64, err error) {
	c, err := rd.next()
	if err != nil {
		return false, 0, err
	}
	if c == 'n' {
		return false, 0, rd.literal("ull")
	}
	if c != '[' {
		return false, 0, fmt.Errorf("%s is neither a list nor null", key)
	}
	rd.pos-- // give the '[' back to list
	err = rd.list(key, func(b []byte) error {
		n++
		if fn != nil {
			if err := fn(b); err != nil {
				return visitError{err}
			}
		}
		return nil
	})
	return err == nil, n, err
}

// list reads a list of strings, passing each to fn.
func (rd *recordReader) list(key string, fn func([]byte) error) error {
	c, err := rd.next()
	if err != nil {
		return err
	}
	if c != '[' {
		return fmt.Errorf("%s is not a list", key)
	}
	if c, err = rd.next(); err != nil {
		return err
	}
	if c == ']' {
		return nil
	}
	for {
		if c != '"' {
			return fmt.Errorf("%s holds a value that is not a string", key)
		}
		if err := rd.readString(); err != nil {
			return err
		}
		if err := fn(rd.sbuf); err != nil {
			return err
		}
		if c, err = rd.next(); err != nil {
			return err
		}
		switch c {
		case ']':
			return nil
		case ',':
			if c, err = rd.next(); err != nil {
				return err
			}
		default:
			return fmt.Errorf("%s: expected ',' or ']'", key)
		}
	}
}
