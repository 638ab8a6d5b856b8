package api_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/guard"
)

// catalogChecksum digests everything an attack could change: relations,
// functions, roles and their settings, schemas, and the rows of every OMOP
// table.
func catalogChecksum(t *testing.T, ctx context.Context, conn *pgx.Conn) string {
	t.Helper()
	queries := []string{
		`SELECT md5(string_agg(n.nspname || '.' || c.relname || ':' || c.relkind::text || ':' || c.relowner::regrole::text || ':' || coalesce(c.relacl::text, ''), ',' ORDER BY n.nspname, c.relname))
		 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace`,
		`SELECT md5(string_agg(p.oid::regprocedure::text || ':' || coalesce(p.proacl::text, ''), ',' ORDER BY p.oid::regprocedure::text)) FROM pg_proc p`,
		`SELECT md5(string_agg(rolname || ':' || rolsuper::text || rolcreaterole::text || rolcreatedb::text || rolcanlogin::text || ':' || rolconnlimit || ':' || coalesce(rolconfig::text, ''), ',' ORDER BY rolname)) FROM pg_roles`,
		`SELECT md5(string_agg(nspname || ':' || coalesce(nspacl::text, ''), ',' ORDER BY nspname)) FROM pg_namespace`,
		`SELECT md5(string_agg(datname || ':' || coalesce(datacl::text, ''), ',' ORDER BY datname)) FROM pg_database`,
		`SELECT md5(coalesce(string_agg(s.setdatabase::text || s.setrole::text || s.setconfig::text, ',' ORDER BY s.setdatabase, s.setrole), '')) FROM pg_db_role_setting s`,
	}
	var tables []string
	rows, err := conn.Query(ctx, `SELECT tablename FROM pg_tables WHERE schemaname = 'omop' ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	for _, tbl := range tables {
		queries = append(queries, `SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM omop.`+tbl+` t`)
	}
	var sb strings.Builder
	for _, q := range queries {
		var sum string
		if err := conn.QueryRow(ctx, q).Scan(&sum); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
		sb.WriteString(sum)
	}
	return sb.String()
}

// Every query of the attack corpus is refused with a 400 by /cohort and the
// snapshot route, and the database's catalogue and data are unchanged.
func TestAttackCorpus(t *testing.T) {
	ctx := context.Background()
	f, err := os.Open("../guard/testdata/attacks.sql")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cases, err := guard.ParseCorpus(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(cases) < 100 {
		t.Fatalf("attack corpus has %d cases, want at least 100", len(cases))
	}
	conn, err := pgx.Connect(ctx, db.AdminDSN)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	before := catalogChecksum(t, ctx, conn)

	e := newEnv(t)
	for _, c := range cases {
		got := e.post("/cohort", cohortBody(t, c.SQL), false)
		if got.status != 400 || got.detail(t) == "" {
			t.Errorf("%s: /cohort answered %d %s", c.Name, got.status, got.body)
		}
		frozen := e.post("/cohort/snapshot", snapshotBody(t, projectA, c.SQL), true)
		if frozen.status != 400 {
			t.Errorf("%s: /cohort/snapshot answered %d %s", c.Name, frozen.status, frozen.body)
		}
	}
	if after := catalogChecksum(t, ctx, conn); after != before {
		t.Errorf("the database changed during the attack corpus")
	}
	// The checksum does notice a change: one row written in a rolled-back transaction.
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Exec(ctx, "INSERT INTO omop.cohort VALUES (1, 1, current_date, current_date)"); err != nil {
		t.Fatal(err)
	}
	var changed string
	{
		var sum string
		if err := tx.QueryRow(ctx, `SELECT md5(string_agg(t::text, ',')) FROM omop.cohort t`).Scan(&sum); err != nil {
			t.Fatal(err)
		}
		changed = sum
	}
	_ = tx.Rollback(ctx)
	if strings.Contains(before, changed) {
		t.Errorf("the checksum does not cover omop.cohort's rows")
	}
	t.Logf("%d attack queries refused; catalogue and data checksum unchanged", len(cases))
}
