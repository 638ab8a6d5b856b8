package orthanc_test

import (
	"archive/zip"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
)

var pair *orthanctest.Pair

// Studies on the PACS. Accession numbers that differ only in case stand
// for the PACS's case-insensitive matching.
var (
	moveStudy  = dicomgen.Study{PatientID: "PM1", AccessionNumber: "ACCMOVE1", Modality: "MR", Series: 2, PerSeries: 5}
	lowerStudy = dicomgen.Study{PatientID: "PC1", AccessionNumber: "AbC123", Modality: "CT"}
	upperStudy = dicomgen.Study{PatientID: "PC2", AccessionNumber: "ABC123", Modality: "US", Series: 1, PerSeries: 2}
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	if pair, err = orthanctest.StartPair(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer pair.Close()
	up := &dicomgen.Uploader{URL: pair.PACS.URL, User: pair.PACS.User, Password: pair.PACS.Password}
	if _, err := up.UploadStudies(ctx, slices.Values([]dicomgen.Study{moveStudy, lowerStudy, upperStudy}), 4, nil); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	return m.Run()
}

func client(t *testing.T, edit func(*orthanc.Config)) *orthanc.Client {
	t.Helper()
	cfg := orthanc.Config{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password}
	if edit != nil {
		edit(&cfg)
	}
	c, err := orthanc.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func wantKind(t *testing.T, what string, err, kind error) {
	t.Helper()
	var oe *orthanc.Error
	if !errors.Is(err, kind) || !errors.As(err, &oe) {
		t.Errorf("%s: error %v, want an *orthanc.Error of kind %v", what, err, kind)
	}
}

func uids(t *testing.T, s dicomgen.Study) []string {
	t.Helper()
	insts, err := s.Instances()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range insts {
		out = append(out, in.SOPInstanceUID)
	}
	slices.Sort(out)
	return out
}

func TestNewRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "127.0.0.1:8042", "ftp://host", "http://"} {
		if _, err := orthanc.New(orthanc.Config{URL: u}); !errors.Is(err, orthanc.ErrInvalid) {
			t.Errorf("New(%q): %v, want ErrInvalid", u, err)
		}
	}
}

func TestEchoAndSystem(t *testing.T) {
	ctx := t.Context()
	c := client(t, nil)
	sys, err := c.System(ctx)
	if err != nil || sys.DicomAet != "STAGING" || sys.Version == "" {
		t.Errorf("System: %+v, %v", sys, err)
	}
	if err := c.Echo(ctx, "PACS"); err != nil {
		t.Errorf("echo PACS: %v", err)
	}
	wantKind(t, "echo an unknown modality", c.Echo(ctx, "NOWHERE"), orthanc.ErrNotFound)
	wantKind(t, "echo a bad name", c.Echo(ctx, "PACS/../x"), orthanc.ErrInvalid)

	bad := client(t, func(cfg *orthanc.Config) { cfg.Password = "wrong" })
	wantKind(t, "echo with a wrong password", bad.Echo(ctx, "PACS"), orthanc.ErrUnauthorized)
	_, err = bad.System(ctx)
	wantKind(t, "system with a wrong password", err, orthanc.ErrUnauthorized)

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	_ = l.Close()
	gone := client(t, func(cfg *orthanc.Config) { cfg.URL = down })
	wantKind(t, "echo through a stopped staging", gone.Echo(ctx, "PACS"), orthanc.ErrUnavailable)
}

func TestFindStudies(t *testing.T) {
	ctx := t.Context()
	c := client(t, nil)
	moveUID := dicomgen.StudyUIDFor(moveStudy.PatientID, moveStudy.AccessionNumber)
	cases := []struct {
		name, accession string
		want            []string // accession numbers answered, sorted
		exact           int      // answers SelectExact keeps
	}{
		{"exact", "ACCMOVE1", []string{"ACCMOVE1"}, 1},
		{"none", "ACCNONE", nil, 0},
		// Orthanc 1.10.1's C-FIND SCP matches AccessionNumber with case;
		// other PACSes may not (see TestSelectExact).
		{"case variant", "AbC123", []string{"AbC123"}, 1},
		{"case variant upper", "ABC123", []string{"ABC123"}, 1},
		{"case variant lower", "abc123", nil, 0},
		{"prefix", "ABC12", nil, 0},
	}
	for _, tc := range cases {
		got, err := c.FindStudies(ctx, "PACS", tc.accession)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var accs []string
		for _, m := range got {
			accs = append(accs, m.AccessionNumber)
		}
		slices.Sort(accs)
		if !slices.Equal(accs, tc.want) {
			t.Errorf("%s: answers %v, want %v", tc.name, accs, tc.want)
		}
		exact := orthanc.SelectExact(got, tc.accession)
		if len(exact) != tc.exact {
			t.Errorf("%s: %d exact matches, want %d", tc.name, len(exact), tc.exact)
		}
		for _, m := range exact {
			if m.AccessionNumber != tc.accession {
				t.Errorf("%s: SelectExact kept %q", tc.name, m.AccessionNumber)
			}
		}
	}
	got, err := c.FindStudies(ctx, "PACS", "ACCMOVE1")
	if err != nil || len(got) != 1 {
		t.Fatalf("find: %v, %v", got, err)
	}
	want := orthanc.StudyMatch{StudyInstanceUID: moveUID, AccessionNumber: "ACCMOVE1", PatientID: "PM1",
		StudyDate: "20240101", ModalitiesInStudy: "MR", Instances: 10}
	if got[0] != want {
		t.Errorf("match %+v, want %+v", got[0], want)
	}

	for _, acc := range []string{"", "  ", "ACC*", "AC?1", `A\B`, strings.Repeat("1", 17), "ACCÉ"} {
		_, err := c.FindStudies(ctx, "PACS", acc)
		wantKind(t, fmt.Sprintf("find %q", acc), err, orthanc.ErrInvalid)
	}
	_, err = c.FindStudies(ctx, "NOWHERE", "ACCMOVE1")
	wantKind(t, "find on an unknown modality", err, orthanc.ErrNotFound)

	var queries []string
	if err := pair.Staging.Do(ctx, "GET", "/queries", nil, &queries); err != nil || len(queries) != 0 {
		t.Errorf("query handles left in staging: %v, %v", queries, err)
	}
}

// A PACS that matches without regard to case answers several studies;
// SelectExact keeps the one with the very accession number.
func TestSelectExact(t *testing.T) {
	answers := []orthanc.StudyMatch{
		{StudyInstanceUID: "1.1", AccessionNumber: "ABC123"},
		{StudyInstanceUID: "1.2", AccessionNumber: "AbC123"},
		{StudyInstanceUID: "1.3", AccessionNumber: "abc123"},
		{StudyInstanceUID: "1.4", AccessionNumber: "AbC123"},
	}
	cases := []struct {
		accession string
		want      []string
	}{
		{"AbC123", []string{"1.2", "1.4"}},
		{"abc123", []string{"1.3"}},
		{"ABC1234", nil},
		{"", nil},
	}
	for _, c := range cases {
		var got []string
		for _, m := range orthanc.SelectExact(answers, c.accession) {
			got = append(got, m.StudyInstanceUID)
		}
		if !slices.Equal(got, c.want) {
			t.Errorf("SelectExact(%q) = %v, want %v", c.accession, got, c.want)
		}
	}
}

// A moved study arrives whole, a second move adds nothing, the archive holds
// every instance, and deletion removes it.
func TestMoveStudyArchiveDelete(t *testing.T) {
	ctx := t.Context()
	c := client(t, nil)
	if err := pair.Staging.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	uid := dicomgen.StudyUIDFor(moveStudy.PatientID, moveStudy.AccessionNumber)
	if _, err := c.LocalStudy(ctx, uid); !errors.Is(err, orthanc.ErrNotFound) {
		t.Fatalf("study in staging before the move: %v", err)
	}
	begin := time.Now()
	if err := c.MoveStudy(ctx, "PACS", uid, "STAGING"); err != nil {
		t.Fatal(err)
	}
	t.Logf("synchronous C-MOVE of 2 series x 5 instances (16x16): %v", time.Since(begin))
	local, err := c.LocalStudy(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	if local.StudyInstanceUID != uid || local.AccessionNumber != "ACCMOVE1" || local.PatientID != "PM1" || local.Series != 2 || local.ID == "" {
		t.Errorf("local study %+v", local)
	}
	n, err := c.StudyInstanceCount(ctx, local.ID)
	if err != nil || n != 10 {
		t.Fatalf("%d instances in staging right after the move (%v), want 10", n, err)
	}

	if err := c.MoveStudy(ctx, "PACS", uid, "STAGING"); err != nil {
		t.Fatal(err)
	}
	st, err := pair.Staging.Stats(ctx)
	if err != nil || st.CountInstances != 10 || st.CountStudies != 1 {
		t.Errorf("after a second move staging holds %+v (%v), want 1 study of 10 instances", st, err)
	}
	byAcc, err := c.LocalStudiesByAccession(ctx, "ACCMOVE1")
	if err != nil || len(byAcc) != 1 || byAcc[0].ID != local.ID {
		t.Errorf("by accession: %+v, %v", byAcc, err)
	}
	if other, err := c.LocalStudiesByAccession(ctx, "accmove1"); err != nil || len(other) != 0 {
		t.Errorf("case-variant accession found %+v, %v", other, err)
	}

	rc, err := c.StudyArchive(ctx, local.ID)
	if err != nil {
		t.Fatal(err)
	}
	data, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatalf("archive is not a zip: %v", err)
	}
	var got []string
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		_ = r.Close()
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		ds, err := dicomgen.Parse(b)
		if err != nil {
			t.Fatalf("%s: %v", f.Name, err)
		}
		if ds.String(dicomgen.TagAccessionNumber) != "ACCMOVE1" {
			t.Errorf("%s has accession %q", f.Name, ds.String(dicomgen.TagAccessionNumber))
		}
		got = append(got, ds.String(dicomgen.TagSOPInstanceUID))
	}
	slices.Sort(got)
	if want := uids(t, moveStudy); !slices.Equal(got, want) {
		t.Errorf("archive holds %d instances %v, want %v", len(got), got, want)
	}

	if err := c.DeleteStudy(ctx, local.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.LocalStudy(ctx, uid); !errors.Is(err, orthanc.ErrNotFound) {
		t.Errorf("study still found after deletion: %v", err)
	}
	wantKind(t, "delete twice", c.DeleteStudy(ctx, local.ID), orthanc.ErrNotFound)
	_, err = c.StudyInstanceCount(ctx, local.ID)
	wantKind(t, "count a deleted study", err, orthanc.ErrNotFound)
	_, err = c.StudyArchive(ctx, local.ID)
	wantKind(t, "archive of a deleted study", err, orthanc.ErrNotFound)
}

func TestMoveFailures(t *testing.T) {
	ctx := t.Context()
	c := client(t, nil)
	uid := dicomgen.StudyUIDFor(lowerStudy.PatientID, lowerStudy.AccessionNumber)
	wantKind(t, "move an unknown study", c.MoveStudy(ctx, "PACS", dicomgen.UIDRoot+".999.1", "STAGING"), orthanc.ErrPACSFailed)
	wantKind(t, "move to an unknown AE title", c.MoveStudy(ctx, "PACS", uid, "NOBODY"), orthanc.ErrPACSFailed)
	wantKind(t, "move from an unknown modality", c.MoveStudy(ctx, "NOWHERE", uid, "STAGING"), orthanc.ErrNotFound)
	for _, bad := range []string{"", "1..2", ".1.2", "1.2.", "1.2.a", strings.Repeat("1", 65)} {
		wantKind(t, fmt.Sprintf("move UID %q", bad), c.MoveStudy(ctx, "PACS", bad, "STAGING"), orthanc.ErrInvalid)
		_, err := c.LocalStudy(ctx, bad)
		wantKind(t, fmt.Sprintf("local study UID %q", bad), err, orthanc.ErrInvalid)
	}
	wantKind(t, "move to a wildcard AE", c.MoveStudy(ctx, "PACS", uid, "ST*"), orthanc.ErrInvalid)
	for _, id := range []string{"", "../system", "ABC", "a/b"} {
		_, err := c.StudyInstanceCount(ctx, id)
		wantKind(t, fmt.Sprintf("count id %q", id), err, orthanc.ErrInvalid)
		wantKind(t, fmt.Sprintf("delete id %q", id), c.DeleteStudy(ctx, id), orthanc.ErrInvalid)
		_, err = c.StudyArchive(ctx, id)
		wantKind(t, fmt.Sprintf("archive id %q", id), err, orthanc.ErrInvalid)
	}
}

// With the PACS down every DICOM call fails fast with ErrPACSUnreachable,
// without the accession number in the message; a PACS that rejects the
// association is unreachable too; a hung PACS fails after the DIMSE timeout. The PACS is back up when the test ends.
func TestPACSOutage(t *testing.T) {
	ctx := t.Context()
	c := client(t, func(cfg *orthanc.Config) { cfg.DIMSETimeout = time.Second })
	t.Cleanup(func() {
		_ = pair.PACS.Resume()
		if err := pair.PACS.Start(context.Background()); err != nil {
			t.Error(err)
		}
	})
	// A PACS that does not know staging rejects the association; the
	// restart below reloads its configuration.
	if err := pair.PACS.Do(ctx, "DELETE", "/modalities/STAGING", nil, nil); err != nil {
		t.Fatal(err)
	}
	err := c.Echo(ctx, "PACS")
	wantKind(t, "echo a PACS that rejects staging", err, orthanc.ErrPACSUnreachable)
	if err == nil || !strings.Contains(err.Error(), "Rejected") {
		t.Errorf("rejection not described: %v", err)
	}

	pair.PACS.Kill()
	uid := dicomgen.StudyUIDFor(moveStudy.PatientID, moveStudy.AccessionNumber)
	calls := map[string]func() error{
		"echo": func() error { return c.Echo(ctx, "PACS") },
		"find": func() error { _, err := c.FindStudies(ctx, "PACS", "ACCMOVE1"); return err },
		"move": func() error { return c.MoveStudy(ctx, "PACS", uid, "STAGING") },
	}
	for name, call := range calls {
		begin := time.Now()
		err := call()
		if d := time.Since(begin); d > 2*time.Second {
			t.Errorf("%s with the PACS down took %v", name, d)
		}
		wantKind(t, name+" with the PACS down", err, orthanc.ErrPACSUnreachable)
		if err != nil && (strings.Contains(err.Error(), "ACCMOVE1") || strings.Contains(err.Error(), uid)) {
			t.Errorf("%s: error message carries an identifier: %v", name, err)
		}
	}
	if err := pair.PACS.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, "PACS"); err != nil {
		t.Errorf("echo after the PACS restarted: %v", err)
	}

	if err := pair.PACS.Pause(); err != nil {
		t.Fatal(err)
	}
	begin := time.Now()
	err = c.Echo(ctx, "PACS")
	d := time.Since(begin)
	wantKind(t, "echo a hung PACS", err, orthanc.ErrPACSUnreachable)
	if d < 900*time.Millisecond || d > 4*time.Second {
		t.Errorf("echo of a hung PACS failed after %v, want about the 1 s DIMSE timeout", d)
	}
	if err := pair.PACS.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, "PACS"); err != nil {
		t.Errorf("echo after the PACS resumed: %v", err)
	}
}

// The client asks staging for uncompressed answers: Orthanc would
// otherwise gzip every answer, DICOM files included.
func TestNoCompressedAnswers(t *testing.T) {
	var mu sync.Mutex
	var accepted []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		accepted = append(accepted, r.URL.Path+": "+r.Header.Get("Accept-Encoding"))
		mu.Unlock()
		_, _ = io.WriteString(w, "{}")
	}))
	defer srv.Close()
	c, err := orthanc.New(orthanc.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	if _, err := c.System(ctx); err != nil {
		t.Fatal(err)
	}
	_ = c.MoveStudy(ctx, "PACS", "1.2.3", "STAGING")
	rc, err := c.InstanceFile(ctx, "abcd")
	if err != nil {
		t.Fatal(err)
	}
	_ = rc.Close()
	mu.Lock()
	defer mu.Unlock()
	want := []string{"/system: ", "/modalities/PACS/move: ", "/instances/abcd/file: "}
	if !slices.Equal(accepted, want) {
		t.Errorf("requests %q, want %q", accepted, want)
	}
}

// Orthanc closes a kept-alive connection after a second of silence. A
// request the client sends on such a connection just as it closes gets no
// answer; the client sends it again on a fresh connection instead of
// failing the C-FIND or C-MOVE (staging treats repeats as no-ops).
func TestRequestResentAfterIdleConnectionClosed(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var mu sync.Mutex
	var answered []string
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				rd := bufio.NewReader(conn)
				// The first request on a connection is answered, the
				// second one finds it closed.
				req, err := http.ReadRequest(rd)
				if err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, req.Body)
				mu.Lock()
				answered = append(answered, req.Method+" "+req.URL.Path)
				mu.Unlock()
				_, _ = io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}")
				if req, err = http.ReadRequest(rd); err == nil {
					_, _ = io.Copy(io.Discard, req.Body)
				}
			}()
		}
	}()
	c, err := orthanc.New(orthanc.Config{URL: "http://" + ln.Addr().String()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := c.System(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Echo(ctx, "PACS"); err != nil {
		t.Fatalf("Echo on a connection closed under it: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{"GET /system", "POST /modalities/PACS/echo"}; !slices.Equal(answered, want) {
		t.Errorf("answered %q, want %q", answered, want)
	}
}
