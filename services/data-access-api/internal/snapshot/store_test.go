package snapshot

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"iter"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	project  = "0f8fad5b-d9cb-469f-a165-70867728950e"
	project2 = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
)

// seq yields the given ids.
func seq(ids ...string) iter.Seq2[string, error] {
	return func(yield func(string, error) bool) {
		for _, id := range ids {
			if !yield(id, nil) {
				return
			}
		}
	}
}

func newStore(t *testing.T) (*Store, string) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "snapshots")
	return Open(dir, 1<<20, nil), dir
}

func baseMeta() Meta {
	return Meta{
		Query:        "SELECT person_id, accession_id\n  FROM omop.image_occurrence",
		RowCount:     5,
		SubjectCount: 3,
		Columns:      []string{"person_id", "accession_id"},
	}
}

// entries lists the names in dir (none when it does not exist).
func entries(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range des {
		names = append(names, d.Name())
	}
	return names
}

func collect(t *testing.T, s *Store, id string, kind Kind) []string {
	t.Helper()
	var got []string
	if err := s.IDs(id, kind, func(id string) error { got = append(got, id); return nil }); err != nil {
		t.Fatalf("IDs(%v): %v", kind, err)
	}
	return got
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	persons := []string{"1", "10", "2", "3"} // byte order
	accessions := []string{"ACC-1001", "ACC-1002", "ACC-1003", "ACC-1004", "ACC-1005"}
	in := baseMeta()
	in.CreatedAt = time.Date(2025, 3, 4, 5, 6, 7, 891234567, time.FixedZone("BST", 3600))

	got, err := s.Create(strings.ToUpper(project), in, seq(persons...), seq(accessions...))
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	want := Meta{
		Query:           in.Query,
		QueryHash:       QueryHash(in.Query),
		HasPersonIDs:    true,
		HasAccessionIDs: true,
		PersonCount:     4,
		AccessionCount:  5,
		RowCount:        5,
		SubjectCount:    3,
		Columns:         []string{"person_id", "accession_id"},
		CreatedAt:       time.Date(2025, 3, 4, 4, 6, 7, 891234000, time.UTC),
	}
	assertMeta(t, "Create", got, want)

	m, err := s.Meta("{" + project + "}")
	if err != nil || m == nil {
		t.Fatalf("Meta = %v, %v", m, err)
	}
	assertMeta(t, "Meta", *m, want)

	if ids := collect(t, s, project, Persons); !slices.Equal(ids, persons) {
		t.Errorf("person ids %v, want %v", ids, persons)
	}
	if ids := collect(t, s, project, Accessions); !slices.Equal(ids, accessions) {
		t.Errorf("accession ids %v, want %v", ids, accessions)
	}
	set, err := s.LoadSet(project, Accessions)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 5 || !set.Contains("ACC-1003") || set.Contains("ACC-1006") {
		t.Errorf("accession set: len %d", set.Len())
	}
	if names := entries(t, dir); !slices.Equal(names, []string{project}) {
		t.Errorf("store holds %v, want only the record", names)
	}
}

func assertMeta(t *testing.T, what string, got, want Meta) {
	t.Helper()
	if !got.CreatedAt.Equal(want.CreatedAt) || got.CreatedAt.Location() != time.UTC {
		t.Errorf("%s: created_at %v, want %v in UTC", what, got.CreatedAt, want.CreatedAt)
	}
	got.CreatedAt, want.CreatedAt = time.Time{}, time.Time{}
	if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", want) {
		t.Errorf("%s:\n got %#v\nwant %#v", what, got, want)
	}
}

func TestOnDiskLayout(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	if _, err := s.Create(project, baseMeta(), seq("11", "12"), nil); err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, project, "membership.json"))
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatalf("record is not JSON: %v", err)
	}
	keys := slices.Sorted(maps.Keys(doc))
	wantKeys := []string{"accession_ids", "columns", "created_at", "format_version", "person_ids", "query", "query_hash", "row_count", "subject_count"}
	if !slices.Equal(keys, wantKeys) {
		t.Errorf("keys %v, want %v", keys, wantKeys)
	}
	if doc["format_version"] != float64(2) || doc["accession_ids"] != nil || doc["row_count"] != float64(5) || doc["subject_count"] != float64(3) {
		t.Errorf("values %v", doc)
	}
	if ids, _ := doc["person_ids"].([]any); len(ids) != 2 || ids[0] != "11" || ids[1] != "12" {
		t.Errorf("person_ids %v", doc["person_ids"])
	}
	if doc["query"] != baseMeta().Query || doc["query_hash"] != QueryHash(baseMeta().Query) {
		t.Errorf("query %v / %v", doc["query"], doc["query_hash"])
	}
	created, _ := doc["created_at"].(string)
	if ts, err := time.Parse(time.RFC3339, created); err != nil || !strings.HasSuffix(created, "Z") || time.Since(ts) > time.Minute {
		t.Errorf("created_at %q is not a recent RFC 3339 UTC time", created)
	}
	if !bytes.HasPrefix(raw, []byte("{\n \"query\": ")) {
		t.Errorf("record is not indented by one space:\n%s", raw)
	}
	if names := entries(t, filepath.Join(dir, project)); !slices.Equal(names, []string{"membership.json"}) {
		t.Errorf("record directory holds %v", names)
	}
}

func TestWriteOnce(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	if _, err := s.Create(project, baseMeta(), seq("1", "2"), nil); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, project, "membership.json")
	before, _ := os.ReadFile(path)

	other := baseMeta()
	other.Query = "SELECT person_id FROM omop.person"
	if _, err := s.Create(project, other, seq("1", "2", "3"), seq("A")); !errors.Is(err, ErrExists) {
		t.Fatalf("second Create: %v, want ErrExists", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Error("the existing record changed")
	}
	if names := entries(t, dir); !slices.Equal(names, []string{project}) {
		t.Errorf("store holds %v after a refused write", names)
	}
}

func TestConcurrentCreateHasOneWinner(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range n {
		wg.Go(func() {
			m := baseMeta()
			m.Query = fmt.Sprintf("SELECT %d AS person_id", i)
			<-start
			_, errs[i] = s.Create(project, m, seq(strconv.Itoa(i)), nil)
		})
	}
	close(start)
	wg.Wait()
	winner := -1
	for i, err := range errs {
		switch {
		case err == nil && winner >= 0:
			t.Fatalf("writers %d and %d both succeeded", winner, i)
		case err == nil:
			winner = i
		case !errors.Is(err, ErrExists):
			t.Errorf("writer %d: %v, want ErrExists", i, err)
		}
	}
	if winner < 0 {
		t.Fatal("no writer succeeded")
	}
	m, err := s.Meta(project)
	if err != nil || m.Query != fmt.Sprintf("SELECT %d AS person_id", winner) {
		t.Fatalf("stored record %+v, %v is not the winner's", m, err)
	}
	if ids := collect(t, s, project, Persons); !slices.Equal(ids, []string{strconv.Itoa(winner)}) {
		t.Errorf("stored ids %v are not the winner's", ids)
	}
	if names := entries(t, dir); !slices.Equal(names, []string{project}) {
		t.Errorf("store holds %v after the race", names)
	}
}

func TestDeleteIsIdempotentAndAllowsRecreate(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	if ok, err := s.Delete(project); ok || err != nil {
		t.Fatalf("Delete of nothing = %v, %v", ok, err)
	}
	if _, err := s.Create(project, baseMeta(), seq("1"), nil); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.Delete(strings.ToUpper(project)); !ok || err != nil {
		t.Fatalf("Delete = %v, %v; want true", ok, err)
	}
	if ok, err := s.Delete(project); ok || err != nil {
		t.Fatalf("second Delete = %v, %v; want false", ok, err)
	}
	if m, err := s.Meta(project); m != nil || err != nil {
		t.Fatalf("Meta after Delete = %v, %v", m, err)
	}
	if err := s.IDs(project, Persons, func(string) error { return nil }); !errors.Is(err, ErrNotFound) {
		t.Errorf("IDs after Delete: %v, want ErrNotFound", err)
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("store holds %v after Delete", names)
	}

	m := baseMeta()
	m.Query = "SELECT 2 AS person_id"
	if _, err := s.Create(project, m, seq("2"), nil); err != nil {
		t.Fatalf("re-create after Delete: %v", err)
	}
	if ids := collect(t, s, project, Persons); !slices.Equal(ids, []string{"2"}) {
		t.Errorf("re-created ids %v", ids)
	}
}

func TestNonUUIDIDsNeverTouchTheFilesystem(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	dir := filepath.Join(root, "snapshots")
	s := Open(dir, 1<<20, nil)
	for _, id := range []string{"", " ", "not-a-uuid", "..", "../" + project, project + "/..", "/etc/passwd",
		project + "x", "0f8fad5b-d9cb-469f-a165-70867728950", "0f8fad5b_d9cb_469f_a165_70867728950e"} {
		if _, err := s.Create(id, baseMeta(), seq("1"), nil); !errors.Is(err, ErrInvalidID) {
			t.Errorf("Create(%q): %v, want ErrInvalidID", id, err)
		}
		if m, err := s.Meta(id); m != nil || err != nil {
			t.Errorf("Meta(%q) = %v, %v", id, m, err)
		}
		if ok, err := s.Delete(id); ok || err != nil {
			t.Errorf("Delete(%q) = %v, %v", id, ok, err)
		}
		if err := s.IDs(id, Persons, func(string) error { return nil }); !errors.Is(err, ErrInvalidID) {
			t.Errorf("IDs(%q): %v, want ErrInvalidID", id, err)
		}
	}
	if names := entries(t, root); len(names) != 0 {
		t.Errorf("invalid ids created %v", names)
	}
}

func TestSizeCap(t *testing.T) {
	t.Parallel()
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprintf("P%06d", i)
	}
	// Measure the exact record size without a cap.
	free, freeDir := newStore(t)
	m := baseMeta()
	m.CreatedAt = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)
	if _, err := free.Create(project, m, seq(ids...), nil); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(filepath.Join(freeDir, project, "membership.json"))
	if err != nil {
		t.Fatal(err)
	}
	size := info.Size()

	dir := filepath.Join(t.TempDir(), "snapshots")
	capped := Open(dir, size-1, nil)
	_, err = capped.Create(project, m, seq(ids...), nil)
	if !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Create over the cap: %v, want ErrTooLarge", err)
	}
	for _, n := range []int64{size, size - 1} {
		if strings.Contains(err.Error(), strconv.FormatInt(n, 10)) {
			t.Errorf("error %q carries a byte count", err)
		}
	}
	if names := entries(t, dir); len(names) != 0 {
		t.Errorf("refused write left %v", names)
	}
	if m, err := capped.Meta(project); m != nil || err != nil {
		t.Errorf("Meta after refused write = %v, %v", m, err)
	}

	exact := Open(filepath.Join(t.TempDir(), "snapshots"), size, nil)
	if _, err := exact.Create(project, m, seq(ids...), nil); err != nil {
		t.Errorf("record of exactly the cap refused: %v", err)
	}
}

func TestDisabledStore(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	s := Open("", 1<<20, slog.New(slog.NewJSONHandler(&logs, nil)))
	if s.Enabled() {
		t.Fatal("empty dir gave an enabled store")
	}
	if _, err := s.Create(project, baseMeta(), seq("1"), nil); !errors.Is(err, ErrDisabled) {
		t.Errorf("Create: %v", err)
	}
	if m, err := s.Meta(project); m != nil || err != nil {
		t.Errorf("Meta = %v, %v", m, err)
	}
	if ok, err := s.Delete(project); ok || err != nil {
		t.Errorf("Delete = %v, %v", ok, err)
	}
	if _, err := s.LoadSet(project, Persons); !errors.Is(err, ErrDisabled) {
		t.Errorf("LoadSet: %v", err)
	}
	s.Ensure()
	if !strings.Contains(logs.String(), `"level":"ERROR"`) || !strings.Contains(logs.String(), "DISABLED") {
		t.Errorf("Ensure did not log the disabled store at ERROR: %s", logs.String())
	}
}

func TestCreateRejectsBadInputAndLeavesNothing(t *testing.T) {
	t.Parallel()
	boom := errors.New("database went away")
	failing := func(yield func(string, error) bool) {
		if yield("1", nil) {
			yield("", boom)
		}
	}
	tests := []struct {
		name     string
		meta     func(*Meta)
		persons  iter.Seq2[string, error]
		accs     iter.Seq2[string, error]
		wantIs   error
		wantText string
	}{
		{"unsorted ids", nil, seq("2", "1"), nil, ErrUnsorted, ""},
		{"duplicate ids", nil, seq("1", "1"), nil, ErrUnsorted, ""},
		{"unsorted accessions", nil, seq("1"), seq("B", "A"), ErrUnsorted, ""},
		{"numeric order is not byte order", nil, seq("9", "10"), nil, ErrUnsorted, ""},
		{"iterator error", nil, failing, nil, boom, ""},
		{"invalid UTF-8 id", nil, seq("a\xff"), nil, nil, "UTF-8"},
		{"blank query", func(m *Meta) { m.Query = " \n\t" }, seq("1"), nil, nil, "blank"},
		{"both lists null", nil, nil, nil, nil, "person ids or accession ids"},
		{"negative row count", func(m *Meta) { m.RowCount = -1 }, seq("1"), nil, nil, "negative"},
		{"negative subject count", func(m *Meta) { m.SubjectCount = -1 }, seq("1"), nil, nil, "negative"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, dir := newStore(t)
			m := baseMeta()
			if tc.meta != nil {
				tc.meta(&m)
			}
			_, err := s.Create(project, m, tc.persons, tc.accs)
			if err == nil {
				t.Fatal("accepted")
			}
			if tc.wantIs != nil && !errors.Is(err, tc.wantIs) {
				t.Errorf("error %v is not %v", err, tc.wantIs)
			}
			if !strings.Contains(err.Error(), tc.wantText) {
				t.Errorf("error %q does not mention %q", err, tc.wantText)
			}
			if names := entries(t, dir); len(names) != 0 {
				t.Errorf("refused write left %v", names)
			}
		})
	}
}

func TestEmptyListDiffersFromNull(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	if _, err := s.Create(project, baseMeta(), seq("1"), seq()); err != nil {
		t.Fatal(err)
	}
	m, err := s.Meta(project)
	if err != nil || !m.HasAccessionIDs || m.AccessionCount != 0 {
		t.Fatalf("meta %+v, %v: want an empty accession list", m, err)
	}
	called := false
	if err := s.IDs(project, Accessions, func(string) error { called = true; return nil }); err != nil || called {
		t.Errorf("IDs of an empty list: %v, called=%v", err, called)
	}
	if set, err := s.LoadSet(project, Accessions); err != nil || set.Len() != 0 || set.Contains("") {
		t.Errorf("LoadSet of an empty list: %v", err)
	}

	if _, err := s.Create(project2, baseMeta(), nil, seq("A")); err != nil {
		t.Fatal(err)
	}
	if err := s.IDs(project2, Persons, func(string) error { return nil }); !errors.Is(err, ErrNoList) {
		t.Errorf("IDs of a null list: %v, want ErrNoList", err)
	}
	if _, err := s.LoadSet(project2, Persons); !errors.Is(err, ErrNoList) {
		t.Errorf("LoadSet of a null list: %v, want ErrNoList", err)
	}
}

func TestIDsStopsOnCallbackError(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	if _, err := s.Create(project, baseMeta(), seq("1", "2", "3"), nil); err != nil {
		t.Fatal(err)
	}
	stop := errors.New("client went away")
	var got []string
	err := s.IDs(project, Persons, func(id string) error {
		got = append(got, id)
		if id == "2" {
			return stop
		}
		return nil
	})
	if err != stop {
		t.Errorf("IDs returned %v, want the callback's error unchanged", err)
	}
	if !slices.Equal(got, []string{"1", "2"}) {
		t.Errorf("streamed %v after the error", got)
	}
}

func TestIDsRoundTripAwkwardStrings(t *testing.T) {
	t.Parallel()
	s, _ := newStore(t)
	ids := []string{"", "\x01ctl", "\t\n\r", "\"quoted\"", "<html>&", "\\back", "é-accent", "日本", "\u2028"}
	slices.Sort(ids)
	m := baseMeta()
	m.Query = "SELECT 'a\"b\\c' AS person_id -- é\n"
	m.Columns = []string{"person\nid", "\"x\""}
	if _, err := s.Create(project, m, seq(ids...), nil); err != nil {
		t.Fatal(err)
	}
	if got := collect(t, s, project, Persons); !slices.Equal(got, ids) {
		t.Errorf("ids %q, want %q", got, ids)
	}
	got, err := s.Meta(project)
	if err != nil || got.Query != m.Query || !slices.Equal(got.Columns, m.Columns) {
		t.Errorf("meta %+v, %v", got, err)
	}
}

func TestUnreadableRecords(t *testing.T) {
	t.Parallel()
	good := func(edit func(map[string]any)) string {
		doc := map[string]any{
			"query": "SELECT 1", "query_hash": QueryHash("SELECT 1"),
			"person_ids": []any{"1", "2"}, "accession_ids": nil,
			"row_count": 2, "subject_count": 2, "columns": []any{"person_id"},
			"created_at": "2025-01-02T03:04:05.000006+00:00", "format_version": 2,
		}
		if edit != nil {
			edit(doc)
		}
		b, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	full := good(nil)
	tests := []struct{ name, content string }{
		{"empty file", ""},
		{"not JSON", "membership of cohort 7"},
		{"truncated", full[:len(full)/2]},
		{"truncated before the end", full[:len(full)-1]},
		{"trailing data", full + "{}"},
		{"top-level array", "[" + full + "]"},
		{"version 1", good(func(d map[string]any) { d["format_version"] = 1 })},
		{"version 3", good(func(d map[string]any) { d["format_version"] = 3 })},
		{"version as string", good(func(d map[string]any) { d["format_version"] = "2" })},
		{"version missing", good(func(d map[string]any) { delete(d, "format_version") })},
		{"missing key", good(func(d map[string]any) { delete(d, "subject_count") })},
		{"unknown key", good(func(d map[string]any) { d["dataframe"] = []any{} })},
		{"duplicate key", strings.Replace(full, `{"accession_ids":null`, `{"accession_ids":null,"accession_ids":null`, 1)},
		{"blank query", good(func(d map[string]any) { d["query"] = "   " })},
		{"query not a string", good(func(d map[string]any) { d["query"] = 7 })},
		{"both lists null", good(func(d map[string]any) { d["person_ids"] = nil })},
		{"non-string id", good(func(d map[string]any) { d["person_ids"] = []any{"1", 2} })},
		{"nested id", good(func(d map[string]any) { d["person_ids"] = []any{[]any{"1"}} })},
		{"ids as a bare string", good(func(d map[string]any) { d["person_ids"] = "1,2" })},
		{"negative count", good(func(d map[string]any) { d["row_count"] = -1 })},
		{"fractional count", good(func(d map[string]any) { d["subject_count"] = 1.5 })},
		{"boolean count", good(func(d map[string]any) { d["row_count"] = true })},
		{"columns as a bare string", good(func(d map[string]any) { d["columns"] = "person_id" })},
		{"non-string column", good(func(d map[string]any) { d["columns"] = []any{1} })},
		{"bad created_at", good(func(d map[string]any) { d["created_at"] = "yesterday" })},
		{"invalid escape", strings.Replace(full, `"SELECT 1"`, `"SELECT \x31"`, 1)},
		{"unpaired surrogate", strings.Replace(full, `["1","2"]`, `["1","\ud83d"]`, 1)},
		{"control character in a string", strings.Replace(full, `"SELECT 1"`, "\"SELECT\t1\"", 1)},
		{"invalid UTF-8", strings.Replace(full, `"SELECT 1"`, "\"SELECT \xff\"", 1)},
		{"leading zero count", strings.Replace(full, `"row_count":2`, `"row_count":02`, 1)},
		{"signed count", strings.Replace(full, `"row_count":2`, `"row_count":+2`, 1)},
		{"count out of range", strings.Replace(full, `"row_count":2`, `"row_count":99999999999999999999`, 1)},
		{"exponent count", strings.Replace(full, `"row_count":2`, `"row_count":2e0`, 1)},
		{"misspelt null", strings.Replace(full, `"accession_ids":null`, `"accession_ids":nul`, 1)},
		{"trailing comma in a list", strings.Replace(full, `["1","2"]`, `["1","2",]`, 1)},
		{"trailing comma in the object", strings.TrimSuffix(full, "}") + ",}"},
		{"missing colon", strings.Replace(full, `"row_count":2`, `"row_count" 2`, 1)},
		{"unquoted key", strings.Replace(full, `"row_count":2`, `row_count:2`, 1)},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, dir := newStore(t)
			if err := os.MkdirAll(filepath.Join(dir, project), 0o750); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(dir, project, "membership.json"), []byte(tc.content), 0o640); err != nil {
				t.Fatal(err)
			}
			m, err := s.Meta(project)
			if m != nil || !errors.Is(err, ErrUnreadable) {
				t.Fatalf("Meta = %v, %v; want ErrUnreadable", m, err)
			}
			called := false
			if err := s.IDs(project, Persons, func(string) error { called = true; return nil }); !errors.Is(err, ErrUnreadable) || called {
				t.Errorf("IDs: %v (called=%v); want ErrUnreadable before any id", err, called)
			}
			if _, err := s.LoadSet(project, Persons); !errors.Is(err, ErrUnreadable) {
				t.Errorf("LoadSet: %v", err)
			}
			if _, err := s.Create(project, baseMeta(), seq("9"), nil); !errors.Is(err, ErrExists) {
				t.Errorf("Create over an unreadable record: %v, want ErrExists", err)
			}
		})
	}

	ioCases := map[string]func(dir string) error{
		"record file is a directory": func(dir string) error {
			return os.MkdirAll(filepath.Join(dir, project, "membership.json"), 0o750)
		},
		"record directory is a file": func(dir string) error {
			if err := os.MkdirAll(dir, 0o750); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(dir, project), []byte("x"), 0o640)
		},
	}
	for name, setup := range ioCases {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s, dir := newStore(t)
			if err := setup(dir); err != nil {
				t.Fatal(err)
			}
			if m, err := s.Meta(project); m != nil || !errors.Is(err, ErrUnreadable) {
				t.Errorf("Meta = %v, %v; want ErrUnreadable", m, err)
			}
		})
	}
}

// pythonRecord is a record as FLIP's Python service writes it
// (json.dumps(indent=1), ASCII-only with \u escapes).
const pythonRecord = "{\n \"query\": \"SELECT person_id FROM omop.person WHERE x = '\\u00e9'\",\n \"query_hash\": \"ab\",\n" +
	" \"person_ids\": [\n  \"1\",\n  \"2\",\n  \"\\ud83d\\ude00\"\n ],\n \"accession_ids\": null,\n \"row_count\": 3,\n" +
	" \"subject_count\": 3,\n \"columns\": [\n  \"person_id\"\n ],\n \"created_at\": \"2025-01-02T03:04:05.000006+00:00\",\n \"format_version\": 2\n}"

func TestReadsPythonWrittenRecord(t *testing.T) {
	t.Parallel()
	s, dir := newStore(t)
	if err := os.MkdirAll(filepath.Join(dir, project), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, project, "membership.json"), []byte(pythonRecord), 0o640); err != nil {
		t.Fatal(err)
	}
	m, err := s.Meta(project)
	if err != nil {
		t.Fatal(err)
	}
	want := Meta{Query: "SELECT person_id FROM omop.person WHERE x = '\u00e9'", QueryHash: "ab", HasPersonIDs: true,
		PersonCount: 3, RowCount: 3, SubjectCount: 3, Columns: []string{"person_id"},
		CreatedAt: time.Date(2025, 1, 2, 3, 4, 5, 6000, time.UTC)}
	assertMeta(t, "Meta", *m, want)
	if ids := collect(t, s, project, Persons); !slices.Equal(ids, []string{"1", "2", "\U0001F600"}) {
		t.Errorf("ids %q", ids)
	}
}

func TestEnsureSweepsOnlyOldLeftovers(t *testing.T) {
	t.Parallel()
	var logs bytes.Buffer
	dir := filepath.Join(t.TempDir(), "a", "snapshots")
	s := Open(dir, 1<<20, slog.New(slog.NewJSONHandler(&logs, nil)))
	s.Ensure() // creates the directory
	if _, err := os.Stat(dir); err != nil {
		t.Fatalf("Ensure did not create the directory: %v", err)
	}
	if _, err := s.Create(project, baseMeta(), seq("1"), nil); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-SweepAge - time.Minute)
	young := time.Now().Add(-SweepAge + time.Minute)
	for name, mtime := range map[string]time.Time{
		".tmp-" + project2 + "-00000001": old,
		".del-" + project2 + "-00000002": old,
		".tmp-" + project2 + "-00000003": young,
		".del-" + project2 + "-00000004": young,
		"notes":                          old,
	} {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Join(p, "sub"), 0o750); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	recordTime := old
	if err := os.Chtimes(filepath.Join(dir, project), recordTime, recordTime); err != nil {
		t.Fatal(err)
	}
	s.Ensure()
	want := []string{".del-" + project2 + "-00000004", ".tmp-" + project2 + "-00000003", project, "notes"}
	if names := entries(t, dir); !slices.Equal(names, want) {
		t.Errorf("after the sweep: %v, want %v", names, want)
	}
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("healthy store logged an error: %s", logs.String())
	}
	if m, err := s.Meta(project); err != nil || m == nil {
		t.Errorf("record lost by the sweep: %v", err)
	}
}

func TestEnsureNeverFails(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	blocker := filepath.Join(root, "file")
	if err := os.WriteFile(blocker, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	s := Open(filepath.Join(blocker, "snapshots"), 1<<20, slog.New(slog.NewJSONHandler(&logs, nil)))
	s.Ensure()
	if !strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Errorf("unusable directory not reported: %s", logs.String())
	}
}

func TestCanonicalID(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		project:                              project,
		strings.ToUpper(project):             project,
		"{" + project + "}":                  project,
		"urn:uuid:" + project:                project,
		strings.ReplaceAll(project, "-", ""): project,
		"not-a-uuid":                         "",
		"":                                   "",
		project + " ":                        "",
	} {
		got, ok := CanonicalID(in)
		if got != want || ok != (want != "") {
			t.Errorf("CanonicalID(%q) = %q, %v; want %q", in, got, ok, want)
		}
	}
}

func TestQueryHash(t *testing.T) {
	t.Parallel()
	a := QueryHash("SELECT person_id\n\tFROM omop.person  ")
	if b := QueryHash("  select   PERSON_ID FROM omop.person"); a != b {
		t.Error("whitespace and case changed the hash")
	}
	if a == QueryHash("SELECT person_id FROM omop.death") {
		t.Error("different queries share a hash")
	}
	// The hash is taken over the normalised text.
	if got, want := QueryHash(" SELECT\n1 "), "822ae07d4783158bc1912bb623e5107cc9002d519e1143a9c200ed6ee18b6d0f"; got != want {
		t.Errorf("QueryHash = %s, want sha256(\"select 1\") = %s", got, want)
	}
}
