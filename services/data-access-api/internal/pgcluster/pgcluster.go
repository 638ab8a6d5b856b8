// Package pgcluster provisions the OMOP database on a private PostgreSQL
// server (shared/pgserver): the schema, the indexes and the read-only reader
// role data-access-api connects as. Tests, benchmarks and the development
// database use it.
package pgcluster

import (
	"context"
	"fmt"

	"github.com/jackc/pgx/v5"

	omopsql "github.com/flip-trust/node/services/data-access-api/sql"
	"github.com/flip-trust/node/shared/pgserver"
)

// Database is the OMOP database every cluster is provisioned with.
const Database = "omop"

// Reader is the read-only login data-access-api uses.
const Reader = "data_analyst_reader"

// Cluster is a running PostgreSQL server.
type Cluster = pgserver.Cluster

// Options configure Start.
type Options = pgserver.Options

// Start initialises (if needed) and starts a server; see pgserver.Start.
func Start(ctx context.Context, opts Options) (*Cluster, error) { return pgserver.Start(ctx, opts) }

// Provision creates the OMOP database on c with its schema and the read-only
// reader role with readerPassword. Indexes are created too unless
// withoutIndexes (bulk loaders create them after loading).
func Provision(ctx context.Context, c *Cluster, readerPassword string, withoutIndexes bool) error {
	if err := c.CreateDatabase(ctx, Database); err != nil {
		return fmt.Errorf("create database: %w", err)
	}
	return ApplySchema(ctx, c.SuperuserDSN(Database), readerPassword, withoutIndexes)
}

func ApplySchema(ctx context.Context, dsn, readerPassword string, withoutIndexes bool) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	scripts := []string{omopsql.Schema()}
	if !withoutIndexes {
		scripts = append(scripts, omopsql.Indexes())
	}
	if _, err := conn.Exec(ctx, "SELECT set_config('flip.reader_password', $1, false)", readerPassword); err != nil {
		return err
	}
	scripts = append(scripts, omopsql.Roles())
	for _, s := range scripts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("apply schema: %w", err)
		}
	}
	return nil
}
