package doctor

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
	"github.com/flip-trust/node/shared/doctor"
)

var db *pgtest.DB

func TestMain(m *testing.M) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	var err error
	db, err = pgtest.Start(ctx)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "postgres:", err)
		os.Exit(1)
	}
	code := m.Run()
	db.Close()
	os.Exit(code)
}

func statuses(t *testing.T, dsn string) map[string]doctor.Result {
	t.Helper()
	got := map[string]doctor.Result{}
	for _, c := range RoleChecks(dsn) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		got[c.Name] = c.Run(ctx)
		cancel()
	}
	return got
}

func TestReaderRolePasses(t *testing.T) {
	for name, r := range statuses(t, db.ReaderDSN) {
		if r.Status != doctor.StatusPass {
			t.Errorf("%s: %+v", name, r)
		}
	}
}

func TestSuperuserFails(t *testing.T) {
	got := statuses(t, db.AdminDSN)
	if r := got["OMOP role not privileged"]; r.Status != doctor.StatusFail || !strings.Contains(r.Detail, "SUPERUSER") {
		t.Errorf("superuser: %+v", r)
	}
	if r := got["OMOP role cannot write"]; r.Status != doctor.StatusFail {
		t.Errorf("superuser can write: %+v", r)
	}
}

// TestWritableRoleFails: an ordinary login with INSERT on one OMOP table and
// no read-only default is caught by the write and default checks.
func TestWritableRoleFails(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, db.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	for _, stmt := range []string{
		"CREATE ROLE doctor_writer LOGIN PASSWORD 'writer-password'",
		"GRANT omop_readonly_base TO doctor_writer",
		"GRANT INSERT ON omop.person TO doctor_writer",
	} {
		if _, err := conn.Exec(ctx, stmt); err != nil {
			t.Fatalf("%s: %v", stmt, err)
		}
	}
	got := statuses(t, strings.Replace(db.ReaderDSN, "data_analyst_reader:"+pgtest.ReaderPassword, "doctor_writer:writer-password", 1))
	if r := got["OMOP database reachable"]; r.Status != doctor.StatusPass {
		t.Fatalf("connect as the writer: %+v (DSN rewrite failed?)", r)
	}
	if r := got["OMOP role cannot write"]; r.Status != doctor.StatusFail || !strings.Contains(r.Detail, "omop.person") {
		t.Errorf("writer: %+v", r)
	}
	if r := got["OMOP role read-only default"]; r.Status != doctor.StatusWarn {
		t.Errorf("writer default: %+v", r)
	}
	if r := got["OMOP role not privileged"]; r.Status != doctor.StatusPass {
		t.Errorf("writer is not privileged: %+v", r)
	}
}

func TestRunReportsUnreachableDatabase(t *testing.T) {
	vars := map[string]string{
		"OMOP_DB_SERVICE_NAME": "127.0.0.1", "OMOP_DB_PORT": "1", "OMOP_DB_SSLMODE": "disable",
		"DATA_ACCESS_POSTGRES_USER": "data_analyst_reader", "DATA_ACCESS_POSTGRES_PASSWORD": "pw-not-printed", "OMOP_POSTGRES_DB": "omop",
		"AES_KEY_BASE64": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=", "TRUST_INTERNAL_SERVICE_KEY": strings.Repeat("x", 32),
	}
	var out bytes.Buffer
	code := Run(context.Background(), []string{"-timeout", "5s"}, func(k string) string { return vars[k] }, &out)
	text := out.String()
	if code != 1 || !strings.Contains(text, "FAIL  data-access-api  OMOP database reachable") || !strings.Contains(text, "SKIP  data-access-api  snapshot disk") {
		t.Errorf("exit %d:\n%s", code, text)
	}
	if strings.Contains(text, "pw-not-printed") {
		t.Errorf("report prints the password:\n%s", text)
	}
}
