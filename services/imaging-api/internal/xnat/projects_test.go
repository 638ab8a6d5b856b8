package xnat_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/services/imaging-api/internal/xnattest"
)

func TestEnsureProjectIsIdempotent(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	np := xnat.NewProject{ID: "11111111-aaaa", SecondaryID: "hub-1", Name: "Lungs <&> 'x':hub-1-FL-Project", Description: "Project corresponding to central hub project hub-1"}
	p, created, err := f.cl.EnsureProject(ctx, np)
	if err != nil || !created {
		t.Fatalf("first ensure: %+v %v %v", p, created, err)
	}
	want := xnat.Project{ID: np.ID, SecondaryID: np.SecondaryID, Name: np.Name, Description: np.Description, URI: "/data/projects/" + np.ID}
	if p != want {
		t.Errorf("project %+v, want %+v", p, want)
	}
	// A retry for the same hub project (with a fresh id) finds the first one.
	again, created, err := f.cl.EnsureProject(ctx, xnat.NewProject{ID: "22222222-bbbb", SecondaryID: "hub-1", Name: "other"})
	if err != nil || created || again != p {
		t.Errorf("second ensure: %+v %v %v", again, created, err)
	}
	if n := len(f.srv.RequestsTo("POST", "/data/projects")); n != 1 {
		t.Errorf("%d creations, want 1", n)
	}
	posted := f.srv.RequestsTo("POST", "/data/projects")[0]
	body := string(posted.Body)
	if posted.Header.Get("Content-Type") != "application/xml" || strings.Contains(strings.ToUpper(body), "DOCTYPE") ||
		!strings.HasPrefix(body, `<xnat:projectData xmlns:xnat="`+f.srv.URL+`/data/projects">`) ||
		!strings.Contains(body, "<name>Lungs &lt;&amp;&gt; &#39;x&#39;:hub-1-FL-Project</name>") {
		t.Errorf("payload %q (%s)", body, posted.Header.Get("Content-Type"))
	}
	// An id taken by another hub project is refused.
	if _, _, err := f.cl.EnsureProject(ctx, xnat.NewProject{ID: np.ID, SecondaryID: "hub-2", Name: "n2"}); !errors.Is(err, xnat.ErrAlreadyExists) {
		t.Errorf("id collision: %v", err)
	}
	// Keyed by id when there is no secondary id.
	if _, created, err := f.cl.EnsureProject(ctx, xnat.NewProject{ID: np.ID}); err != nil || created {
		t.Errorf("by id: %v %v", created, err)
	}
}

func TestEnsureProjectToleratesXNATFailingAfterCreating(t *testing.T) {
	f := newFixture(t, xnattest.Options{SiteURLUnset: true}, nil)
	p, created, err := f.cl.EnsureProject(context.Background(), xnat.NewProject{ID: "P1", SecondaryID: "hub-1", Name: "n"})
	if err != nil || !created || p.ID != "P1" {
		t.Fatalf("ensure with siteUrl unset: %+v %v %v", p, created, err)
	}
	if !strings.Contains(f.logs.String(), "lists the project") {
		t.Error("the failed creation was not logged")
	}
	// A real failure (nothing created) is reported with its status.
	f.srv.InjectFault(xnattest.Fault{Method: "POST", Path: "/data/projects", Status: http.StatusInternalServerError})
	_, _, err = f.cl.EnsureProject(context.Background(), xnat.NewProject{ID: "P2", SecondaryID: "hub-2", Name: "n2"})
	if xnat.StatusCode(err) != http.StatusInternalServerError {
		t.Errorf("failed creation: %v", err)
	}
}

func TestCreateGetDeleteProject(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	p, err := f.cl.CreateProject(ctx, xnat.NewProject{ID: "P1", SecondaryID: "hub-1", Name: "one"})
	if err != nil || p.ID != "P1" || p.SecondaryID != "hub-1" {
		t.Fatalf("create: %+v %v", p, err)
	}
	if _, err := f.cl.CreateProject(ctx, xnat.NewProject{ID: "P1", SecondaryID: "hub-9", Name: "nine"}); !errors.Is(err, xnat.ErrAlreadyExists) {
		t.Errorf("create existing: %v", err)
	}
	if _, err := f.cl.CreateProject(ctx, xnat.NewProject{ID: "P2", SecondaryID: "hub-1", Name: "two"}); !errors.Is(err, xnat.ErrAlreadyExists) ||
		xnat.StatusCode(err) != http.StatusConflict {
		t.Errorf("XNAT's 409: %v", err)
	}
	if got, err := f.cl.ProjectBySecondaryID(ctx, "hub-1"); err != nil || got.ID != "P1" {
		t.Errorf("by secondary id: %+v %v", got, err)
	}
	if _, err := f.cl.ProjectBySecondaryID(ctx, "hub-x"); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("unknown hub project: %v", err)
	}
	if err := f.cl.SetPrearchiveCode(ctx, "P1", xnat.PrearchiveAutoArchive); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.srv.ProjectState("P1"); st.PrearchiveCode != 4 {
		t.Errorf("prearchive code %d", st.PrearchiveCode)
	}
	if err := f.cl.SetPrearchiveCode(ctx, "nope", xnat.PrearchiveAutoArchive); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("prearchive of unknown project: %v", err)
	}

	deleted, err := f.cl.DeleteProject(ctx, "P1")
	if err != nil || deleted.ID != "P1" {
		t.Fatalf("delete: %+v %v", deleted, err)
	}
	del := f.srv.RequestsTo("DELETE", "/data/projects/P1")
	if len(del) != 1 || del[0].Query != "removeFiles=true" {
		t.Errorf("delete request %+v", del)
	}
	if _, ok := f.srv.ProjectState("P1"); ok {
		t.Error("project still exists")
	}
	if _, err := f.cl.DeleteProject(ctx, "P1"); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("delete again: %v", err)
	}
	// Without a database the queued-request cleanup is skipped.
	if n := len(f.srv.RequestsTo("POST", "/xapi/dqr/import/queue")); n != 0 {
		t.Errorf("queue cleanup without a database: %d calls", n)
	}
}

func TestSubjectsExperimentsAndExperimentDocument(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	subj, ctID, err := f.srv.AddExperiment("P1", "subj-a", xnattest.Experiment{Label: "ACC-CT", Date: "2024-03-04"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := f.srv.AddExperiment("P1", "subj-b", xnattest.Experiment{Label: "ACC-DX", XSIType: "xnat:dxSessionData"}); err != nil {
		t.Fatal(err)
	}
	exps, err := f.cl.ListExperiments(ctx, "P1")
	if err != nil {
		t.Fatal(err)
	}
	labels := map[string]string{}
	for _, e := range exps {
		labels[e.Label] = e.XSIType
	}
	if len(exps) != 2 || labels["ACC-DX"] != "xnat:dxSessionData" {
		t.Errorf("experiments %+v: chest X-ray sessions must be listed", exps)
	}
	if e := exps[0]; e.ID != ctID || e.Project != "P1" || e.Date != "2024-03-04" || e.URI != "/data/experiments/"+ctID ||
		e.SubjectAssessorID == nil || *e.SubjectAssessorID != ctID || e.InsertDate == "" {
		t.Errorf("experiment %+v", e)
	}
	if r := f.srv.RequestsTo("GET", "/data/experiments"); len(r) != 1 || r[0].Query != "project=P1" {
		t.Errorf("global listing not used: %+v", r)
	}
	subs, err := f.cl.ListSubjects(ctx, "P1")
	if err != nil || len(subs) != 2 || subs[0].ID != subj || subs[0].Label != "subj-a" || subs[0].InsertUser != xnattest.DefaultUsername {
		t.Errorf("subjects %+v %v", subs, err)
	}
	for _, call := range []func() error{
		func() error { _, err := f.cl.ListExperiments(ctx, "nope"); return err },
		func() error { _, err := f.cl.ListSubjects(ctx, "nope"); return err },
		func() error { _, err := f.cl.GetExperiment(ctx, "nope", "ACC-CT"); return err },
		func() error { _, err := f.cl.GetExperiment(ctx, "P1", "ACC-NONE"); return err },
	} {
		if err := call(); !errors.Is(err, xnat.ErrNotFound) {
			t.Errorf("unknown project/experiment: %v", err)
		}
	}
	got, err := f.cl.ExperimentSubjectID(ctx, "P1", "ACC-CT")
	if err != nil || got != subj {
		t.Errorf("subject id %q %v", got, err)
	}
	if r := f.srv.RequestsTo("GET", "/data/projects/P1/experiments/ACC-CT"); len(r) != 1 || r[0].Query != "format=json" {
		t.Errorf("experiment request %+v", r)
	}
}

func TestSubjectIDOf(t *testing.T) {
	for doc, want := range map[string]string{
		`{"items":[{"data_fields":{"subject_ID":"XNAT_S1"}}]}`: "XNAT_S1",
		`{"items":[]}`:                      "",
		`{"items":[{"data_fields":{}}]}`:    "",
		`[]`:                                "",
		`{"items":[{"data_fields":"bad"}]}`: "",
	} {
		got, err := xnat.SubjectIDOf([]byte(doc))
		if got != want || (want == "") != errors.Is(err, xnat.ErrBadResponse) {
			t.Errorf("SubjectIDOf(%s) = %q, %v", doc, got, err)
		}
	}
}

func TestConversionWiring(t *testing.T) {
	f := newFixture(t, xnattest.Options{}, nil)
	ctx := context.Background()
	const image = "ghcr.io/londonaicentre/xnat-dcm2niix:v1.0.20260724"
	f.srv.AddCommand(xnattest.Command{Name: "other", Image: "busybox:latest", Wrapper: "w"})
	_, err := f.cl.FindCommand(ctx, image)
	if !errors.Is(err, xnat.ErrCommandNotFound) || !strings.Contains(err.Error(), "other (busybox:latest)") || len(err.Error()) >= 1000 {
		t.Errorf("missing command: %v", err)
	}
	id := f.srv.AddCommand(xnattest.Command{Name: "dcm2niix", Image: image, Wrapper: "dcm2niix-scan"})
	cmd, err := f.cl.FindCommand(ctx, image)
	if err != nil || cmd != (xnat.Command{ID: id, Wrapper: "dcm2niix-scan"}) {
		t.Fatalf("command %+v %v", cmd, err)
	}
	if r := f.srv.RequestsTo("GET", "/xapi/commands"); r[len(r)-1].Query != "image=ghcr.io%2Flondonaicentre%2Fxnat-dcm2niix%3Av1.0.20260724" {
		t.Errorf("query %q", r[len(r)-1].Query)
	}
	if err := f.srv.AddProject(xnattest.Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.cl.SubscribeConversion(ctx, "P1", cmd, false); err != nil {
		t.Fatal(err)
	}
	st, _ := f.srv.ProjectState("P1")
	if len(st.Subscriptions) != 1 || len(st.EnabledWrappers) != 1 {
		t.Fatalf("state %+v", st)
	}
	sub := st.Subscriptions[0]
	filter := sub["event-filter"].(map[string]any)
	if sub["active"] != false || sub["action-key"] != "org.nrg.containers.services.CommandActionProvider:2" ||
		sub["event-selector"] != "org.nrg.xnat.eventservice.events.ScanEvent:CREATED" || sub["act-as-event-user"] != false ||
		filter["project-ids"].([]any)[0] != "P1" || filter["status"] != "CREATED" ||
		filter["payload-filter"] != `(@.resources.length() > 0 && "DICOM" in @.resources[*].label)` {
		t.Errorf("subscription %v", sub)
	}
	// Without the project-level enablement XNAT refuses the subscription.
	if err := f.srv.AddProject(xnattest.Project{ID: "P2"}); err != nil {
		t.Fatal(err)
	}
	f.srv.InjectFault(xnattest.Fault{Method: "PUT", Path: "/xapi/projects/P2/*", Status: http.StatusNotFound})
	if err := f.cl.SubscribeConversion(ctx, "P2", cmd, true); !errors.Is(err, xnat.ErrNotFound) {
		t.Errorf("enable failure: %v", err)
	}
	if st, _ := f.srv.ProjectState("P2"); len(st.Subscriptions) != 0 {
		t.Error("subscription created although enabling failed")
	}
}
