package api

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/services/data-access-api/internal/snapshot"
	"github.com/flip-trust/node/shared/httpx"
)

// dataframe serves POST /cohort/dataframe: the frozen cohort's rows, from the
// query stored at approval (the client's SQL is ignored), restricted to the
// frozen membership so a cohort can shrink but never grow. Rows stream from
// the database into per-column spool files and then to the caller, so memory
// does not grow with the cohort; nothing is sent unless the served subjects
// clear the floor. The body is FLIP's column-oriented JSON object, or CSV
// when the caller asks for text/csv.
func (a *API) dataframe(w http.ResponseWriter, r *http.Request) {
	if err := a.serveDataframe(w, r); err != nil {
		httpx.WriteError(w, r, err)
	}
}

func (a *API) serveDataframe(w http.ResponseWriter, r *http.Request) error {
	ctx := r.Context()
	var in DataframeQuery
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return err
	}
	pid, m, d, err := a.frozen(ctx, in, policy.Dataframe)
	if err != nil {
		return err
	}
	log := httpx.LoggerFrom(ctx).With("project_id", pid, "query_hash", m.QueryHash[:12])
	safe, err := a.check(ctx, m.Query)
	if err != nil {
		return err
	}
	var persons, accessions *snapshot.IDSet
	if m.HasPersonIDs {
		if persons, err = a.o.Store.LoadSet(pid, snapshot.Persons); err != nil {
			log.Error("cohort snapshot unreadable", "error", err.Error())
			return httpx.NewError(http.StatusForbidden, DetailNoSnapshot)
		}
	}
	if m.HasAccessionIDs {
		if accessions, err = a.o.Store.LoadSet(pid, snapshot.Accessions); err != nil {
			log.Error("cohort snapshot unreadable", "error", err.Error())
			return httpx.NewError(http.StatusForbidden, DetailNoSnapshot)
		}
	}
	csvOut := strings.Contains(r.Header.Get("Accept"), "text/csv")
	sp, err := newSpool(a.o.SpoolDir, csvOut)
	if err != nil {
		log.Error("dataframe spool", "error", err.Error())
		return httpx.NewError(http.StatusInternalServerError, DetailQueryFailed)
	}
	defer sp.close()

	f := &filter{persons: persons, accessions: accessions}
	err = a.o.Engine.Stream(ctx, safe, m.QueryHash[:12], func(fields []FieldDescription, values []any) error {
		if sp.cols == nil {
			f.bind(fields)
			if err := sp.start(f.names(fields), fields, f.keep); err != nil {
				return err
			}
		}
		if !f.admit(values) {
			return nil
		}
		return sp.add(values)
	})
	if err != nil {
		var he *httpx.Error
		if errors.As(err, &he) {
			return he
		}
		log.Error("dataframe query failed", "error", err.Error())
		return httpx.NewError(http.StatusInternalServerError, DetailQueryFailed)
	}
	subjects := int64(f.servedPersons())
	if f.person < 0 && f.accession >= 0 {
		_, subjects, err = a.o.Engine.ImagingAccessions(ctx, f.servedAccessionList())
		if err != nil {
			subjects = 0
		}
	}
	if subjects < int64(d.EffectiveThreshold) {
		log.Warn("dataframe refused: served subjects below the disclosure floor")
		return httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	log.Info("dataframe served", "rows", sp.rows, "subjects", subjects)
	return sp.writeTo(w)
}

// filter restricts streamed rows to the frozen membership: a row is kept
// only if every frozen id column in which it has a value holds a member, and
// at least one frozen column matched. A frozen column missing from the
// result releases nothing.
type filter struct {
	persons, accessions *snapshot.IDSet
	person, accession   int // field indexes, -1 if absent
	keep                []bool
	served              []uint64 // bitset of person members served, by set index
	nServed             int
	servedAcc           map[string]bool
	blocked             bool
}

func (f *filter) bind(fields []FieldDescription) {
	f.person, f.accession = -1, -1
	f.keep = make([]bool, len(fields))
	seen := map[string]bool{}
	for i, fd := range fields {
		if seen[fd.Name] {
			continue // duplicated names keep their first column
		}
		seen[fd.Name] = true
		f.keep[i] = true
		switch fd.Name {
		case cohort.PersonColumn:
			f.person = i
		case cohort.AccessionColumn:
			f.accession = i
		}
	}
	if (f.persons == nil && f.accessions == nil) || (f.persons != nil && f.person < 0) || (f.accessions != nil && f.accession < 0) {
		f.blocked = true
	}
	if f.persons != nil {
		f.served = make([]uint64, (f.persons.Len()+63)/64)
	}
	f.servedAcc = map[string]bool{}
}

func (f *filter) names(fields []FieldDescription) []string {
	var out []string
	for i, fd := range fields {
		if f.keep[i] {
			out = append(out, fd.Name)
		}
	}
	return out
}

func (f *filter) admit(values []any) bool {
	if f.blocked {
		return false
	}
	matched := false
	personIdx := -1
	if f.persons != nil {
		if id, ok := canonicalID(values[f.person]); ok {
			idx, member := f.persons.Index(id)
			if !member {
				return false
			}
			matched, personIdx = true, idx
		}
	}
	accID := ""
	if f.accessions != nil {
		if id, ok := canonicalID(values[f.accession]); ok {
			if !f.accessions.Contains(id) {
				return false
			}
			matched, accID = true, id
		}
	}
	if !matched {
		return false
	}
	if personIdx >= 0 && f.served[personIdx/64]&(1<<(personIdx%64)) == 0 {
		f.served[personIdx/64] |= 1 << (personIdx % 64)
		f.nServed++
	}
	if f.person < 0 && accID != "" {
		f.servedAcc[accID] = true
	}
	return true
}

func (f *filter) servedPersons() int { return f.nServed }

func (f *filter) servedAccessionList() []string {
	out := make([]string, 0, len(f.servedAcc))
	for id := range f.servedAcc {
		out = append(out, id)
	}
	return out
}

// canonicalID is an id value as the frozen membership stores it.
func canonicalID(v any) (string, bool) {
	switch x := v.(type) {
	case nil:
		return "", false
	case string:
		return x, true
	case int16:
		return strconv.FormatInt(int64(x), 10), true
	case int32:
		return strconv.FormatInt(int64(x), 10), true
	case int64:
		return strconv.FormatInt(x, 10), true
	case float64:
		if x == math.Trunc(x) && !math.IsInf(x, 0) {
			return strconv.FormatInt(int64(x), 10), true
		}
		return strconv.FormatFloat(x, 'f', -1, 64), true
	case pgtype.Numeric:
		if !x.Valid {
			return "", false
		}
		b, err := x.MarshalJSON()
		return string(b), err == nil
	}
	return fmt.Sprint(v), true
}

// spool buffers admitted rows on disk: one file per column for JSON (the body
// is column-oriented), one file for CSV.
type spool struct {
	dir    string
	csv    bool
	cols   []string
	fields []FieldDescription
	keep   []bool
	files  []*os.File
	bufs   []*bufio.Writer
	cw     *csv.Writer
	rows   int64
	rec    []string
}

func newSpool(parent string, csvOut bool) (*spool, error) {
	dir, err := os.MkdirTemp(parent, "dataframe-")
	if err != nil {
		return nil, err
	}
	return &spool{dir: dir, csv: csvOut}, nil
}

func (s *spool) start(cols []string, fields []FieldDescription, keep []bool) error {
	s.cols, s.fields, s.keep = cols, fields, keep
	n := 1
	if !s.csv {
		n = len(cols)
	}
	for i := 0; i < n; i++ {
		f, err := os.OpenFile(filepath.Join(s.dir, strconv.Itoa(i)), os.O_CREATE|os.O_RDWR|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		s.files = append(s.files, f)
		s.bufs = append(s.bufs, bufio.NewWriterSize(f, 32<<10))
	}
	if s.csv {
		s.cw = csv.NewWriter(s.bufs[0])
		return s.cw.Write(cols)
	}
	return nil
}

func (s *spool) add(values []any) error {
	if s.csv {
		s.rec = s.rec[:0]
		for i, v := range values {
			if s.keep[i] {
				s.rec = append(s.rec, textValue(v, s.fields[i].DataTypeOID))
			}
		}
		s.rows++
		return s.cw.Write(s.rec)
	}
	col := 0
	for i, v := range values {
		if !s.keep[i] {
			continue
		}
		b := s.bufs[col]
		if s.rows > 0 {
			if err := b.WriteByte(','); err != nil {
				return err
			}
		}
		if _, err := b.Write(jsonValue(v, s.fields[i].DataTypeOID)); err != nil {
			return err
		}
		col++
	}
	s.rows++
	return nil
}

// writeTo sends the spooled frame. An error before the status line is
// returned; once the status is sent, a failing client only gets a truncated
// body, which nothing here can report.
func (s *spool) writeTo(w http.ResponseWriter) error {
	if s.cw != nil {
		s.cw.Flush()
		if err := s.cw.Error(); err != nil {
			return err
		}
	}
	for _, b := range s.bufs {
		if err := b.Flush(); err != nil {
			return err
		}
	}
	rc := http.NewResponseController(w)
	out := bufio.NewWriterSize(w, 64<<10)
	defer out.Flush()
	copyFile := func(f *os.File) error {
		if _, err := f.Seek(0, io.SeekStart); err != nil {
			return err
		}
		_ = rc.SetWriteDeadline(time.Now().Add(10 * time.Minute))
		_, err := io.Copy(out, f)
		return err
	}
	if s.csv {
		w.Header().Set("Content-Type", "text/csv; charset=utf-8")
		w.WriteHeader(http.StatusOK)
		if len(s.files) > 0 {
			_ = copyFile(s.files[0])
		}
		return nil
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_ = out.WriteByte('{')
	for i, name := range s.cols {
		if i > 0 {
			_ = out.WriteByte(',')
		}
		key, _ := json.Marshal(name)
		_, _ = out.Write(key)
		_, _ = out.WriteString(":[")
		if copyFile(s.files[i]) != nil {
			return nil
		}
		_ = out.WriteByte(']')
	}
	_, _ = out.WriteString("}\n")
	return nil
}

func (s *spool) close() {
	for _, f := range s.files {
		_ = f.Close()
	}
	_ = os.RemoveAll(s.dir)
}

// jsonValue encodes one value as pandas would send it.
func jsonValue(v any, oid uint32) []byte {
	switch x := v.(type) {
	case nil:
		return []byte("null")
	case float64:
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return []byte("null")
		}
	case float32:
		if math.IsNaN(float64(x)) || math.IsInf(float64(x), 0) {
			return []byte("null")
		}
	case time.Time:
		b, _ := json.Marshal(timeText(x, oid))
		return b
	case pgtype.Numeric:
		if b, err := x.MarshalJSON(); err == nil {
			return b
		}
		return []byte("null")
	case []byte:
		b, _ := json.Marshal(string(x))
		return b
	}
	b, err := json.Marshal(v)
	if err != nil {
		b, _ = json.Marshal(fmt.Sprint(v))
	}
	return b
}

// textValue is a value's CSV cell; NULL is the empty cell.
func textValue(v any, oid uint32) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case time.Time:
		return timeText(x, oid)
	case pgtype.Numeric:
		b, _ := x.MarshalJSON()
		return string(b)
	case []byte:
		return string(x)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	}
	return fmt.Sprint(v)
}

func timeText(t time.Time, oid uint32) string {
	switch oid {
	case pgtype.DateOID:
		return t.Format("2006-01-02")
	case pgtype.TimestampOID:
		return t.Format("2006-01-02T15:04:05.999999")
	}
	return t.Format(time.RFC3339Nano)
}
