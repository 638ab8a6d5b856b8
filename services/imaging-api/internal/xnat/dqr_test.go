package xnat_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"testing"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

// seedPACS registers PACS until the id wanted is reached (XNAT numbers
// registrations in creation order) and gives the last one studies.
func seedPACS(t *testing.T, srv *xnattest.Server, id int, studies ...xnattest.Study) {
	t.Helper()
	var got int
	for got < id {
		got = srv.AddPACS(xnattest.PACS{AETitle: "ORTHANC", Host: "orthanc", Port: 4242})
	}
	for i := 1; i < id; i++ {
		// Earlier registrations were removed, as configure-xnat.sh does.
		req, _ := http.NewRequest(http.MethodDelete, srv.URL+"/xapi/pacs/"+strconv.Itoa(i), nil)
		req.SetBasicAuth(xnattest.DefaultUsername, xnattest.DefaultPassword)
		resp, err := http.DefaultClient.Do(req)
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("delete pacs %d: %v %v", i, resp, err)
		}
		resp.Body.Close()
	}
	for _, s := range studies {
		if err := srv.AddStudy(id, s); err != nil {
			t.Fatal(err)
		}
	}
}

func TestPACSResolutionPingAndCheck(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.PACSID = 3 })
	ctx := context.Background()
	// No registration: the configured id, not cached.
	if id := f.cl.PACSID(ctx); id != 3 {
		t.Errorf("fallback id %d", id)
	}
	seedPACS(t, f.srv, 7)
	if id := f.cl.PACSID(ctx); id != 7 {
		t.Errorf("resolved id %d, want 7", id)
	}
	f.srv.ResetRequests()
	if id := f.cl.PACSID(ctx); id != 7 || len(f.srv.RequestsTo("GET", "/xapi/pacs")) != 0 {
		t.Errorf("resolution not cached: id %d", id)
	}

	st, err := f.cl.PingPACS(ctx, 7)
	if err != nil || st.PacsID != 7 || !st.Successful || !st.Enabled || st.Created == 0 {
		t.Errorf("ping %+v %v", st, err)
	}
	if _, err := f.cl.PingPACS(ctx, 99); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown pacs: %v", err)
	}
	if err := f.cl.CheckPACS(ctx, 7); err != nil {
		t.Errorf("check: %v", err)
	}
	if err := f.srv.SetPACSReachable(7, false); err != nil {
		t.Fatal(err)
	}
	if err := f.cl.CheckPACS(ctx, 7); !errors.Is(err, xnat.ErrPACSUnreachable) {
		t.Errorf("unreachable: %v", err)
	}
	disabled := f.srv.AddPACS(xnattest.PACS{AETitle: "OTHER", Host: "h", Port: 1, Disabled: true})
	if err := f.cl.CheckPACS(ctx, disabled); !errors.Is(err, xnat.ErrPACSDisabled) {
		t.Errorf("disabled: %v", err)
	}

	// An unreadable registration list falls back without caching.
	g := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.PACSID = 5 })
	g.srv.InjectFault(xnattest.Fault{Path: "/xapi/pacs", Status: 500, Times: 1})
	seedPACS(t, g.srv, 2)
	if id := g.cl.PACSID(ctx); id != 5 {
		t.Errorf("fallback on error: %d", id)
	}
	if id := g.cl.PACSID(ctx); id != 2 {
		t.Errorf("after the error: %d", id)
	}
}

func TestQueryStudies(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	seedPACS(t, f.srv, 2,
		xnattest.Study{StudyInstanceUID: "1.2.1", AccessionNumber: "ACC1", Description: "CT chest", Date: "20240102",
			Modalities: []string{"CT", "SR"}, ReferringPhysician: "Dr^X", PatientID: "PID1", PatientName: "Doe^J", PatientSex: "M"},
		xnattest.Study{StudyInstanceUID: "1.2.2", AccessionNumber: "acc1"})
	studies, err := f.cl.QueryStudies(ctx, "ACC1")
	if err != nil || len(studies) != 2 {
		t.Fatalf("query: %+v %v", studies, err)
	}
	want := xnat.Study{StudyInstanceUID: "1.2.1", StudyDescription: "CT chest", AccessionNumber: "ACC1", StudyDate: "20240102",
		ModalitiesInStudy: []string{"CT", "SR"}, ReferringPhysicianName: "Dr^X", Patient: xnat.Patient{ID: "PID1", Name: "Doe^J", Sex: "M"}}
	if b1, b2 := mustJSON(studies[0]), mustJSON(want); b1 != b2 {
		t.Errorf("study %s, want %s", b1, b2)
	}
	sent := f.srv.RequestsTo("POST", "/xapi/dqr/query/studies")
	if len(sent) != 1 || string(sent[0].Body) != `{"accessionNumber":"ACC1","modality":"","pacsId":2}` {
		t.Errorf("query body %q", sent[0].Body)
	}
	if none, err := f.cl.QueryStudies(ctx, "NOPE"); err != nil || none == nil || len(none) != 0 {
		t.Errorf("204: %v %v", none, err)
	}

	// A service account without the Dqr role gets DQR's 401.
	if _, err := f.srv.AddUser(xnattest.User{Username: "svc2", Password: "pw", Email: "s@example.org", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	h, err := xnat.New(xnat.Config{BaseURL: f.srv.URL, Username: "svc2", Password: "pw", PACSID: 2}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.QueryStudies(ctx, "ACC1"); !errors.Is(err, xnat.ErrUnauthorized) {
		t.Errorf("without Dqr: %v", err)
	}
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}

func TestQueueImport(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil, func(c *xnat.Config) { c.AETitle = "XNATRX"; c.ReceiverPort = 8106 })
	ctx := context.Background()
	seedPACS(t, f.srv, 4,
		xnattest.Study{StudyInstanceUID: "1.1", AccessionNumber: "A1"},
		xnattest.Study{StudyInstanceUID: "1.2", AccessionNumber: "A2"})
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	req := xnat.NewImportRequest("P1",
		xnat.ImportStudy{StudyInstanceUID: "1.1", AccessionNumber: "OLD"},
		xnat.NewImportStudy("1.2", "A2"),
		xnat.ImportStudy{StudyInstanceUID: "1.1", AccessionNumber: "A1"}) // repeats 1.1: last wins, first position
	out, err := f.cl.QueueImport(ctx, req)
	if err != nil || len(out) != 2 {
		t.Fatalf("import: %+v %v", out, err)
	}
	for i, acc := range []string{"A1", "A2"} {
		if out[i].AccessionNumber != acc || out[i].Status != xnat.StatusQueued || out[i].PacsID != 4 || out[i].ID == 0 || out[i].QueuedTime == 0 {
			t.Errorf("entry %d: %+v", i, out[i])
		}
	}
	sent := f.srv.RequestsTo("POST", "/xapi/dqr/import")
	var body struct {
		PacsID      int    `json:"pacsId"`
		AETitle     string `json:"aeTitle"`
		Port        int    `json:"port"`
		ProjectID   string `json:"projectId"`
		ForceImport bool   `json:"forceImport"`
		Studies     []struct {
			StudyInstanceUID string            `json:"studyInstanceUid"`
			AccessionNumber  string            `json:"accessionNumber"`
			RelabelMap       map[string]string `json:"relabelMap"`
		} `json:"studies"`
	}
	if len(sent) != 1 || json.Unmarshal(sent[0].Body, &body) != nil {
		t.Fatalf("import request %+v", sent)
	}
	if body.PacsID != 4 || body.AETitle != "XNATRX" || body.Port != 8106 || body.ProjectID != "P1" || !body.ForceImport || len(body.Studies) != 2 {
		t.Errorf("import body %+v", body)
	}
	for i, s := range body.Studies {
		want := []string{"1.1", "1.2"}[i]
		if s.StudyInstanceUID != want || s.RelabelMap["Session"] != s.AccessionNumber || len(s.RelabelMap["Subject"]) != 36 {
			t.Errorf("study %d %+v", i, s)
		}
	}
	if body.Studies[0].RelabelMap["Subject"] == body.Studies[1].RelabelMap["Subject"] {
		t.Error("studies share a subject label")
	}
	// The PACS was checked before importing.
	if n := len(f.srv.RequestsTo("GET", "/xapi/pacs/4/status")); n != 1 {
		t.Errorf("%d PACS checks", n)
	}
	reqs := f.srv.ImportRequests()
	if len(reqs) != 2 || reqs[0].Destination != "XNATRX:8106" {
		t.Errorf("queued %+v", reqs)
	}
}

func TestQueueImportFailures(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	seedPACS(t, f.srv, 1, xnattest.Study{StudyInstanceUID: "1.1", AccessionNumber: "A1"})
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	out, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("P1", xnat.NewImportStudy("1.1", "A1"), xnat.NewImportStudy("9.9", "A9")))
	if !errors.Is(err, xnat.ErrStudiesMissing) || len(out) != 1 || out[0].AccessionNumber != "A1" {
		t.Errorf("partial: %+v %v", out, err)
	}
	if _, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("P1", xnat.NewImportStudy("9.9", "A9"))); !errors.Is(err, xnat.ErrNoStudies) ||
		!errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("none found: %v", err)
	}
	before := len(f.srv.RequestsTo("POST", "/xapi/dqr/import"))
	if _, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("NOPE", xnat.NewImportStudy("1.1", "A1"))); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown project: %v", err)
	}
	if err := f.srv.SetPACSReachable(1, false); err != nil {
		t.Fatal(err)
	}
	if _, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("P1", xnat.NewImportStudy("1.1", "A1"))); !errors.Is(err, xnat.ErrPACSUnreachable) {
		t.Errorf("unreachable PACS: %v", err)
	}
	if after := len(f.srv.RequestsTo("POST", "/xapi/dqr/import")); after != before {
		t.Errorf("import sent despite a failed precondition (%d → %d)", before, after)
	}
	if _, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("P1")); err == nil {
		t.Error("empty import accepted")
	}
	if err := f.srv.SetPACSReachable(1, true); err != nil {
		t.Fatal(err)
	}
	f.srv.InjectFault(xnattest.Fault{Method: "POST", Path: "/xapi/dqr/import", Status: http.StatusNotFound})
	if _, err := f.cl.QueueImport(ctx, xnat.NewImportRequest("P1", xnat.NewImportStudy("1.1", "A1"))); xnat.StatusCode(err) != http.StatusNotFound {
		t.Errorf("DQR 404: %v", err)
	}
}
