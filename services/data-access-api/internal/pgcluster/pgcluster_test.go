package pgcluster_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
)

// The provisioned reader can read omop tables and nothing else: no writes,
// no DDL, no temporary tables, a connection limit and a statement timeout.
func TestReaderRoleIsLeastPrivilege(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	db, err := pgtest.Start(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	conn, err := pgx.Connect(ctx, db.ReaderDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM omop.person").Scan(&n); err != nil {
		t.Fatalf("reader cannot read omop.person: %v", err)
	}
	var limit int
	var timeout string
	if err := conn.QueryRow(ctx, "SELECT rolconnlimit FROM pg_roles WHERE rolname = current_user").Scan(&limit); err != nil {
		t.Fatal(err)
	}
	if err := conn.QueryRow(ctx, "SHOW statement_timeout").Scan(&timeout); err != nil {
		t.Fatal(err)
	}
	if limit != 5 || timeout != "5min" {
		t.Errorf("connection limit %d, statement_timeout %q; want 5 and 5min", limit, timeout)
	}
	refused := []string{
		"INSERT INTO omop.concept VALUES (1,'x','d','v','c',NULL,'c','2000-01-01','2099-01-01',NULL)",
		"BEGIN READ WRITE; DELETE FROM omop.person; COMMIT",
		"CREATE TABLE omop.x (i int)",
		"CREATE TEMP TABLE x (i int)",
		"CREATE TABLE public.x (i int)",
		"SELECT pg_read_file('/etc/passwd')",
		"COPY omop.person TO '/tmp/x'",
	}
	for _, q := range refused {
		if _, err := conn.Exec(ctx, q); err == nil {
			t.Errorf("reader ran %q", q)
		} else if pe := (*pgconn.PgError)(nil); !errors.As(err, &pe) || (pe.Code != "42501" && pe.Code != "25006") {
			t.Errorf("%q: want insufficient_privilege or read_only_sql_transaction, got %v", q, err)
		}
		_, _ = conn.Exec(ctx, "ROLLBACK")
	}
}
