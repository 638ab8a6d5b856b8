package pgserver

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// A server starts, creates a database once, and keeps its data across a
// stop and a start on the same directory and port.
func TestStartCreateRestart(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dir, err := os.MkdirTemp("", "pgserver-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.Chmod(dir, 0o711); err != nil {
		t.Fatal(err)
	}
	c, err := Start(ctx, Options{Dir: filepath.Join(dir, "pg")})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := c.CreateDatabase(ctx, "app"); err != nil {
			t.Fatalf("CreateDatabase: %v", err)
		}
	}
	conn, err := pgx.Connect(ctx, c.SuperuserDSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, "CREATE TABLE kept (i int); INSERT INTO kept VALUES (7)"); err != nil {
		t.Fatal(err)
	}
	_ = conn.Close(ctx)
	port := c.Port
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	c, err = Start(ctx, Options{Dir: filepath.Join(dir, "pg"), Port: port})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Stop()
	conn, err = pgx.Connect(ctx, c.SuperuserDSN("app"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var n int
	if err := conn.QueryRow(ctx, "SELECT i FROM kept").Scan(&n); err != nil || n != 7 {
		t.Fatalf("after restart: %d %v", n, err)
	}
}
