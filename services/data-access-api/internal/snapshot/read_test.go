package snapshot

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"
)

// FuzzReadRecord checks the streaming reader against encoding/json: whatever
// it accepts must be valid JSON that decodes to the same record.
func FuzzReadRecord(f *testing.F) {
	f.Add([]byte(pythonRecord))
	f.Add([]byte(`{"query":"q","query_hash":"h","person_ids":[],"accession_ids":["a\"b","\u00e9"],"row_count":0,` +
		`"subject_count":0,"columns":[],"created_at":"2025-01-01T00:00:00Z","format_version":2}`))
	f.Add([]byte(`{"query":"q","person_ids":null}`))
	f.Add([]byte(`{"query":"\ud83d\ude00\/\b\f\n\r\t","row_count":10}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var ids []string
		m, err := readRecord(bytes.NewReader(data), Persons, func(b []byte) error {
			ids = append(ids, string(b))
			return nil
		})
		if err != nil {
			return
		}
		var ref struct {
			Query         string    `json:"query"`
			QueryHash     string    `json:"query_hash"`
			PersonIDs     *[]string `json:"person_ids"`
			AccessionIDs  *[]string `json:"accession_ids"`
			RowCount      int64     `json:"row_count"`
			SubjectCount  int64     `json:"subject_count"`
			Columns       []string  `json:"columns"`
			CreatedAt     string    `json:"created_at"`
			FormatVersion int64     `json:"format_version"`
		}
		if !json.Valid(data) {
			t.Fatalf("accepted invalid JSON %q", data)
		}
		if err := json.Unmarshal(data, &ref); err != nil {
			t.Fatalf("accepted %q, which encoding/json rejects: %v", data, err)
		}
		created, _ := time.Parse(time.RFC3339Nano, ref.CreatedAt)
		switch {
		case m.Query != ref.Query || m.QueryHash != ref.QueryHash,
			m.HasPersonIDs != (ref.PersonIDs != nil) || m.HasAccessionIDs != (ref.AccessionIDs != nil),
			m.RowCount != ref.RowCount || m.SubjectCount != ref.SubjectCount || ref.FormatVersion != FormatVersion,
			!slices.Equal(m.Columns, ref.Columns) || !m.CreatedAt.Equal(created):
			t.Fatalf("read %+v, encoding/json read %+v", m, ref)
		}
		if ref.PersonIDs != nil && (!slices.Equal(ids, *ref.PersonIDs) || m.PersonCount != int64(len(ids))) {
			t.Fatalf("ids %q, encoding/json read %q", ids, *ref.PersonIDs)
		}
		if ref.AccessionIDs != nil && m.AccessionCount != int64(len(*ref.AccessionIDs)) {
			t.Fatalf("accession count %d, encoding/json read %d", m.AccessionCount, len(*ref.AccessionIDs))
		}
	})
}

// FuzzWriteRead checks that whatever Create accepts reads back unchanged.
func FuzzWriteRead(f *testing.F) {
	f.Add("SELECT 1", "a", "b\"", "\x00\x1f\\")
	f.Add("  select\n\t*  ", "日本", "\u2028", "é")
	f.Add("", "1", "1", "2")
	f.Fuzz(func(t *testing.T, query, a, b, c string) {
		s := Open(t.TempDir(), 0, nil)
		ids := []string{a, b, c}
		slices.Sort(ids)
		ids = slices.Compact(ids)
		valid := strings.TrimSpace(query) != "" && utf8.ValidString(query)
		for _, id := range ids {
			valid = valid && utf8.ValidString(id)
		}
		meta := Meta{Query: query, Columns: []string{a}, RowCount: int64(len(a)), SubjectCount: 1}
		_, err := s.Create(project, meta, seq(ids...), seq(c))
		if !valid || !utf8.ValidString(a) {
			if err == nil {
				t.Fatalf("accepted query %q ids %q", query, ids)
			}
			return
		}
		if err != nil {
			t.Fatalf("Create: %v", err)
		}
		m, err := s.Meta(project)
		if err != nil {
			t.Fatalf("Meta: %v", err)
		}
		if m.Query != query || m.PersonCount != int64(len(ids)) || !slices.Equal(m.Columns, []string{a}) || m.AccessionCount != 1 {
			t.Fatalf("read back %+v", m)
		}
		if got := collect(t, s, project, Persons); !slices.Equal(got, ids) {
			t.Fatalf("ids %q, want %q", got, ids)
		}
		if got := collect(t, s, project, Accessions); !slices.Equal(got, []string{c}) {
			t.Fatalf("accessions %q", got)
		}
		// The file is standard JSON too.
		raw, err := os.ReadFile(filepath.Join(s.dir, project, recordFile))
		if err != nil || !json.Valid(raw) {
			t.Fatalf("record is not valid JSON: %v", err)
		}
	})
}
