// Package pgtest gives integration tests a real, provisioned PostgreSQL
// cluster of their own (see pgcluster). A test binary starts one in TestMain
// and stops it when its tests end.
package pgtest

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/pgcluster"
)

// ReaderPassword is the test clusters' password for the read-only reader.
const ReaderPassword = "reader-test-password"

// DB is a running cluster with the OMOP database provisioned.
type DB struct {
	Cluster *pgcluster.Cluster
	// AdminDSN connects to the omop database as the superuser.
	AdminDSN string
	// ReaderDSN connects to the omop database as the read-only reader.
	ReaderDSN string
	dir       string
}

var seq atomic.Int64

// Start starts and provisions a fresh cluster in a new directory under the
// system temporary directory. Server output goes to postgres.log there.
func Start(ctx context.Context) (*DB, error) {
	dir, err := os.MkdirTemp("", "flip-pg-")
	if err != nil {
		return nil, err
	}
	if err := os.Chmod(dir, 0o711); err != nil { // the server may run as another user
		return nil, err
	}
	logf, err := os.Create(filepath.Join(dir, "postgres.log"))
	if err != nil {
		return nil, err
	}
	c, err := pgcluster.Start(ctx, pgcluster.Options{Dir: filepath.Join(dir, "cluster"), Log: logf})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	if err := pgcluster.Provision(ctx, c, ReaderPassword, false); err != nil {
		_ = c.Stop()
		_ = os.RemoveAll(dir)
		return nil, fmt.Errorf("provision: %w", err)
	}
	return &DB{
		Cluster:   c,
		AdminDSN:  c.SuperuserDSN(pgcluster.Database),
		ReaderDSN: c.DSN(pgcluster.Reader, ReaderPassword, pgcluster.Database),
		dir:       dir,
	}, nil
}

// Clone creates a new database copied from the omop database (schema, data
// and grants) and returns its superuser and reader DSNs.
func (d *DB) Clone(ctx context.Context) (admin, reader string, err error) {
	name := fmt.Sprintf("omop_clone_%d", seq.Add(1))
	conn, err := pgx.Connect(ctx, d.Cluster.SuperuserDSN("postgres"))
	if err != nil {
		return "", "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, fmt.Sprintf("CREATE DATABASE %s TEMPLATE %s", name, pgcluster.Database)); err != nil {
		return "", "", err
	}
	if _, err := conn.Exec(ctx, fmt.Sprintf("GRANT CONNECT ON DATABASE %s TO omop_readonly_base", name)); err != nil {
		return "", "", err
	}
	return d.Cluster.SuperuserDSN(name), d.Cluster.DSN(pgcluster.Reader, ReaderPassword, name), nil
}

// Close stops the cluster and removes its files.
func (d *DB) Close() {
	_ = d.Cluster.Stop()
	_ = os.RemoveAll(d.dir)
}

// ExecFile runs the SQL file at path on the database at dsn.
func ExecFile(ctx context.Context, dsn, path string) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, string(b)); err != nil {
		return fmt.Errorf("%s: %w", filepath.Base(path), err)
	}
	return nil
}
