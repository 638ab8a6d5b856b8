package guard

import (
	"context"
	"errors"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
)

// The test binary shares one PostgreSQL cluster. It is started by the first
// test that needs it, so fuzzing workers (which run no database test) never
// start one, and stopped by TestMain when the tests end.
var (
	dbOnce sync.Once
	testDB *pgtest.DB
	errDB  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if testDB != nil {
		testDB.Close()
	}
	os.Exit(code)
}

// database returns the shared cluster, starting it on first use.
func database(t *testing.T) *pgtest.DB {
	t.Helper()
	dbOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		testDB, errDB = pgtest.Start(ctx)
	})
	if errDB != nil {
		t.Fatalf("start PostgreSQL: %v", errDB)
	}
	return testDB
}

// run executes sql and reads its result to the end.
func run(ctx context.Context, conn *pgx.Conn, sql string) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	for rows.Next() {
	}
	rows.Close()
	return rows.Err()
}

// TestAcceptedQueriesRunOnPostgres proves that every accepted query deparses
// to SQL that the database accepts as the read-only reader, and that pinned
// references to non-omop tables fail as undefined tables.
func TestAcceptedQueriesRunOnPostgres(t *testing.T) {
	db := database(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, db.ReaderDSN)
	if err != nil {
		t.Fatalf("connect as reader: %v", err)
	}
	defer conn.Close(context.Background())
	for _, c := range acceptCases {
		t.Run(c.name, func(t *testing.T) {
			out, err := Check(c.sql)
			if err != nil {
				t.Fatalf("Check(%q) refused: %v", c.sql, err)
			}
			err = run(ctx, conn, out)
			if !c.undefinedTable {
				if err != nil {
					t.Fatalf("executing %q: %v", out, err)
				}
				return
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != "42P01" {
				t.Fatalf("executing %q: got %v, want undefined_table (42P01)", out, err)
			}
		})
	}
}
