// Package omopsql holds the OMOP database's schema and the read-only role
// data-access-api connects as. The same files initialise the deployed
// database, the test clusters and the development database.
package omopsql

import "embed"

// Files are the scripts in the order they are applied: schema, indexes, roles.
//
//go:embed 10_omop_ddl.sql 20_indexes.sql 30_roles.sql
var Files embed.FS

// Schema is the OMOP CDM 5.4 DDL (tables only, no indexes).
func Schema() string { return mustRead("10_omop_ddl.sql") }

// Indexes creates the indexes; run it after a bulk load.
func Indexes() string { return mustRead("20_indexes.sql") }

// Roles creates or converges the read-only roles. The session must first
// SET flip.reader_password to the reader's password.
func Roles() string { return mustRead("30_roles.sql") }

func mustRead(name string) string {
	b, err := Files.ReadFile(name)
	if err != nil {
		panic(err) // embedded at build time
	}
	return string(b)
}
