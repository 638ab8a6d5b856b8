package api_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/api"
	"github.com/flip-trust/node/services/data-access-api/internal/cohort"
	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
	"github.com/flip-trust/node/services/data-access-api/internal/policy"
	"github.com/flip-trust/node/services/data-access-api/internal/snapshot"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
	"github.com/flip-trust/node/shared/proctest"
)

const (
	internalKey = "test-trust-internal-key-0123456789abcdef"
	aesKey      = "QgZ+TBA0lUxcuCiRPLneFe/JjMaUEUJWHACHHGz2gGA="
	floor       = 5
	projectA    = "6f1d2c3b-4a59-4e8f-9a0b-1c2d3e4f5a6b"
	projectB    = "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
)

// The fixture's imaging cohort: 24 studies of 12 persons.
const imagingQuery = `SELECT p.person_id, io.accession_id, io.modality_concept_id
FROM person p JOIN image_occurrence io ON io.person_id = p.person_id`

var (
	db *pgtest.DB
	// cloneAdmin and cloneReader reach a copy of the fixture that tests may change.
	cloneAdmin, cloneReader string
	engine                  *cohort.Engine
	cipher                  *envelope.Cipher
)

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	db, err = pgtest.Start(ctx)
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		os.Exit(1)
	}
	code := 1
	defer func() { db.Close(); cancel(); os.Exit(code) }()
	if err := pgtest.ExecFile(ctx, db.AdminDSN, "../../testdata/fixture.sql"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if cloneAdmin, cloneReader, err = db.Clone(ctx); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	if engine, err = cohort.New(cohort.Options{DSN: db.ReaderDSN, MaxConns: 4, QueryTimeout: 20 * time.Second}); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer engine.Close()
	if cipher, err = envelope.NewFromBase64(aesKey); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	code = m.Run()
}

type env struct {
	t     *testing.T
	url   string
	store *snapshot.Store
	logs  *proctest.Buffer
}

type setup struct {
	engine  api.Engine
	policy  *policy.Policy
	noStore bool
}

func newEnv(t *testing.T, opts ...func(*setup)) *env {
	t.Helper()
	s := setup{engine: engine}
	for _, o := range opts {
		o(&s)
	}
	logs := &proctest.Buffer{}
	logger, err := logging.New(logs, logging.Options{Service: "data-access-api"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if s.noStore {
		dir = ""
	}
	store := snapshot.Open(dir, 64<<20, logger.Slog())
	store.Ensure()
	srv := httpx.NewServer(httpx.DefaultConfig(":0"), logger.Slog(), nil, nil)
	api.New(api.Options{
		Engine: s.engine, Cipher: cipher, Policy: s.policy, Store: store, Threshold: floor,
		Verifier:     mesh.NewVerifier("data-access-api", []byte(internalKey), mesh.HeaderInternalKey, logger.Slog()),
		AESKeyBase64: aesKey, Logger: logger.Slog(), SpoolDir: t.TempDir(),
	}).Mount(srv.Router())
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &env{t: t, url: hs.URL, store: store, logs: logs}
}

func withPolicy(p *policy.Policy) func(*setup) { return func(s *setup) { s.policy = p } }
func withEngine(e api.Engine) func(*setup)     { return func(s *setup) { s.engine = e } }

func seal(t *testing.T, projectID string) string {
	t.Helper()
	enc, err := cipher.Seal([]byte(projectID), envelope.ProjectIDContext)
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

type reply struct {
	status int
	body   []byte
	header http.Header
}

func (r reply) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	return m
}

func (r reply) detail(t *testing.T) string {
	t.Helper()
	d, _ := r.json(t)["detail"].(string)
	return d
}

// post sends body to path with the internal key, plus the cohort-admin proof
// when admin.
func (e *env) post(path string, body any, admin bool, header ...string) reply {
	e.t.Helper()
	b, _ := json.Marshal(body)
	req, _ := http.NewRequest(http.MethodPost, e.url+path, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(mesh.HeaderInternalKey, internalKey)
	if admin {
		req.Header.Set(mesh.HeaderCohortAdmin, envelope.CohortAdminProof(aesKey))
	}
	for i := 0; i+1 < len(header); i += 2 {
		if header[i+1] == "" {
			req.Header.Del(header[i])
		} else {
			req.Header.Set(header[i], header[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return reply{status: resp.StatusCode, body: rb, header: resp.Header}
}

func cohortBody(t *testing.T, query string) map[string]string {
	return map[string]string{"encrypted_project_id": seal(t, projectA), "query_id": "q-1", "query_name": "test",
		"query": query, "trust_id": "trust-1"}
}

func TestAuthOnEveryRoute(t *testing.T) {
	e := newEnv(t)
	routes := []struct {
		path  string
		write bool
	}{{"/cohort", false}, {"/cohort/dataframe", false}, {"/cohort/accession-ids", false}, {"/cohort/snapshot", true}, {"/cohort/snapshot/delete", true}}
	body := cohortBody(t, imagingQuery)
	for _, r := range routes {
		if got := e.post(r.path, body, true, mesh.HeaderInternalKey, ""); got.status != 401 || !strings.Contains(got.detail(t), "missing") {
			t.Errorf("%s without key: %d %s", r.path, got.status, got.body)
		}
		if got := e.post(r.path, body, true, mesh.HeaderInternalKey, "wrong-key-wrong-key-wrong-key-wrong-key"); got.status != 401 || !strings.Contains(got.detail(t), "Invalid") {
			t.Errorf("%s with a wrong key: %d %s", r.path, got.status, got.body)
		}
		noProof := e.post(r.path, body, false)
		badProof := e.post(r.path, body, false, mesh.HeaderCohortAdmin, strings.Repeat("0", 64))
		for _, got := range []reply{noProof, badProof} {
			isAdminRefusal := got.status == 403 && got.detail(t) == api.DetailNotAdmin
			if r.write != isAdminRefusal {
				t.Errorf("%s without a valid cohort-admin proof: %d %s", r.path, got.status, got.body)
			}
		}
	}
}

// statsWire is the statistics body as the hub reads it.
type statsWire struct {
	QueryID     string `json:"query_id"`
	TrustID     string `json:"trust_id"`
	RecordCount int64  `json:"record_count"`
	Created     string `json:"created"`
	Data        []struct {
		Name    string `json:"name"`
		Results []struct {
			Value string `json:"value"`
			Count int64  `json:"count"`
		} `json:"results"`
	} `json:"data"`
	Suppressed bool `json:"suppressed"`
}

func TestStatisticsRoute(t *testing.T) {
	e := newEnv(t)
	got := e.post("/cohort", cohortBody(t, imagingQuery), false)
	if got.status != 200 {
		t.Fatalf("status %d: %s", got.status, got.body)
	}
	var resp statsWire
	if err := json.Unmarshal(got.body, &resp); err != nil {
		t.Fatal(err)
	}
	want := `[{"name":"Counts","results":[{"value":"person\nid","count":24},{"value":"accession\nid","count":24},{"value":"modality\nconcept\nid","count":24}]},` +
		`{"name":"Nulls","results":[{"value":"person\nid","count":0},{"value":"accession\nid","count":0},{"value":"modality\nconcept\nid","count":0}]},` +
		`{"name":"Age Distribution","results":[{"value":"Other","count":12}]},` +
		`{"name":"Sex Distribution","results":[{"value":"F","count":6},{"value":"M","count":6}]},` +
		`{"name":"Modality Distribution","results":[{"value":"CT","count":12},{"value":"MR","count":8}]}]`
	data, _ := json.Marshal(resp.Data)
	if string(data) != want {
		t.Errorf("data\n got %s\nwant %s", data, want)
	}
	if resp.RecordCount != 12 || resp.Suppressed || resp.QueryID != "q-1" || resp.TrustID != "trust-1" ||
		resp.Created != time.Now().UTC().Format("2006-01-02") {
		t.Errorf("response %+v", resp)
	}
	if strings.Contains(e.logs.String(), "image_occurrence") || strings.Contains(e.logs.String(), "ACC-") {
		t.Errorf("logs carry SQL or identifiers:\n%s", e.logs.String())
	}
	if !strings.Contains(e.logs.String(), logging.QueryHash(imagingQuery)) {
		t.Errorf("logs lack the query hash")
	}
}

// Below the floor, zero, uncountable and denied cohorts answer the same.
func TestStatisticsSuppression(t *testing.T) {
	e := newEnv(t)
	queries := map[string]string{
		"below floor (2 persons)": `SELECT p.person_id FROM person p JOIN image_occurrence io ON io.person_id = p.person_id WHERE io.modality_concept_id = 2000003`,
		"zero":                    `SELECT person_id FROM person WHERE person_id > 1000`,
		"uncountable":             `SELECT gender_source_value FROM person`,
		"null subjects":           `SELECT NULL::int AS person_id FROM person`,
	}
	want := fmt.Sprintf(`{"query_id":"q-1","trust_id":"trust-1","record_count":0,"created":"%s","data":[],"suppressed":true}`+"\n",
		time.Now().UTC().Format("2006-01-02"))
	for name, q := range queries {
		got := e.post("/cohort", cohortBody(t, q), false)
		if got.status != 200 || string(got.body) != want {
			t.Errorf("%s: %d %s", name, got.status, got.body)
		}
	}
}

func TestStatisticsErrors(t *testing.T) {
	e := newEnv(t)
	cases := []struct {
		query, detail string
		status        int
	}{
		{"SELECT 1; DROP TABLE person", "one SQL statement", 400},
		{"DELETE FROM person", "Only SELECT", 400},
		{"SELECT person_id FROM pg_catalog.pg_authid", "Schema 'pg_catalog' is not accessible", 400},
		{"SELECT person_id FROM nosuch", "The table 'omop.nosuch' does not exist.", 400},
		{"SELECT nosuch AS person_id FROM person", "The column 'nosuch' does not exist.", 400},
		{"SELECT pg_sleep(1) AS person_id", "not an allowed function", 400},
	}
	for _, c := range cases {
		got := e.post("/cohort", cohortBody(t, c.query), false)
		if got.status != c.status || !strings.Contains(got.detail(t), c.detail) {
			t.Errorf("%q: %d %s; want %d containing %q", c.query, got.status, got.body, c.status, c.detail)
		}
	}
	body := cohortBody(t, imagingQuery)
	delete(body, "trust_id")
	if got := e.post("/cohort", body, false); got.status != 422 || !strings.Contains(got.detail(t), "trust_id") {
		t.Errorf("missing trust_id: %d %s", got.status, got.body)
	}
}

func mustPolicy(t *testing.T, doc string) *policy.Policy {
	t.Helper()
	p, err := policy.Parse([]byte(doc), "test.toml", floor)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPolicyDecisions(t *testing.T) {
	p := mustPolicy(t, fmt.Sprintf(`
[[access.rule]]
id = "withdrawn-project"
action = "cohort.statistics"
effect = "deny"
projects = ["%s"]

[[access.rule]]
id = "everyone-else"
action = "cohort.statistics"
effect = "permit"
min_cohort_size = 13
`, projectB))
	e := newEnv(t, withPolicy(p))
	// 12 subjects: below the rule's 13 although above the floor of 5.
	if got := e.post("/cohort", cohortBody(t, imagingQuery), false).json(t); got["suppressed"] != true {
		t.Errorf("12 subjects under min_cohort_size 13: %v", got)
	}
	// 16 subjects clear it; small cells fold at 13 too.
	got := e.post("/cohort", cohortBody(t, "SELECT person_id, gender_source_value FROM person"), false)
	var resp statsWire
	_ = json.Unmarshal(got.body, &resp)
	if resp.Suppressed || resp.RecordCount != 16 {
		t.Fatalf("16 subjects: %s", got.body)
	}
	if age, _ := json.Marshal(resp.Data[2]); string(age) != `{"name":"Age Distribution","results":[{"value":"Other","count":16}]}` {
		t.Errorf("age at 13: %s", age)
	}
	// The denied project gets the suppressed answer; the rule id is logged, not returned.
	body := cohortBody(t, "SELECT person_id, gender_source_value FROM person")
	body["encrypted_project_id"] = seal(t, projectB)
	denied := e.post("/cohort", body, false)
	if denied.json(t)["suppressed"] != true || strings.Contains(string(denied.body), "withdrawn") {
		t.Errorf("denied project: %s", denied.body)
	}
	if !strings.Contains(e.logs.String(), "policy:withdrawn-project") {
		t.Errorf("denial not logged with its rule id")
	}
	// A tampered project id is refused once the policy needs it.
	body["encrypted_project_id"] = seal(t, projectB)[:20] + "A" + seal(t, projectB)[21:]
	if got := e.post("/cohort", body, false); got.status != 400 {
		t.Errorf("tampered project id: %d %s", got.status, got.body)
	}
}

func snapshotBody(t *testing.T, project, query string) map[string]string {
	return map[string]string{"encrypted_project_id": seal(t, project), "query": query}
}

func TestSnapshotLifecycle(t *testing.T) {
	ctx := context.Background()
	admin := cloneAdmin
	eng, err := cohort.New(cohort.Options{DSN: cloneReader, MaxConns: 2, QueryTimeout: 20 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer eng.Close()
	e := newEnv(t, withEngine(eng))
	hostile := "SELECT * FROM person"

	// Nothing frozen yet: row-level routes refuse and run no SQL.
	for _, path := range []string{"/cohort/dataframe", "/cohort/accession-ids"} {
		if got := e.post(path, snapshotBody(t, projectA, hostile), false); got.status != 403 || got.detail(t) != api.DetailNoSnapshot {
			t.Errorf("%s before a snapshot: %d %s", path, got.status, got.body)
		}
	}
	// Below the floor: refused and nothing persisted.
	xr := `SELECT p.person_id, io.accession_id FROM person p JOIN image_occurrence io ON io.person_id = p.person_id WHERE io.modality_concept_id = 2000003`
	if got := e.post("/cohort/snapshot", snapshotBody(t, projectA, xr), true); got.status != 403 || got.detail(t) != api.DetailBelowThreshold {
		t.Fatalf("small freeze: %d %s", got.status, got.body)
	}
	if m, _ := e.store.Meta(projectA); m != nil {
		t.Fatalf("a refused freeze persisted %+v", m)
	}
	if got := e.post("/cohort/snapshot", snapshotBody(t, projectA, "SELECT gender_source_value FROM person"), true); got.status != 400 || got.detail(t) != api.DetailUncountable {
		t.Errorf("uncountable freeze: %d %s", got.status, got.body)
	}
	if got := e.post("/cohort/snapshot", snapshotBody(t, "not-a-uuid", imagingQuery), true); got.status != 400 || got.detail(t) != api.DetailInvalidUUID {
		t.Errorf("non-UUID project: %d %s", got.status, got.body)
	}

	// Freeze the imaging cohort.
	created := e.post("/cohort/snapshot", snapshotBody(t, projectA, imagingQuery), true)
	if created.status != 200 {
		t.Fatalf("freeze: %d %s", created.status, created.body)
	}
	c := created.json(t)
	if c["row_count"] != 24.0 || c["has_accessions"] != true || c["query_hash"] != snapshot.QueryHash(imagingQuery) ||
		fmt.Sprint(c["columns"]) != "[person_id accession_id modality_concept_id]" {
		t.Errorf("snapshot response %v", c)
	}
	// Write-once: another query keeps the frozen membership.
	again := e.post("/cohort/snapshot", snapshotBody(t, projectA, "SELECT person_id FROM person"), true)
	if again.status != 200 || again.json(t)["query_hash"] != c["query_hash"] || again.json(t)["snapshot_at"] != c["snapshot_at"] {
		t.Errorf("second freeze: %d %s", again.status, again.body)
	}

	frame := func() (int, map[string][]any) {
		got := e.post("/cohort/dataframe", snapshotBody(t, projectA, hostile), false)
		if got.status != 200 {
			return got.status, nil
		}
		var cols map[string][]any
		if err := json.Unmarshal(got.body, &cols); err != nil {
			t.Fatalf("dataframe body: %v", err)
		}
		return got.status, cols
	}
	status, cols := frame()
	if status != 200 || len(cols) != 3 || len(cols["person_id"]) != 24 || len(cols["accession_id"]) != 24 {
		t.Fatalf("dataframe: %d %v", status, cols)
	}
	if _, ok := cols["gender_source_value"]; ok {
		t.Errorf("the client's SQL ran")
	}
	ids := e.post("/cohort/accession-ids", snapshotBody(t, projectA, hostile), false)
	var acc api.AccessionIDsResponse
	_ = json.Unmarshal(ids.body, &acc)
	if ids.status != 200 || len(acc.AccessionIDs) != 24 || acc.AccessionIDs[0] != "ACC-1001" || acc.AccessionIDs[23] != "ACC-1024" {
		t.Errorf("accession ids: %d %s", ids.status, ids.body)
	}

	// CSV on request.
	csvReply := e.post("/cohort/dataframe", snapshotBody(t, projectA, hostile), false, "Accept", "text/csv")
	lines := strings.Split(strings.TrimSpace(string(csvReply.body)), "\n")
	if csvReply.status != 200 || !strings.HasPrefix(csvReply.header.Get("Content-Type"), "text/csv") ||
		len(lines) != 25 || lines[0] != "person_id,accession_id,modality_concept_id" {
		t.Errorf("csv: %d %q", csvReply.status, lines)
	}

	// The cohort never grows: a new study of a member and a new person are not served.
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(sql string) {
		if _, err := conn.Exec(ctx, sql); err != nil {
			t.Fatal(err)
		}
	}
	exec(`INSERT INTO omop.person (person_id, gender_concept_id, year_of_birth, race_concept_id, ethnicity_concept_id) VALUES (17, 8507, 1980, 0, 0)`)
	exec(`INSERT INTO omop.image_occurrence (image_occurrence_id, person_id, image_occurrence_date, image_study_uid, modality_concept_id, accession_id)
VALUES (25, 1, current_date, '1.2.3.25', 2000001, 'ACC-2001'), (26, 17, current_date, '1.2.3.26', 2000001, 'ACC-2002')`)
	if status, cols := frame(); status != 200 || len(cols["person_id"]) != 24 {
		t.Errorf("after new studies: %d, %d rows; want 24", status, len(cols["person_id"]))
	}
	// It shrinks when patients withdraw...
	exec(`DELETE FROM omop.image_occurrence WHERE person_id IN (11, 12)`)
	if status, cols := frame(); status != 200 || len(cols["person_id"]) != 20 {
		t.Errorf("after withdrawals: %d, %d rows; want 20", status, len(cols["person_id"]))
	}
	_ = json.Unmarshal(e.post("/cohort/accession-ids", snapshotBody(t, projectA, hostile), false).body, &acc)
	if len(acc.AccessionIDs) != 20 {
		t.Errorf("accession ids after withdrawals: %d", len(acc.AccessionIDs))
	}
	// ...and is refused once it falls below the floor (10 persons withdrawn of 12).
	exec(`DELETE FROM omop.image_occurrence WHERE person_id BETWEEN 3 AND 10`)
	if status, _ := frame(); status != 403 {
		t.Errorf("below the floor after withdrawals: %d", status)
	}
	if got := e.post("/cohort/accession-ids", snapshotBody(t, projectA, hostile), false); got.status != 403 || got.detail(t) != api.DetailBelowThreshold {
		t.Errorf("accession ids below the floor: %d %s", got.status, got.body)
	}

	// Delete is idempotent.
	for i, want := range []bool{true, false} {
		got := e.post("/cohort/snapshot/delete", map[string]string{"encrypted_project_id": seal(t, projectA)}, true)
		if got.status != 200 || got.json(t)["deleted"] != want {
			t.Errorf("delete #%d: %d %s", i+1, got.status, got.body)
		}
	}
}

// A tabular cohort (persons only) has no accessions: [] above the floor.
func TestAccessionIDsTabularCohort(t *testing.T) {
	e := newEnv(t)
	if got := e.post("/cohort/snapshot", snapshotBody(t, projectA, "SELECT person_id FROM person"), true); got.status != 200 {
		t.Fatalf("freeze: %d %s", got.status, got.body)
	}
	got := e.post("/cohort/accession-ids", snapshotBody(t, projectA, ""), false)
	if got.status != 200 || strings.TrimSpace(string(got.body)) != `{"accession_ids":[]}` {
		t.Errorf("tabular accession ids: %d %s", got.status, got.body)
	}
}

func TestSnapshotStoreDisabled(t *testing.T) {
	e := newEnv(t, func(s *setup) { s.noStore = true })
	if got := e.post("/cohort/snapshot", snapshotBody(t, projectA, imagingQuery), true); got.status != 503 || got.detail(t) != api.DetailStoreDisabled {
		t.Errorf("disabled store: %d %s", got.status, got.body)
	}
}
