package main

import (
	"bytes"
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
	"github.com/flip-trust/node/shared/pgserver"
)

// omopDDL is the OMOP schema the node's databases use.
const omopDDL = "../../../data-access-api/sql/10_omop_ddl.sql"

func startPair(t *testing.T) *orthanctest.Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	p, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Close)
	return p
}

func runCmd(t *testing.T, env map[string]string, args ...string) (int, string) {
	t.Helper()
	var stderr bytes.Buffer
	code := run(t.Context(), args, &stderr, func(k string) string { return env[k] })
	return code, stderr.String()
}

func TestFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		want string
	}{
		{"no source", []string{"-orthanc", "http://x"}, "exactly one of -dsn and -studies"},
		{"two sources", []string{"-orthanc", "http://x", "-studies", "2", "-dsn", "postgres://x"}, "exactly one"},
		{"no orthanc", []string{"-studies", "2"}, "-orthanc"},
		{"limit without dsn", []string{"-orthanc", "http://x", "-studies", "2", "-limit", "1"}, "-limit applies to -dsn"},
		{"rows", []string{"-orthanc", "http://x", "-studies", "2", "-rows", "4096"}, "-rows"},
		{"series", []string{"-orthanc", "http://x", "-studies", "2", "-series", "0"}, "-series"},
		{"concurrency", []string{"-orthanc", "http://x", "-studies", "2", "-concurrency", "0"}, "-concurrency"},
		{"arguments", []string{"-orthanc", "http://x", "-studies", "2", "extra"}, "unexpected arguments"},
		{"unknown flag", []string{"-nope"}, "flag provided but not defined"},
	}
	for _, c := range cases {
		code, out := runCmd(t, nil, c.args...)
		if code != 2 || !strings.Contains(out, c.want) {
			t.Errorf("%s: exit %d, output %q; want 2 and %q", c.name, code, out, c.want)
		}
	}
	c, err := parse([]string{"-studies", "1"}, &bytes.Buffer{}, func(k string) string {
		return map[string]string{"ORTHANC_URL": "http://o", "ORTHANC_USERNAME": "u", "ORTHANC_PASSWORD": "p"}[k]
	})
	if err != nil || c.orthanc != "http://o" || c.user != "u" || c.pass != "p" {
		t.Errorf("environment defaults: %+v, %v", c, err)
	}
	var help bytes.Buffer
	_, _ = parse([]string{"-h"}, &help, func(k string) string {
		return map[string]string{"ORTHANC_PASSWORD": "secret-from-env"}[k]
	})
	if !strings.Contains(help.String(), "-password") || strings.Contains(help.String(), "secret-from-env") {
		t.Errorf("help should list -password without its value: %s", help.String())
	}
}

// Stand-alone studies land in the Orthanc; a second run stores nothing new;
// wrong credentials fail before anything is uploaded.
func TestStandalone(t *testing.T) {
	p := startPair(t)
	ctx := t.Context()
	env := map[string]string{"ORTHANC_URL": p.PACS.URL, "ORTHANC_USERNAME": p.PACS.User, "ORTHANC_PASSWORD": p.PACS.Password}
	code, out := runCmd(t, env, "-studies", "5", "-series", "2", "-instances", "3", "-rows", "32", "-cols", "24")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	if !strings.Contains(out, "done: 5 studies, 30 instances (30 new, 0 already stored)") {
		t.Errorf("summary missing: %s", out)
	}
	st, err := p.PACS.Stats(ctx)
	if err != nil || st.CountStudies != 5 || st.CountInstances != 30 || st.CountPatients != 5 {
		t.Errorf("PACS holds %+v (%v), want 5 patients, 5 studies, 30 instances", st, err)
	}
	var tags map[string]string
	var ids []string
	if err := p.PACS.Do(ctx, http.MethodPost, "/tools/find", map[string]any{"Level": "Instance",
		"Query": map[string]string{"AccessionNumber": "SYN0000000003"}}, &ids); err != nil || len(ids) != 6 {
		t.Fatalf("instances of SYN0000000003: %v, %v", ids, err)
	}
	if err := p.PACS.Do(ctx, http.MethodGet, "/instances/"+ids[0]+"/simplified-tags", nil, &tags); err != nil {
		t.Fatal(err)
	}
	if tags["Modality"] != "DX" || tags["PatientID"] != "SYNP0000003" || tags["Rows"] != "32" || tags["Columns"] != "24" {
		t.Errorf("tags %v", tags)
	}

	code, out = runCmd(t, env, "-studies", "5", "-series", "2", "-instances", "3", "-rows", "32", "-cols", "24", "-concurrency", "2")
	if code != 0 || !strings.Contains(out, "(0 new, 30 already stored)") {
		t.Errorf("second run: exit %d: %s", code, out)
	}
	env["ORTHANC_PASSWORD"] = "wrong"
	code, out = runCmd(t, env, "-studies", "5")
	if code != 1 || !strings.Contains(out, "401") || strings.Contains(out, "loading") {
		t.Errorf("wrong password: exit %d: %s", code, out)
	}
}

// Studies follow the OMOP imaging rows: accession, person, modality code,
// study and series UIDs; rows without a usable modality or accession are
// skipped and counted.
func TestFromOMOP(t *testing.T) {
	dsn := startPostgres(t)
	ctx := t.Context()
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ddl, err := os.ReadFile(omopDDL)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, string(ddl)); err != nil {
		t.Fatal(err)
	}
	const root = dicomgen.UIDRoot
	seed := `
INSERT INTO omop.concept VALUES
 (2000000101,'CT','Observation','DICOM','Modality','S','CT','2000-01-01','2099-12-31',NULL),
 (2000000102,'MR','Observation','DICOM','Modality','S','MR','2000-01-01','2099-12-31',NULL),
 (2000000103,'XR','Observation','DICOM','Modality','S','XR','2000-01-01','2099-12-31',NULL),
 (2000000104,'US','Observation','DICOM','Modality','S','US','2000-01-01','2099-12-31',NULL),
 (2000000105,'PT','Observation','DICOM','Modality','S','PT','2000-01-01','2099-12-31',NULL);
INSERT INTO omop.person (person_id, gender_concept_id, year_of_birth, month_of_birth, day_of_birth, race_concept_id, ethnicity_concept_id) VALUES
 (11, 8507, 1950, 3, 9, 0, 0), (12, 8532, 1988, NULL, NULL, 0, 0);
INSERT INTO omop.image_occurrence (image_occurrence_id, person_id, image_occurrence_date, image_study_uid, image_series_uid, modality_concept_id, accession_id) VALUES
 (1, 11, '2021-06-01', '` + root + `.1', '` + root + `.1.1', 2000000101, 'ACC0000000001'),
 (2, 11, '2022-02-02', '` + root + `.2', '` + root + `.2.1', 2000000102, 'ACC0000000002'),
 (3, 12, '2023-03-03', '` + root + `.3', '` + root + `.3.1', 2000000103, 'ACC0000000003'),
 (4, 12, '2023-04-04', '` + root + `.4', NULL, 2000000104, 'ACC0000000004'),
 (5, 12, '2023-05-05', '` + root + `.5', '` + root + `.5.1', 2000000105, 'ACC0000000005'),
 (6, 12, '2023-06-06', '` + root + `.6', '` + root + `.6.1', 2000000101, NULL),
 (7, 12, '2023-07-07', '` + root + `.7', '` + root + `.7.1', 2000000101, 'ACC00000000000000007'),
 (8, 12, '2023-08-08', 'not-a-uid', NULL, 2000000101, 'ACC0000000008');`
	if _, err := conn.Exec(ctx, seed); err != nil {
		t.Fatal(err)
	}

	p := startPair(t)
	env := map[string]string{"ORTHANC_USERNAME": p.PACS.User, "ORTHANC_PASSWORD": p.PACS.Password}
	code, out := runCmd(t, env, "-dsn", dsn, "-orthanc", p.PACS.URL, "-series", "2", "-instances", "2", "-progress", "0")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, out)
	}
	for _, want := range []string{"loading 4 OMOP image_occurrence rows (16 instances",
		"skipped 1 rows: modality not", "skipped 1 rows: accession number longer than 16",
		"skipped 1 rows: image_study_uid is not a valid DICOM UID", "done: 4 studies, 16 instances (16 new"} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q: %s", want, out)
		}
	}
	want := map[string]map[string]string{
		"ACC0000000001": {"StudyInstanceUID": root + ".1", "PatientID": "11", "PatientSex": "M", "PatientBirthDate": "19500309",
			"Modality": "CT", "StudyDate": "20210601", "SeriesInstanceUID": root + ".1.1"},
		"ACC0000000002": {"StudyInstanceUID": root + ".2", "PatientID": "11", "Modality": "MR", "SeriesInstanceUID": root + ".2.1"},
		"ACC0000000003": {"StudyInstanceUID": root + ".3", "PatientID": "12", "PatientSex": "F", "PatientBirthDate": "19880101",
			"Modality": "DX", "StudyDate": "20230303", "SeriesInstanceUID": root + ".3.1"},
		"ACC0000000004": {"StudyInstanceUID": root + ".4", "Modality": "US"},
	}
	for acc, tagsWant := range want {
		var insts []struct{ ID string }
		if err := p.PACS.Do(ctx, http.MethodPost, "/tools/find", map[string]any{"Level": "Instance", "Expand": true,
			"Query": map[string]string{"AccessionNumber": acc, "SeriesNumber": "1", "InstanceNumber": "1"}}, &insts); err != nil || len(insts) != 1 {
			t.Fatalf("%s: first instance: %v, %v", acc, insts, err)
		}
		var tags map[string]any
		if err := p.PACS.Do(ctx, http.MethodGet, "/instances/"+insts[0].ID+"/simplified-tags", nil, &tags); err != nil {
			t.Fatal(err)
		}
		for k, v := range tagsWant {
			if tags[k] != v {
				t.Errorf("%s: %s = %v, want %q", acc, k, tags[k], v)
			}
		}
	}

	p.PACS.Kill()
	if err := p.PACS.Start(ctx); err != nil {
		t.Fatal(err)
	}
	code, out = runCmd(t, env, "-dsn", dsn, "-orthanc", p.PACS.URL, "-series", "2", "-instances", "2", "-limit", "2")
	if code != 0 || !strings.Contains(out, "done: 2 studies, 8 instances (0 new, 8 already stored)") {
		t.Errorf("limited re-run: exit %d: %s", code, out)
	}
	code, out = runCmd(t, env, "-dsn", strings.Replace(dsn, "dbname=postgres", "dbname=nosuchdb", 1), "-orthanc", p.PACS.URL)
	if code != 1 {
		t.Errorf("bad DSN: exit %d: %s", code, out)
	}
}

// startPostgres runs a throw-away PostgreSQL server (shared/pgserver) and
// returns a superuser DSN to its postgres database.
func startPostgres(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "dicom-synth-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o711); err != nil { // the server may run as another user
		t.Fatal(err)
	}
	c, err := pgserver.Start(t.Context(), pgserver.Options{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Stop() })
	return c.SuperuserDSN("postgres")
}
