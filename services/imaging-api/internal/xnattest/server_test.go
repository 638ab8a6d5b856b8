package xnattest

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is a settable test clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

type reply struct {
	status int
	ctype  string
	body   []byte
	header http.Header
}

// send issues a request; auth is "" (none), "basic" (service account) or a
// session id.
func send(t *testing.T, s *Server, method, path, auth, ctype string, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(method, s.URL+path, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	switch auth {
	case "":
	case "basic":
		req.SetBasicAuth(DefaultUsername, DefaultPassword)
	default:
		req.AddCookie(&http.Cookie{Name: "JSESSIONID", Value: auth})
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b, header: resp.Header}
}

func login(t *testing.T, s *Server, user, pass string) reply {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/data/JSESSION", nil)
	req.SetBasicAuth(user, pass)
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, ctype: resp.Header.Get("Content-Type"), body: b, header: resp.Header}
}

func sessionOf(t *testing.T, s *Server) string {
	t.Helper()
	r := login(t, s, DefaultUsername, DefaultPassword)
	if r.status != http.StatusOK {
		t.Fatalf("login: %d %s", r.status, r.body)
	}
	return string(r.body)
}

func TestEveryRouteNeedsAuthentication(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	for _, tc := range []struct{ method, path string }{
		{"GET", "/xapi/users"}, {"GET", "/xapi/users/profiles"}, {"POST", "/xapi/users"},
		{"GET", "/data/projects"}, {"POST", "/data/projects"}, {"DELETE", "/data/projects/P1"},
		{"GET", "/data/experiments?project=P1"}, {"GET", "/data/projects/P1/subjects"},
		{"PUT", "/data/projects/P1/users/Members/u"}, {"GET", "/data/services/tokens/issue/user/u"},
		{"GET", "/xapi/pacs"}, {"GET", "/xapi/pacs/1/status"}, {"POST", "/xapi/dqr/query/studies"},
		{"POST", "/xapi/dqr/import"}, {"POST", "/xapi/dqr/import/queue"}, {"GET", "/xapi/commands"},
		{"GET", "/data/projects/P/subjects/S/experiments/E/scans/ALL/files?format=zip"},
		{"GET", "/no/such/route"},
	} {
		for _, auth := range []string{"", "NOT-A-SESSION"} {
			r := send(t, s, tc.method, tc.path, auth, "", nil)
			if r.status != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s %s auth=%q: status %d, WWW-Authenticate %q", tc.method, tc.path, auth, r.status, r.header.Get("WWW-Authenticate"))
			}
		}
	}
}

func TestLoginSessionAndLogout(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if r := login(t, s, DefaultUsername, "wrong"); r.status != http.StatusUnauthorized {
		t.Fatalf("bad password: %d", r.status)
	}
	r := login(t, s, DefaultUsername, DefaultPassword)
	if r.status != http.StatusOK || !strings.HasPrefix(r.ctype, "text/plain") || len(r.body) != 32 {
		t.Fatalf("login: %d %q %q", r.status, r.ctype, r.body)
	}
	id := string(r.body)
	if !strings.Contains(r.header.Get("Set-Cookie"), "JSESSIONID="+id) {
		t.Errorf("Set-Cookie %q does not carry the session", r.header.Get("Set-Cookie"))
	}
	users := send(t, s, "GET", "/xapi/users", id, "", nil)
	var names []string
	if users.status != http.StatusOK || json.Unmarshal(users.body, &names) != nil || !slices.Contains(names, DefaultUsername) {
		t.Fatalf("GET /xapi/users: %d %s", users.status, users.body)
	}
	if got := s.Logins(); got != 1 {
		t.Errorf("logins = %d", got)
	}
	// Logging in with a live session returns the same session.
	req, _ := http.NewRequest(http.MethodPost, s.URL+"/data/JSESSION", nil)
	req.AddCookie(&http.Cookie{Name: "JSESSIONID", Value: id})
	resp, err := s.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != id || s.Logins() != 1 {
		t.Errorf("re-POST with session gave %q (logins %d)", b, s.Logins())
	}
	if r := send(t, s, "DELETE", "/data/JSESSION", id, "", nil); r.status != http.StatusOK {
		t.Fatalf("logout: %d", r.status)
	}
	if r := send(t, s, "GET", "/xapi/users", id, "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("after logout: %d", r.status)
	}
	// Basic credentials work per request, without a session.
	if r := send(t, s, "GET", "/xapi/users", "basic", "", nil); r.status != http.StatusOK || s.Sessions() != 0 {
		t.Errorf("basic: %d, sessions %d", r.status, s.Sessions())
	}
}

func TestSessionIdleTimeoutAndLockout(t *testing.T) {
	clk := &clock{t: time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)}
	s := New(Options{Now: clk.Now, SessionTimeout: time.Minute, LockoutThreshold: 3, LockoutDuration: time.Hour})
	defer s.Close()
	id := sessionOf(t, s)
	clk.Add(50 * time.Second)
	if r := send(t, s, "GET", "/xapi/users", id, "", nil); r.status != http.StatusOK {
		t.Fatalf("within timeout: %d", r.status)
	}
	clk.Add(50 * time.Second) // idle time counts from the last use
	if r := send(t, s, "GET", "/xapi/users", id, "", nil); r.status != http.StatusOK {
		t.Fatalf("use refreshes the session: %d", r.status)
	}
	clk.Add(61 * time.Second)
	if r := send(t, s, "GET", "/xapi/users", id, "", nil); r.status != http.StatusUnauthorized {
		t.Fatalf("after idle timeout: %d", r.status)
	}
	for range 3 {
		login(t, s, DefaultUsername, "wrong")
	}
	if r := login(t, s, DefaultUsername, DefaultPassword); r.status != http.StatusUnauthorized {
		t.Fatalf("locked account accepted the right password: %d", r.status)
	}
	if u, _ := s.UserState(DefaultUsername); !u.Locked {
		t.Error("account not reported locked")
	}
	clk.Add(time.Hour + time.Second)
	if r := login(t, s, DefaultUsername, DefaultPassword); r.status != http.StatusOK {
		t.Fatalf("after lockout expiry: %d", r.status)
	}
}

func TestAliasTokenLoginAndRevocation(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if _, err := s.AddUser(User{Username: "alice", Password: "pw", Email: "alice@example.org", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	id := sessionOf(t, s)
	r := send(t, s, "GET", "/data/services/tokens/issue/user/alice", id, "", nil)
	var tok struct{ Alias, Secret, XdatUserID string }
	if r.status != http.StatusOK || json.Unmarshal(r.body, &tok) != nil || tok.Alias == "" || tok.Secret == "" {
		t.Fatalf("issue: %d %s", r.status, r.body)
	}
	if r := login(t, s, tok.Alias, tok.Secret); r.status != http.StatusOK {
		t.Fatalf("alias login: %d", r.status)
	}
	if r := send(t, s, "PUT", "/xapi/users/alice", id, "application/json", []byte(`{"password":"new"}`)); r.status != http.StatusOK {
		t.Fatalf("set password: %d", r.status)
	}
	if r := login(t, s, tok.Alias, tok.Secret); r.status != http.StatusUnauthorized {
		t.Errorf("token survived the password change: %d", r.status)
	}
	if r := send(t, s, "GET", "/data/services/tokens/issue/user/nobody", id, "", nil); r.status != http.StatusNotFound {
		t.Errorf("token for unknown user: %d", r.status)
	}
}

func TestProjectCreationContract(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	id := sessionOf(t, s)
	xmlDoc := func(fields string) []byte {
		return []byte(`<xnat:projectData xmlns:xnat="http://x/data/projects">` + fields + `</xnat:projectData>`)
	}
	ok := xmlDoc(`<ID>P1</ID><secondary_ID>hub-1</secondary_ID><name>A &amp; B</name><description>d</description>`)
	for _, tc := range []struct {
		name, ctype string
		body        []byte
		want        int
	}{
		{"json content type", "application/json", ok, http.StatusUnsupportedMediaType},
		{"doctype", "application/xml", append([]byte(`<!DOCTYPE x>`), ok...), http.StatusBadRequest},
		{"bad id", "application/xml", xmlDoc(`<ID>a/b</ID>`), http.StatusBadRequest},
		{"wrong root", "application/xml", []byte(`<project><ID>P9</ID></project>`), http.StatusBadRequest},
		{"created", "application/xml", ok, http.StatusOK},
		{"same id", "application/xml", ok, http.StatusConflict},
		{"same secondary id", "application/xml", xmlDoc(`<ID>P2</ID><secondary_ID>hub-1</secondary_ID><name>other</name>`), http.StatusConflict},
	} {
		r := send(t, s, "POST", "/data/projects", id, tc.ctype, tc.body)
		if r.status != tc.want {
			t.Errorf("%s: status %d (%s), want %d", tc.name, r.status, r.body, tc.want)
		}
		if tc.want == http.StatusOK && (string(r.body) != "P1" || !strings.HasPrefix(r.ctype, "text/plain")) {
			t.Errorf("%s: body %q type %q", tc.name, r.body, r.ctype)
		}
	}
	r := send(t, s, "GET", "/data/projects", id, "", nil)
	if !strings.HasPrefix(r.ctype, "application/json") {
		t.Errorf("listing content type %q", r.ctype)
	}
	var rs struct {
		ResultSet struct {
			Result       []map[string]any
			TotalRecords string `json:"totalRecords"`
		}
	}
	if err := json.Unmarshal(r.body, &rs); err != nil || len(rs.ResultSet.Result) != 1 || rs.ResultSet.TotalRecords != "1" {
		t.Fatalf("listing: %s", r.body)
	}
	want := map[string]any{"ID": "P1", "secondary_ID": "hub-1", "name": "A & B", "description": "d",
		"pi_firstname": "", "pi_lastname": "", "URI": "/data/projects/P1"}
	if got := rs.ResultSet.Result[0]; !mapsEqual(got, want) {
		t.Errorf("project row %v, want %v", got, want)
	}
	if r := send(t, s, "GET", "/data/projects?format=xml", id, "", nil); r.status != http.StatusBadRequest {
		t.Errorf("format=xml: %d", r.status)
	}

	unset := New(Options{SiteURLUnset: true})
	defer unset.Close()
	r = send(t, unset, "POST", "/data/projects", "basic", "text/xml", ok)
	if _, exists := unset.ProjectState("P1"); r.status != http.StatusInternalServerError || !exists {
		t.Errorf("site URL unset: status %d, created %v", r.status, exists)
	}
}

func mapsEqual(a, b map[string]any) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range b {
		if a[k] != v {
			return false
		}
	}
	return true
}

func TestListingsAndExperimentDocument(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if err := s.AddProject(Project{ID: "P1"}); err != nil {
		t.Fatal(err)
	}
	sub, ct, err := s.AddExperiment("P1", "subj-a", Experiment{Label: "ACC1"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddExperiment("P1", "subj-b", Experiment{Label: "ACC2", XSIType: "xnat:dxSessionData"}); err != nil {
		t.Fatal(err)
	}
	id := sessionOf(t, s)
	count := func(path string) int {
		r := send(t, s, "GET", path, id, "", nil)
		var rs struct {
			ResultSet struct{ Result []map[string]any }
		}
		if r.status != http.StatusOK || json.Unmarshal(r.body, &rs) != nil {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		return len(rs.ResultSet.Result)
	}
	if n := count("/data/experiments?project=P1"); n != 2 {
		t.Errorf("global listing: %d experiments, want 2", n)
	}
	if n := count("/data/projects/P1/experiments"); n != 1 {
		t.Errorf("project-scoped listing: %d experiments, want 1 (dx hidden)", n)
	}
	if n := count("/data/projects/P1/subjects"); n != 2 {
		t.Errorf("subjects: %d", n)
	}
	r := send(t, s, "GET", "/data/projects/P1/experiments/ACC1?format=json", id, "", nil)
	var doc struct {
		Items []struct {
			DataFields map[string]any `json:"data_fields"`
		}
	}
	if r.status != http.StatusOK || json.Unmarshal(r.body, &doc) != nil || len(doc.Items) != 1 ||
		doc.Items[0].DataFields["subject_ID"] != sub || doc.Items[0].DataFields["ID"] != ct {
		t.Fatalf("experiment document: %d %s", r.status, r.body)
	}
	if r := send(t, s, "GET", "/data/projects/P1/experiments/NOPE?format=json", id, "", nil); r.status != http.StatusNotFound {
		t.Errorf("unknown experiment: %d", r.status)
	}
}

func TestFaultsAndRecording(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	id := sessionOf(t, s)
	s.InjectFault(Fault{Method: "GET", Path: "/data/*", Status: http.StatusServiceUnavailable, Body: "down", Times: 1})
	if r := send(t, s, "GET", "/data/projects", id, "", nil); r.status != http.StatusServiceUnavailable || string(r.body) != "down" {
		t.Errorf("fault: %d %s", r.status, r.body)
	}
	if r := send(t, s, "GET", "/data/projects", id, "", nil); r.status != http.StatusOK {
		t.Errorf("fault outlived Times: %d", r.status)
	}
	s.InjectFault(Fault{Path: "/xapi/users", ExpireSession: true, Times: 1})
	if r := send(t, s, "GET", "/xapi/users", id, "", nil); r.status != http.StatusUnauthorized {
		t.Errorf("expired session: %d", r.status)
	}
	s.InjectFault(Fault{Path: "/xapi/pacs", Delay: 2 * time.Second})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.URL+"/xapi/pacs", nil)
	start := time.Now()
	if _, err := s.Client().Do(req); err == nil || time.Since(start) > time.Second {
		t.Errorf("slow fault: err %v after %v", err, time.Since(start))
	}
	s.ClearFaults()
	got := s.RequestsTo("GET", "/data/projects")
	if len(got) != 2 || got[0].Status != http.StatusServiceUnavailable || got[1].Status != http.StatusOK || !got[1].Session ||
		got[1].User != DefaultUsername {
		t.Errorf("recorded %+v", got)
	}
}

func TestDQRContract(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	pacs := s.AddPACS(PACS{AETitle: "ORTHANC", Host: "orthanc", Port: 4242})
	if err := s.AddStudy(pacs, Study{StudyInstanceUID: "1.2.3", AccessionNumber: "Acc-1", Modalities: []string{"CT"},
		PatientID: "p1", PatientName: "N^N", PatientSex: "F", Date: "20240102"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddUser(User{Username: "plain", Password: "pw", Email: "p@example.org", Enabled: true}); err != nil {
		t.Fatal(err)
	}
	id := sessionOf(t, s)
	q := func(auth, acc string, pacsID int) reply {
		b, _ := json.Marshal(map[string]any{"accessionNumber": acc, "pacsId": pacsID, "modality": ""})
		return send(t, s, "POST", "/xapi/dqr/query/studies", auth, "application/json", b)
	}
	r := q(id, "acc-1", pacs) // the PACS matches case-insensitively
	var studies []map[string]any
	if r.status != http.StatusOK || json.Unmarshal(r.body, &studies) != nil || len(studies) != 1 ||
		studies[0]["accessionNumber"] != "Acc-1" || studies[0]["patient"].(map[string]any)["sex"] != "F" {
		t.Fatalf("query: %d %s", r.status, r.body)
	}
	for _, k := range []string{"studyInstanceUid", "studyDescription", "studyDate", "modalitiesInStudy", "referringPhysicianName"} {
		if _, ok := studies[0][k]; !ok {
			t.Errorf("study lacks %s", k)
		}
	}
	if r := q(id, "nope", pacs); r.status != http.StatusNoContent || len(r.body) != 0 {
		t.Errorf("no match: %d %q", r.status, r.body)
	}
	if r := q(id, "Acc-1", 99); r.status != http.StatusNotFound {
		t.Errorf("unknown pacs: %d", r.status)
	}
	plain := login(t, s, "plain", "pw")
	if r := q(string(plain.body), "Acc-1", pacs); r.status != http.StatusUnauthorized {
		t.Errorf("without the Dqr role: %d", r.status)
	}

	body := []byte(`{"pacsId":1,"aeTitle":"XNAT","port":8104,"projectId":"P","forceImport":true,"studies":[
		{"studyInstanceUid":"1.2.3","accessionNumber":"Acc-1","relabelMap":{"Subject":"s","Session":"Acc-1"}},
		{"studyInstanceUid":"1.2.3","accessionNumber":"Acc-1","relabelMap":{"Subject":"s","Session":"Acc-1"}},
		{"studyInstanceUid":"9.9.9","accessionNumber":"Gone"}]}`)
	r = send(t, s, "POST", "/xapi/dqr/import", id, "application/json", body)
	var entries []map[string]any
	if r.status != http.StatusOK || json.Unmarshal(r.body, &entries) != nil || len(entries) != 1 {
		t.Fatalf("import: %d %s", r.status, r.body)
	}
	for _, k := range []string{"id", "pacsId", "status", "accessionNumber", "queuedTime", "created", "priority"} {
		if _, ok := entries[0][k]; !ok {
			t.Errorf("import entry lacks %s", k)
		}
	}
	if entries[0]["status"] != StatusQueued || entries[0]["destination"] != "XNAT:8104" {
		t.Errorf("entry %v", entries[0])
	}
	queuedID, _ := json.Marshal(entries[0]["id"])
	if r := send(t, s, "POST", "/xapi/dqr/import/queue", id, "application/json", []byte("["+string(queuedID)+"]")); r.status != http.StatusOK {
		t.Fatalf("delete queued: %d", r.status)
	}
	if reqs := s.ImportRequests(); len(reqs) != 0 {
		t.Errorf("queue after delete: %+v", reqs)
	}
}

func TestDownloadZipLayoutAndUpload(t *testing.T) {
	s := New(Options{})
	defer s.Close()
	if err := s.AddProject(Project{ID: "P"}); err != nil {
		t.Fatal(err)
	}
	subj, _, err := s.AddExperiment("P", "subj", Experiment{Label: "ACC", Scans: []Scan{
		{ID: "1", Resources: map[string]map[string][]byte{"DICOM": {"a.dcm": []byte("dicom")}, "NIFTI": {"a.nii.gz": []byte("nifti")}}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	id := sessionOf(t, s)
	base := "/data/projects/P/subjects/" + subj + "/experiments/ACC/scans/ALL"
	r := send(t, s, "GET", base+"/resources/NIFTI/files?format=zip", id, "", nil)
	if r.status != http.StatusOK || r.ctype != "application/zip" {
		t.Fatalf("download: %d %q", r.status, r.ctype)
	}
	zr, err := zip.NewReader(bytes.NewReader(r.body), int64(len(r.body)))
	if err != nil || len(zr.File) != 1 || zr.File[0].Name != "ACC/scans/1/resources/NIFTI/files/a.nii.gz" {
		t.Fatalf("zip: %v %+v", err, zr)
	}
	r = send(t, s, "GET", base+"/files?format=zip", id, "", nil)
	if zr, err := zip.NewReader(bytes.NewReader(r.body), int64(len(r.body))); err != nil || len(zr.File) != 2 {
		t.Errorf("ALL resources: %v", err)
	}
	if r := send(t, s, "GET", base+"/resources/SEG/files?format=zip", id, "", nil); r.status != http.StatusNotFound {
		t.Errorf("no files: %d", r.status)
	}
	file := "/data/projects/P/subjects/subj/experiments/ACC/scans/1/resources/LABELS/files/l.nii"
	if r := send(t, s, "PUT", file+"?inbody=true", id, "", []byte("v1")); r.status != http.StatusCreated {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	if r := send(t, s, "PUT", file+"?inbody=true", id, "", []byte("v2")); r.status != http.StatusConflict {
		t.Errorf("overwrite without overwrite=true: %d", r.status)
	}
	if r := send(t, s, "GET", file, id, "", nil); r.status != http.StatusOK || string(r.body) != "v1" {
		t.Errorf("read back: %d %q", r.status, r.body)
	}
}
