package xnat_test

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

func ptr(s string) *string { return &s }

// unique returns a project id no other test (or run) uses, since the tests
// share one database.
func unique(prefix string) string { return prefix + "-" + uuid.NewString()[:8] }

func TestClassifyPrecedence(t *testing.T) {
	set := func(xs ...string) map[string]bool {
		m := map[string]bool{}
		for _, x := range xs {
			m[x] = true
		}
		return m
	}
	st := xnat.DQRState{Failed: set("S", "F", "FP"), InProgress: set("S", "FP", "P", "PQ"), Queued: set("S", "PQ", "Q")}
	got := xnat.Classify([]string{"S", "F", "FP", "P", "PQ", "Q", "N", "F", "S"}, []string{"S", "OTHER"}, st)
	want := xnat.ImportStatus{
		Successful: []string{"S"}, Failed: []string{"F", "FP"}, Processing: []string{"P", "PQ"},
		Queued: []string{"Q"}, QueueFailed: []string{"N"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("Classify = %+v, want %+v", got, want)
	}
	if c := got.Counts(); c != (xnat.ImportStatusCount{SuccessfulCount: 1, FailedCount: 2, ProcessingCount: 2, QueuedCount: 1, QueueFailedCount: 1}) {
		t.Errorf("counts %+v", c)
	}
	empty := xnat.Classify(nil, nil, xnat.DQRState{})
	if b := mustJSON(empty); b != `{"successful":[],"failed":[],"processing":[],"queued":[],"queue_failed":[]}` {
		t.Errorf("empty status JSON %s", b)
	}
}

// TestImportStatusFromSeededTables seeds XNAT's DQR tables and experiment
// listing and checks the counts worked out by hand from §4.2's rules.
func TestImportStatusFromSeededTables(t *testing.T) {
	db := database(t)
	ctx := context.Background()
	p, q := unique("proj-seeded"), unique("proj-other")
	f := newFixture(t, xnattest.Options{}, db)
	if err := f.srv.AddProject(xnattest.Project{ID: p}); err != nil {
		t.Fatal(err)
	}
	for _, label := range []string{"A1", "X99"} {
		if _, _, err := f.srv.AddExperiment(p, "subj-"+label, xnattest.Experiment{Label: label}); err != nil {
			t.Fatal(err)
		}
	}
	if err := xnattest.SeedArchiveSessions(ctx, db,
		xnattest.ArchiveSessionRow{Project: p, Name: ptr("A2"), FolderName: "f-A2", Status: "ERROR"},
		xnattest.ArchiveSessionRow{Project: p, Name: nil, FolderName: "A3", Status: "ERROR"},      // name NULL: folder_name
		xnattest.ArchiveSessionRow{Project: p, Name: ptr(""), FolderName: "A13", Status: "ERROR"}, // name empty: folder_name
		xnattest.ArchiveSessionRow{Project: p, Name: ptr("A5"), FolderName: "A5", Status: "ERROR"},
		xnattest.ArchiveSessionRow{Project: p, Name: ptr("A7"), FolderName: "A7", Status: "BUILDING"},
		xnattest.ArchiveSessionRow{Project: p, Name: ptr("A14"), FolderName: "A14", Status: "ERROR"}, // not in the cohort
		xnattest.ArchiveSessionRow{Project: q, Name: ptr("A11"), FolderName: "A11", Status: "ERROR"}, // other project
	); err != nil {
		t.Fatal(err)
	}
	if err := xnattest.SeedExecutedRequests(ctx, db,
		xnattest.RequestRow{Project: p, AccessionNumber: "A1", Status: "FAILED"}, // successful wins
		xnattest.RequestRow{Project: p, AccessionNumber: "A4", Status: "FAILED"},
		xnattest.RequestRow{Project: p, AccessionNumber: "A5", Status: "RECEIVED"}, // failed archive wins
		xnattest.RequestRow{Project: p, AccessionNumber: "A6", Status: "ISSUED"},
		xnattest.RequestRow{Project: p, AccessionNumber: "A8", Status: "PROCESSING"},
		xnattest.RequestRow{Project: q, AccessionNumber: "A12", Status: "FAILED"}, // other project
	); err != nil {
		t.Fatal(err)
	}
	if err := xnattest.SeedQueuedRequests(ctx, db,
		xnattest.RequestRow{Project: p, AccessionNumber: "A8", Status: "QUEUED"}, // processing wins
		xnattest.RequestRow{Project: p, AccessionNumber: "A9", Status: "QUEUED"},
		xnattest.RequestRow{Project: p, AccessionNumber: "A10", Status: "FAILED"}, // any status is queued
		xnattest.RequestRow{Project: q, AccessionNumber: "A11", Status: "QUEUED"},
	); err != nil {
		t.Fatal(err)
	}
	cohort := []string{"A1", "A2", "A3", "A4", "A5", "A6", "A7", "A8", "A9", "A10", "A11", "A12", "A13", "A2"}
	got, err := f.cl.ImportStatus(ctx, p, cohort)
	if err != nil {
		t.Fatal(err)
	}
	want := xnat.ImportStatus{
		Successful:  []string{"A1"},
		Failed:      []string{"A2", "A3", "A4", "A5", "A13"},
		Processing:  []string{"A6", "A7", "A8"},
		Queued:      []string{"A9", "A10"},
		QueueFailed: []string{"A11", "A12"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("status %+v\nwant   %+v", got, want)
	}
	if c := got.Counts(); c != (xnat.ImportStatusCount{SuccessfulCount: 1, FailedCount: 5, ProcessingCount: 3, QueuedCount: 2, QueueFailedCount: 2}) {
		t.Errorf("counts %+v", c)
	}
	if _, err := f.cl.ImportStatus(ctx, "proj-missing", cohort); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown project: %v", err)
	}
	noDB := newFixture(t, xnattest.Options{}, nil)
	if _, err := noDB.cl.ImportStatus(ctx, p, cohort); !errors.Is(err, xnat.ErrNoDatabase) {
		t.Errorf("without a database: %v", err)
	}
}

// TestImportLifecycleEndToEnd drives imports through DQR's states on the
// contract server, which mirrors them into the tables the client reads.
func TestImportLifecycleEndToEnd(t *testing.T) {
	db := database(t)
	ctx := context.Background()
	p := unique("proj-e2e")
	f := newFixture(t, xnattest.Options{}, db)
	var studies []xnattest.Study
	for _, acc := range []string{"E1", "E2", "E3", "E4", "E6"} {
		studies = append(studies, xnattest.Study{StudyInstanceUID: "1.9." + acc, AccessionNumber: acc, XSIType: "xnat:crSessionData",
			Scans: []xnattest.Scan{{ID: "1", Resources: map[string]map[string][]byte{"DICOM": {"i.dcm": []byte(acc)}}}}})
	}
	seedPACS(t, f.srv, 1, studies...)
	if _, _, err := f.cl.EnsureProject(ctx, xnat.NewProject{ID: p, SecondaryID: "hub-e2e", Name: "e2e"}); err != nil {
		t.Fatal(err)
	}
	cohort := []string{"E1", "E2", "E3", "E4", "E5"}
	var imports []xnat.ImportStudy
	for _, acc := range cohort {
		found, err := f.cl.QueryStudies(ctx, acc)
		if err != nil {
			t.Fatal(err)
		}
		if len(found) == 1 {
			imports = append(imports, xnat.NewImportStudy(found[0].StudyInstanceUID, found[0].AccessionNumber))
		}
	}
	queued, err := f.cl.QueueImport(ctx, xnat.NewImportRequest(p, imports...))
	if err != nil || len(queued) != 4 {
		t.Fatalf("queue: %+v %v", queued, err)
	}
	check := func(stage string, want xnat.ImportStatusCount) {
		t.Helper()
		st, err := f.cl.ImportStatus(ctx, p, cohort)
		if err != nil {
			t.Fatalf("%s: %v", stage, err)
		}
		if got := st.Counts(); got != want {
			t.Errorf("%s: counts %+v, want %+v (%+v)", stage, got, want, st)
		}
	}
	check("queued", xnat.ImportStatusCount{QueuedCount: 4, QueueFailedCount: 1})

	id := map[string]int64{}
	for _, q := range queued {
		id[q.AccessionNumber] = q.ID
	}
	if err := f.srv.ExecuteImport(ctx, id["E1"], xnattest.StatusProcessing); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.ExecuteImport(ctx, id["E3"], xnattest.StatusIssued); err != nil {
		t.Fatal(err)
	}
	check("executing", xnat.ImportStatusCount{ProcessingCount: 2, QueuedCount: 2, QueueFailedCount: 1})

	if err := f.srv.CompleteImport(ctx, id["E1"]); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.FailImport(ctx, id["E2"]); err != nil {
		t.Fatal(err)
	}
	if err := f.srv.FailArchive(ctx, id["E4"]); err != nil {
		t.Fatal(err)
	}
	check("settled", xnat.ImportStatusCount{SuccessfulCount: 1, FailedCount: 2, ProcessingCount: 1, QueueFailedCount: 1})

	// The archived session is labelled with the accession number under a
	// fresh subject, and carries the PACS study's files.
	exps, err := f.cl.ListExperiments(ctx, p)
	if err != nil || len(exps) != 1 || exps[0].Label != "E1" || exps[0].XSIType != "xnat:crSessionData" {
		t.Fatalf("experiments %+v %v", exps, err)
	}
	subj, err := f.cl.ExperimentSubjectID(ctx, p, "E1")
	if err != nil {
		t.Fatal(err)
	}
	subs, err := f.cl.ListSubjects(ctx, p)
	if err != nil || len(subs) != 1 || subs[0].ID != subj || len(subs[0].Label) != 36 {
		t.Errorf("subjects %+v %v", subs, err)
	}
	if b, ok := f.srv.File(p, "E1", "1", "DICOM", "i.dcm"); !ok || string(b) != "E1" {
		t.Errorf("archived file %q %v", b, ok)
	}

	// An import sent to the web port instead of the DICOM receiver fails
	// DQR's destination check.
	wrong := newFixture(t, xnattest.Options{}, db, func(c *xnat.Config) { c.ReceiverPort = 8080 })
	wrongProject := unique("proj-wrong-port")
	seedPACS(t, wrong.srv, 1, studies...)
	if err := wrong.srv.AddProject(xnattest.Project{ID: wrongProject}); err != nil {
		t.Fatal(err)
	}
	out, err := wrong.cl.QueueImport(ctx, xnat.NewImportRequest(wrongProject, xnat.NewImportStudy("1.9.E1", "E1")))
	if err != nil {
		t.Fatal(err)
	}
	if err := wrong.srv.CompleteImport(ctx, out[0].ID); !errors.Is(err, xnattest.ErrDestination) {
		t.Errorf("wrong port: %v", err)
	}
	if st, err := wrong.cl.ImportStatus(ctx, wrongProject, []string{"E1"}); err != nil || !slices.Equal(st.Failed, []string{"E1"}) {
		t.Errorf("wrong port status %+v %v", st, err)
	}

	// Deleting the project removes its still-queued requests.
	more, err := f.cl.QueueImport(ctx, xnat.NewImportRequest(p, xnat.NewImportStudy("1.9.E6", "E6")))
	if err != nil {
		t.Fatal(err)
	}
	ids, err := f.cl.QueuedRequestIDs(ctx, p)
	if err != nil || !slices.Equal(ids, []int64{more[0].ID}) {
		t.Fatalf("queued ids %v %v", ids, err)
	}
	if _, err := f.cl.DeleteProject(ctx, p); err != nil {
		t.Fatal(err)
	}
	posted := f.srv.RequestsTo("POST", "/xapi/dqr/import/queue")
	if len(posted) != 1 || string(posted[0].Body) != "["+itoa64(more[0].ID)+"]" {
		t.Errorf("queue deletion %+v", posted)
	}
	if ids, err := f.cl.QueuedRequestIDs(ctx, p); err != nil || len(ids) != 0 {
		t.Errorf("queued after delete %v %v", ids, err)
	}
	for _, r := range f.srv.ImportRequests() {
		if !r.Executed && r.Project == p {
			t.Errorf("request %d still queued on the server", r.ID)
		}
	}

	// Nothing logged names an accession number.
	for _, acc := range []string{"E1", "E2", "E3", "E4", "E5", "E6"} {
		if strings.Contains(f.logs.String(), `"`+acc+`"`) || strings.Contains(f.logs.String(), "/"+acc) {
			t.Errorf("log mentions %s: %s", acc, f.logs.String())
		}
	}
}

func itoa64(i int64) string { return mustJSON(i) }

func TestDeleteProjectSurvivesQueueCleanupFailure(t *testing.T) {
	db := database(t)
	ctx := context.Background()
	f := newFixture(t, xnattest.Options{}, db)
	project := unique("proj-cleanup")
	if err := f.srv.AddProject(xnattest.Project{ID: project}); err != nil {
		t.Fatal(err)
	}
	if err := xnattest.SeedQueuedRequests(ctx, db, xnattest.RequestRow{Project: project, AccessionNumber: "C1", Status: "QUEUED"}); err != nil {
		t.Fatal(err)
	}
	f.srv.InjectFault(xnattest.Fault{Method: "POST", Path: "/xapi/dqr/import/queue", Status: 500})
	if p, err := f.cl.DeleteProject(ctx, project); err != nil || p.ID != project {
		t.Errorf("delete: %+v %v", p, err)
	}
	if !strings.Contains(f.logs.String(), "could not delete the deleted project's queued imports") {
		t.Errorf("cleanup failure not logged: %s", f.logs.String())
	}
}

func TestOpenDatabaseIsReadOnly(t *testing.T) {
	dsn := database(t).Config().ConnString()
	ctx := context.Background()
	pool, err := xnat.OpenDatabase(ctx, dsn, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if _, err := xnat.ReadDQRState(ctx, pool, "nobody"); err != nil {
		t.Errorf("read: %v", err)
	}
	_, err = pool.Exec(ctx, `INSERT INTO xhbm_queued_pacs_request (accession_number, status, xnat_project) VALUES ('x', 'QUEUED', 'p')`)
	if err == nil || !strings.Contains(err.Error(), "read-only") {
		t.Errorf("write through the status pool: %v", err)
	}
	var timeout string
	if err := pool.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil || timeout != "30s" {
		t.Errorf("statement_timeout %q %v", timeout, err)
	}
	if _, err := xnat.ReadDQRState(ctx, failingQuerier{}, "p"); err == nil {
		t.Error("query error not reported")
	}
}

type failingQuerier struct{}

func (failingQuerier) Query(context.Context, string, ...any) (pgx.Rows, error) {
	return nil, errors.New("connection refused")
}

func TestDatabaseDSN(t *testing.T) {
	for _, tc := range []struct {
		url, password, want string
		ok                  bool
	}{
		{"postgresql+asyncpg://xnat@xnat-db:5432/xnat", "", "postgres://xnat@xnat-db:5432/xnat", true},
		{"postgresql+asyncpg://xnat@xnat-db:5432/xnat", "<run-make-generate-xnat-credentials>", "postgres://xnat@xnat-db:5432/xnat", true},
		{"postgres://xnat@xnat-db:5432/xnat", "p@ss:w/rd", "postgres://xnat:p%40ss%3Aw%2Frd@xnat-db:5432/xnat", true},
		{"postgresql://xnat:old@db/xnat?sslmode=disable", "new", "postgres://xnat:new@db/xnat?sslmode=disable", true},
		{"mysql://xnat@db/xnat", "", "", false},
		{"postgres:///xnat", "", "", false},
		{"postgres://xnat:secret@db:bad port/x", "", "", false},
	} {
		got, err := xnat.DatabaseDSN(tc.url, tc.password)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("DatabaseDSN(%q) = %q, %v", tc.url, got, err)
		}
		if err != nil && strings.Contains(err.Error(), "secret") {
			t.Errorf("error quotes the password: %v", err)
		}
	}
}
