package tasks

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/hubapi"
	"github.com/flip-trust/node/shared/mesh"
)

var (
	testAESKey      = base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	testInternalKey = []byte("internal-key-internal-key-internal-key!!")
	fixedNow        = time.Date(2025, 3, 4, 23, 30, 0, 0, time.FixedZone("X", 5*3600))
)

const (
	projectUUID = "2b8e4f5c-1d2a-4c3b-9e8f-0a1b2c3d4e5f"
	trustUUID   = "7c9e6679-7425-40de-944b-e07fc1f90ae7"
	queryUUID   = "0f0e0d0c-0b0a-4908-8706-050403020100"
)

// seen is one request an internal-service stand-in received after it passed
// mesh authentication.
type seen struct {
	method, path, rawQuery string
	body                   []byte
	header                 http.Header
	caller                 string
}

// fakeService is an internal service stand-in: it authenticates every
// request with the real mesh.Verifier and answers with respond.
type fakeService struct {
	t       *testing.T
	srv     *httptest.Server
	mu      sync.Mutex
	reqs    []seen
	respond func(w http.ResponseWriter, r *http.Request)
}

func newFakeService(t *testing.T, audience string) *fakeService {
	t.Helper()
	f := &fakeService{t: t}
	v := mesh.NewVerifier(audience, testInternalKey, "", slog.New(slog.DiscardHandler))
	h := v.Require("trust-api", mesh.CallerRawKey)(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		caller, _ := mesh.CallerFrom(r.Context())
		f.mu.Lock()
		f.reqs = append(f.reqs, seen{r.Method, r.URL.Path, r.URL.RawQuery, body, r.Header.Clone(), caller})
		respond := f.respond
		f.mu.Unlock()
		if respond == nil {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"ok":true}`)
			return
		}
		respond(w, r)
	}))
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	return f
}

func (f *fakeService) requests() []seen {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]seen(nil), f.reqs...)
}

func reply(status int, body string) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, body)
	}
}

type rig struct {
	exec    *Executor
	cipher  *envelope.Cipher
	data    *fakeService
	imaging *fakeService
}

func newRig(t *testing.T, mode mesh.AuthMode) *rig {
	t.Helper()
	c, err := envelope.NewFromBase64(testAESKey)
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{cipher: c, data: newFakeService(t, AudienceDataAccess), imaging: newFakeService(t, AudienceImaging)}
	r.exec = NewExecutor(Config{
		DataAccessURL:      r.data.srv.URL + "/",
		ImagingURL:         r.imaging.srv.URL,
		CohortQueryTimeout: 2 * time.Second,
		RequestTimeout:     2 * time.Second,
		CohortAdminProof:   envelope.CohortAdminProof(testAESKey),
		Now:                func() time.Time { return fixedNow },
	}, c, MeshAuthorizer{Signer: mesh.NewSigner("trust-api", testInternalKey), Mode: mode}, &http.Client{}, slog.New(slog.DiscardHandler))
	return r
}

func (r *rig) run(t *testing.T, tt hubapi.TaskType, payload any) Outcome {
	t.Helper()
	plain, err := json.Marshal(payload)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := r.cipher.Seal(plain, envelope.TaskContext(string(tt)))
	if err != nil {
		t.Fatal(err)
	}
	return r.exec.Execute(context.Background(), "task-1", tt, sealed)
}

func jsonEqual(t *testing.T, got []byte, want string) {
	t.Helper()
	var a, b any
	if err := json.Unmarshal(got, &a); err != nil {
		t.Fatalf("not JSON: %s", got)
	}
	if err := json.Unmarshal([]byte(want), &b); err != nil {
		t.Fatalf("bad want: %s", want)
	}
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	if string(ja) != string(jb) {
		t.Fatalf("JSON differs\n got: %s\nwant: %s", ja, jb)
	}
}

func one(t *testing.T, f *fakeService) seen {
	t.Helper()
	reqs := f.requests()
	if len(reqs) != 1 {
		t.Fatalf("want exactly one request, got %d", len(reqs))
	}
	return reqs[0]
}

func cohortPayload() map[string]any {
	return map[string]any{
		"encrypted_project_id": "ENC", "query_id": queryUUID, "query_name": "q",
		"query": "SELECT person_id FROM omop.person", "trust_id": trustUUID,
	}
}

func TestCohortQuery(t *testing.T) {
	t.Parallel()
	t.Run("success stringifies values and queues stats", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, mesh.ModeJWT)
		r.data.respond = reply(200, `{"query_id":"`+queryUUID+`","trust_id":"`+trustUUID+`","created":"2025-03-04","record_count":24,
			"data":[{"name":"Age","results":[{"value":42,"count":11},{"value":"Other","count":13},{"value":1.5,"count":0},{"value":true,"count":1},{"value":null,"count":2}]}],"suppressed":false,"error":null}`)
		out := r.run(t, hubapi.CohortQuery, cohortPayload())
		if !out.Success || out.Result != nil || out.Err != "" {
			t.Fatalf("outcome %+v", out)
		}
		req := one(t, r.data)
		if req.method != http.MethodPost || req.path != "/cohort" || req.caller != "trust-api" {
			t.Fatalf("request %s %s caller=%q", req.method, req.path, req.caller)
		}
		plain, _ := json.Marshal(cohortPayload())
		jsonEqual(t, req.body, string(plain))
		jsonEqual(t, out.CohortResults, `{"query_id":"`+queryUUID+`","trust_id":"`+trustUUID+`","created":"2025-03-04","record_count":24,
			"data":[{"name":"Age","results":[{"value":"42","count":11},{"value":"Other","count":13},{"value":"1.5","count":0},{"value":"True","count":1},{"value":"None","count":2}]}],"suppressed":false,"error":null}`)
	})
	t.Run("upstream error queues error envelope", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, mesh.ModeJWT)
		r.data.respond = reply(400, `{"detail":"query_failed: SELECT * FROM omop.person WHERE person_id = 4711"}`)
		out := r.run(t, hubapi.CohortQuery, cohortPayload())
		// The upstream body is reduced to its category: no SQL or ids leave.
		want := `400: invalid request`
		if out.Success || out.Err != want || out.StatusCode != nil {
			t.Fatalf("outcome %+v", out)
		}
		jsonEqual(t, out.CohortResults, `{"query_id":"`+queryUUID+`","trust_id":"`+trustUUID+`","created":"2025-03-04","record_count":0,"data":[],"suppressed":false,"error":`+mustJSON(want)+`}`)
	})
	t.Run("missing ids skip the error envelope", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, mesh.ModeJWT)
		r.data.respond = reply(500, `boom`)
		p := cohortPayload()
		delete(p, "trust_id")
		out := r.run(t, hubapi.CohortQuery, p)
		if out.Success || out.Err != "500: internal error" || out.CohortResults != nil {
			t.Fatalf("outcome %+v", out)
		}
	})
	t.Run("unreachable service is a 502 without the URL", func(t *testing.T) {
		t.Parallel()
		r := newRig(t, mesh.ModeJWT)
		r.data.srv.Close()
		out := r.run(t, hubapi.CohortQuery, cohortPayload())
		if out.Success || !strings.HasPrefix(out.Err, "502: Failed to connect to remote service: ") || strings.Contains(out.Err, "http://") {
			t.Fatalf("outcome %+v", out)
		}
		if out.CohortResults == nil {
			t.Fatal("no error envelope queued")
		}
	})
}

func mustJSON(s string) string { b, _ := json.Marshal(s); return string(b) }

func TestPersistCohort(t *testing.T) {
	t.Parallel()
	r := newRig(t, mesh.ModeJWT)
	r.data.respond = reply(200, `{"row_count": 24, "columns": ["a"], "has_accessions": true, "snapshot_at": "x", "query_hash": "abc"}`)
	p := map[string]any{"project_id": projectUUID, "trust_id": trustUUID, "encrypted_project_id": "ENC", "query": "SELECT 1", "query_id": queryUUID}
	out := r.run(t, hubapi.PersistCohort, p)
	if !out.Success || out.Result == nil || *out.Result != `{"row_count":24,"columns":["a"],"has_accessions":true,"snapshot_at":"x","query_hash":"abc"}` {
		t.Fatalf("outcome %+v", out)
	}
	req := one(t, r.data)
	if req.method != http.MethodPost || req.path != "/cohort/snapshot" {
		t.Fatalf("request %s %s", req.method, req.path)
	}
	jsonEqual(t, req.body, `{"encrypted_project_id":"ENC","query":"SELECT 1"}`)
	if got := req.header.Get(mesh.HeaderCohortAdmin); got != envelope.CohortAdminProof(testAESKey) || strings.Contains(got, testAESKey) {
		t.Fatalf("cohort admin proof %q", got)
	}

	r.data.respond = reply(403, `{"detail":"Cohort too small"}`)
	out = r.run(t, hubapi.PersistCohort, p)
	if out.Success || out.Err != `403: refused by policy` {
		t.Fatalf("403 outcome %+v", out)
	}
}

func TestImagingHandlers(t *testing.T) {
	t.Parallel()
	encoded := base64.RawURLEncoding.EncodeToString([]byte("SELECT * FROM x"))
	tests := []struct {
		name       string
		tt         hubapi.TaskType
		payload    map[string]any
		respond    func(http.ResponseWriter, *http.Request)
		method     string
		path       string
		query      string
		body       string // expected JSON body ("" = no body expected)
		wantResult string // "" = null
		wantErr    string
		wantCode   int
	}{
		{
			name: "create_imaging", tt: hubapi.CreateImaging,
			payload: map[string]any{"project_id": projectUUID, "trust_id": trustUUID, "project_name": "P", "query": nil, "users": []any{map[string]any{"id": "u", "email": "a@b.org", "is_disabled": false}}, "dicom_to_nifti": true},
			respond: reply(200, `{"ID": "`+projectUUID+`", "name": "P", "created_users": [], "added_users": []}`),
			method:  http.MethodPost, path: "/projects/create-project-from-central-hub-project",
			body:       `{"project_id":"` + projectUUID + `","trust_id":"` + trustUUID + `","project_name":"P","query":null,"users":[{"id":"u","email":"a@b.org","is_disabled":false}],"dicom_to_nifti":true}`,
			wantResult: `{"ID":"` + projectUUID + `","name":"P","created_users":[],"added_users":[]}`,
		},
		{
			name: "delete_imaging", tt: hubapi.DeleteImaging, payload: map[string]any{"imaging_project_id": projectUUID},
			respond: reply(200, `null`), method: http.MethodDelete, path: "/projects/" + projectUUID,
		},
		{
			name: "delete_imaging empty 204", tt: hubapi.DeleteImaging, payload: map[string]any{"imaging_project_id": projectUUID},
			respond: func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(204) }, method: http.MethodDelete, path: "/projects/" + projectUUID,
		},
		{
			name: "get_imaging_status", tt: hubapi.GetImagingStatus, payload: map[string]any{"imaging_project_id": "XNAT_P1", "encoded_query": encoded},
			respond: reply(200, `{"import_status": {"successful_count": 3}}`), method: http.MethodGet,
			path: "/retrieval/import_status_count/XNAT_P1", query: "encoded_query=" + encoded,
			wantResult: `{"import_status":{"successful_count":3}}`,
		},
		{
			name: "get_imaging_status 404 carries status_code", tt: hubapi.GetImagingStatus, payload: map[string]any{"imaging_project_id": "XNAT_P1", "encoded_query": encoded},
			respond: reply(404, `{"detail":"Project not found"}`), method: http.MethodGet,
			path: "/retrieval/import_status_count/XNAT_P1", query: "encoded_query=" + encoded,
			wantErr: `404: not found`, wantCode: 404,
		},
		{
			name: "reimport_studies", tt: hubapi.ReimportStudies, payload: map[string]any{"imaging_project_id": projectUUID, "encoded_query": encoded},
			respond: reply(200, `{"queued": 2}`), method: http.MethodPut,
			path: "/retrieval/reimport_imaging_project_studies/" + projectUUID, query: "encoded_query=" + encoded,
		},
		{
			name: "update_user_profile", tt: hubapi.UpdateUserProfile, payload: map[string]any{"email": "jane.doe@nhs.example.uk", "enabled": false},
			respond: reply(200, `{}`), method: http.MethodPut, path: "/users", body: `{"email":"jane.doe@nhs.example.uk","enabled":false}`,
		},
		{
			name: "non-JSON 2xx", tt: hubapi.CreateImaging,
			payload: map[string]any{"project_id": projectUUID, "trust_id": trustUUID, "project_name": "P"},
			respond: func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "<html>ok</html>") },
			method:  http.MethodPost, path: "/projects/create-project-from-central-hub-project",
			body:    `{"project_id":"` + projectUUID + `","trust_id":"` + trustUUID + `","project_name":"P"}`,
			wantErr: "502: External API returned non-JSON response",
		},
		{
			name: "upstream error text never leaves", tt: hubapi.ReimportStudies, payload: map[string]any{"imaging_project_id": projectUUID, "encoded_query": encoded},
			respond: reply(500, `{"detail":"jane.doe@nhs.example.uk ACC-0042 "}`+strings.Repeat("é", 800)), method: http.MethodPut,
			path: "/retrieval/reimport_imaging_project_studies/" + projectUUID, query: "encoded_query=" + encoded,
			wantErr: "500: internal error",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, mesh.ModeJWT)
			r.imaging.respond = tc.respond
			out := r.run(t, tc.tt, tc.payload)
			req := one(t, r.imaging)
			if req.method != tc.method || req.path != tc.path || req.rawQuery != tc.query {
				t.Fatalf("request %s %s?%s", req.method, req.path, req.rawQuery)
			}
			if req.caller != "trust-api" || !strings.HasPrefix(req.header.Get("Authorization"), "Bearer ") {
				t.Fatalf("not authenticated as trust-api: caller=%q", req.caller)
			}
			if tc.body != "" {
				jsonEqual(t, req.body, tc.body)
			} else if len(req.body) != 0 {
				t.Fatalf("unexpected body %s", req.body)
			}
			if tc.wantErr != "" {
				if out.Success || out.Err != tc.wantErr {
					t.Fatalf("outcome %+v", out)
				}
				if (tc.wantCode == 0) != (out.StatusCode == nil) || (out.StatusCode != nil && *out.StatusCode != tc.wantCode) {
					t.Fatalf("status code %v want %d", out.StatusCode, tc.wantCode)
				}
				return
			}
			if !out.Success || out.StatusCode != nil {
				t.Fatalf("outcome %+v", out)
			}
			if tc.wantResult == "" && out.Result != nil {
				t.Fatalf("want null result, got %q", *out.Result)
			}
			if tc.wantResult != "" && (out.Result == nil || *out.Result != tc.wantResult) {
				t.Fatalf("result %v", out.Result)
			}
		})
	}
}

func TestValidationMakesNoRequest(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		tt      hubapi.TaskType
		payload map[string]any
		field   string
	}{
		{"delete non-uuid", hubapi.DeleteImaging, map[string]any{"imaging_project_id": "../other-resource"}, "imaging_project_id"},
		{"status traversal", hubapi.GetImagingStatus, map[string]any{"imaging_project_id": "../../users", "encoded_query": "abc"}, "imaging_project_id"},
		{"status bad query", hubapi.GetImagingStatus, map[string]any{"imaging_project_id": "P1", "encoded_query": "a b&c"}, "encoded_query"},
		{"reimport missing query", hubapi.ReimportStudies, map[string]any{"imaging_project_id": "P1"}, "encoded_query"},
		{"bad email", hubapi.UpdateUserProfile, map[string]any{"email": "Jane <not-an-email>", "enabled": true}, "email"},
		{"email without domain dot", hubapi.UpdateUserProfile, map[string]any{"email": "jane@localhost", "enabled": true}, "email"},
		{"enabled missing", hubapi.UpdateUserProfile, map[string]any{"email": "jane@nhs.example.uk"}, "enabled"},
		{"create bad project id", hubapi.CreateImaging, map[string]any{"project_id": "x", "trust_id": trustUUID, "project_name": "P"}, "project_id"},
		{"persist missing query", hubapi.PersistCohort, map[string]any{"encrypted_project_id": "E"}, "query"},
		{"cohort missing query", hubapi.CohortQuery, map[string]any{"query_id": queryUUID, "trust_id": trustUUID}, "query"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, mesh.ModeJWT)
			out := r.run(t, tc.tt, tc.payload)
			if out.Success || !strings.Contains(out.Err, "validation error") || !strings.Contains(out.Err, tc.field) {
				t.Fatalf("outcome %+v", out)
			}
			if n := len(r.imaging.requests()) + len(r.data.requests()); n != 0 {
				t.Fatalf("%d requests made for an invalid payload", n)
			}
			if email, _ := tc.payload["email"].(string); email != "" && strings.Contains(out.Err, email) {
				t.Fatal("validation error echoes the email")
			}
		})
	}
}

type spyOpener struct{ calls int }

func (s *spyOpener) Open(string, string) ([]byte, error) { s.calls++; return []byte(`{}`), nil }

func TestExecuteEnvelopeErrors(t *testing.T) {
	t.Parallel()
	r := newRig(t, mesh.ModeJWT)

	spy := &spyOpener{}
	e2 := NewExecutor(Config{}, spy, MeshAuthorizer{}, &http.Client{}, slog.New(slog.DiscardHandler))
	if out := e2.Execute(context.Background(), "t", "train_model", "x"); out.Err != "Unknown task type: train_model" || spy.calls != 0 {
		t.Fatalf("unknown type: %+v, opener calls %d", out, spy.calls)
	}

	sealedForStatus, _ := r.cipher.Seal([]byte(`{"imaging_project_id":"`+projectUUID+`"}`), envelope.TaskContext(string(hubapi.GetImagingStatus)))
	notObject, _ := r.cipher.Seal([]byte(`[1,2]`), envelope.TaskContext(string(hubapi.DeleteImaging)))
	tests := []struct {
		name, sealed, want string
	}{
		{"retargeted payload", sealedForStatus, "Invalid payload: failed authentication"},
		{"not an envelope", "{}", "Invalid payload: Payload is not a FLIP encryption envelope"},
		{"unknown kid", base64.StdEncoding.EncodeToString([]byte(`{"v":1,"kid":"trust-x","iv":"AAECAwQFBgcICQoL","ct":"AAAA"}`)), "Invalid payload: No key registered for kid 'trust-x'"},
		{"plaintext not an object", notObject, "Invalid payload: payload is not a JSON object"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := r.exec.Execute(context.Background(), "t", hubapi.DeleteImaging, tc.sealed)
			if out.Success || out.Err != tc.want {
				t.Fatalf("got %+v want %q", out, tc.want)
			}
		})
	}
	if n := len(r.imaging.requests()); n != 0 {
		t.Fatalf("handler ran for a bad payload (%d requests)", n)
	}
}

func TestKeyModeSendsRawHeader(t *testing.T) {
	t.Parallel()
	r := newRig(t, mesh.ModeKey)
	out := r.run(t, hubapi.DeleteImaging, map[string]any{"imaging_project_id": projectUUID})
	if !out.Success {
		t.Fatalf("outcome %+v", out)
	}
	req := one(t, r.imaging)
	if req.caller != mesh.CallerRawKey || req.header.Get(mesh.HeaderInternalKey) != string(testInternalKey) || req.header.Get("Authorization") != "" {
		t.Fatalf("key mode: caller=%q", req.caller)
	}
}

func TestShortKeyFailsWithoutRequest(t *testing.T) {
	t.Parallel()
	r := newRig(t, mesh.ModeJWT)
	r.exec.auth = MeshAuthorizer{Signer: mesh.NewSigner("trust-api", []byte("short")), Mode: mesh.ModeJWT}
	out := r.run(t, hubapi.DeleteImaging, map[string]any{"imaging_project_id": projectUUID})
	if out.Success || !strings.HasPrefix(out.Err, "502: ") {
		t.Fatalf("outcome %+v", out)
	}
	if len(r.imaging.requests()) != 0 {
		t.Fatal("request sent without usable credentials")
	}
}

func TestCohortTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, mesh.ModeJWT)
	r.exec.cfg.CohortQueryTimeout = 100 * time.Millisecond
	release := make(chan struct{})
	defer close(release)
	r.data.respond = func(w http.ResponseWriter, req *http.Request) {
		select {
		case <-release:
		case <-req.Context().Done():
		}
	}
	start := time.Now()
	out := r.run(t, hubapi.CohortQuery, cohortPayload())
	if out.Success || !strings.HasPrefix(out.Err, "502: Failed to connect to remote service: ") {
		t.Fatalf("outcome %+v", out)
	}
	if time.Since(start) > 2*time.Second {
		t.Fatal("COHORT_QUERY_TIMEOUT not applied")
	}
}

func TestReadOnly(t *testing.T) {
	t.Parallel()
	for _, tt := range hubapi.TaskTypes {
		want := tt == hubapi.CohortQuery || tt == hubapi.GetImagingStatus
		if ReadOnly(tt) != want {
			t.Errorf("ReadOnly(%s) = %v", tt, !want)
		}
	}
}
