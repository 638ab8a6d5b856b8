// Package doctor is "data-access-api doctor": the checks of data-access-api's
// own dependencies with its own configuration — the OMOP database reached
// with the service's DSN, and that the role it logs in as cannot write
// (not a superuser, read-only by default, no write privilege on any table or
// schema it can see), the internal key and the snapshot disk. It prints
// shared/doctor's line format.
package doctor

import (
	"context"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/config"
	"github.com/flip-trust/node/shared/doctor"
)

// Thresholds of the snapshot disk check.
const (
	DiskFailBelow = 256 << 20
	DiskWarnBelow = 1 << 30
)

// fixRole is the remedy for a role that can write.
const fixRole = "connect as the least-privilege reader that sql/30_roles.sql creates (DATA_ACCESS_POSTGRES_USER=data_analyst_reader), or run that script on the OMOP database"

// Run runs "data-access-api doctor" with args (after "doctor") and the
// environment read through getenv; it returns the exit code.
func Run(ctx context.Context, args []string, getenv func(string) string, stdout io.Writer) int {
	fs := flag.NewFlagSet("doctor", flag.ContinueOnError)
	fs.SetOutput(stdout)
	timeout := fs.Duration("timeout", 15*time.Second, "bound on each check")
	if err := fs.Parse(args); err != nil {
		return 2
	}
	cfg, err := config.Load(getenv)
	checks := []doctor.Check{doctor.Config(err)}
	checks = append(checks, RoleChecks(cfg.DSN())...)
	checks = append(checks, doctor.InternalKey(cfg.InternalKey))
	if cfg.SnapshotDir != "" {
		checks = append(checks, doctor.DiskSpace("snapshot disk", "COHORT_SNAPSHOT_DIR", cfg.SnapshotDir, DiskFailBelow, DiskWarnBelow))
	} else {
		checks = append(checks, doctor.Check{Name: "snapshot disk", Run: func(context.Context) doctor.Result {
			return doctor.Skip("COHORT_SNAPSHOT_DIR is not set: frozen cohorts are off")
		}})
	}
	return doctor.Run(ctx, stdout, "data-access-api", checks, doctor.Options{Timeout: *timeout}).ExitCode()
}

// RoleChecks connect to the OMOP database with dsn, one connection at a time
// (the reader's CONNECTION LIMIT is small), and check the role.
func RoleChecks(dsn string) []doctor.Check {
	return []doctor.Check{
		{Name: "OMOP database reachable", Run: func(ctx context.Context) doctor.Result {
			var version, db, user string
			err := query(ctx, dsn, func(c *pgx.Conn) error {
				return c.QueryRow(ctx, "SELECT current_setting('server_version'), current_database(), current_user").Scan(&version, &db, &user)
			})
			if err != nil {
				return doctor.Fail("check OMOP_DB_SERVICE_NAME, OMOP_DB_PORT, OMOP_POSTGRES_DB, DATA_ACCESS_POSTGRES_USER and its password, OMOP_DB_SSLMODE, and that PostgreSQL accepts this host", "%v", err)
			}
			return doctor.Pass("PostgreSQL %s, database %s as %s", version, db, user)
		}},
		{Name: "OMOP role not privileged", Run: func(ctx context.Context) doctor.Result {
			var super, createRole, createDB, bypassRLS bool
			err := query(ctx, dsn, func(c *pgx.Conn) error {
				return c.QueryRow(ctx, `SELECT rolsuper, rolcreaterole, rolcreatedb, rolbypassrls FROM pg_roles WHERE rolname = current_user`).
					Scan(&super, &createRole, &createDB, &bypassRLS)
			})
			if err != nil {
				return doctor.Fail("fix the database connection first", "%v", err)
			}
			var bad []string
			for name, on := range map[string]bool{"SUPERUSER": super, "CREATEROLE": createRole, "CREATEDB": createDB, "BYPASSRLS": bypassRLS} {
				if on {
					bad = append(bad, name)
				}
			}
			slices.Sort(bad)
			if len(bad) > 0 {
				return doctor.Fail(fixRole, "the role has %s", strings.Join(bad, ", "))
			}
			return doctor.Pass("no SUPERUSER, CREATEROLE, CREATEDB or BYPASSRLS")
		}},
		{Name: "OMOP role read-only default", Run: func(ctx context.Context) doctor.Result {
			var ro string
			err := query(ctx, dsn, func(c *pgx.Conn) error {
				return c.QueryRow(ctx, "SHOW default_transaction_read_only").Scan(&ro)
			})
			if err != nil {
				return doctor.Fail("fix the database connection first", "%v", err)
			}
			if ro != "on" {
				return doctor.Warn("ALTER ROLE <reader> SET default_transaction_read_only = on (sql/30_roles.sql does)",
					"default_transaction_read_only is %s (the service still opens read-only transactions)", ro)
			}
			return doctor.Pass("default_transaction_read_only = on")
		}},
		{Name: "OMOP role cannot write", Run: func(ctx context.Context) doctor.Result {
			var tables, schemas []string
			var dbCreate bool
			err := query(ctx, dsn, func(c *pgx.Conn) error {
				rows, err := c.Query(ctx, `
SELECT c.oid::regclass::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%' AND n.nspname NOT LIKE 'pg_temp%'
  AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
  AND (has_table_privilege(c.oid, 'INSERT') OR has_table_privilege(c.oid, 'UPDATE')
    OR has_table_privilege(c.oid, 'DELETE') OR has_table_privilege(c.oid, 'TRUNCATE'))
ORDER BY 1 LIMIT 20`)
				if err != nil {
					return err
				}
				if tables, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
					return err
				}
				rows, err = c.Query(ctx, `
SELECT nspname FROM pg_namespace
WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg_toast%' AND nspname NOT LIKE 'pg_temp%'
  AND has_schema_privilege(oid, 'CREATE') ORDER BY 1`)
				if err != nil {
					return err
				}
				if schemas, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
					return err
				}
				return c.QueryRow(ctx, "SELECT has_database_privilege(current_database(), 'CREATE')").Scan(&dbCreate)
			})
			if err != nil {
				return doctor.Fail("fix the database connection first", "%v", err)
			}
			var found []string
			if len(tables) > 0 {
				found = append(found, fmt.Sprintf("INSERT/UPDATE/DELETE/TRUNCATE on %s", strings.Join(tables, ", ")))
			}
			if len(schemas) > 0 {
				found = append(found, fmt.Sprintf("CREATE on schema %s", strings.Join(schemas, ", ")))
			}
			if dbCreate {
				found = append(found, "CREATE on the database")
			}
			if len(found) > 0 {
				return doctor.Fail(fixRole, "the role can write: %s", strings.Join(found, "; "))
			}
			return doctor.Pass("no write privilege on any table, schema or the database")
		}},
	}
}

func query(ctx context.Context, dsn string, f func(*pgx.Conn) error) error {
	c, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close(context.WithoutCancel(ctx)) }()
	return f(c)
}
