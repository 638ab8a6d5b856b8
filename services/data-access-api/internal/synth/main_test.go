package synth

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/flip-trust/node/services/data-access-api/internal/pgtest"
)

// testDB is the cluster every test of this package loads into (through
// clones of its empty omop database).
var testDB *pgtest.DB

func TestMain(m *testing.M) {
	db, err := pgtest.Start(context.Background())
	if err != nil {
		fmt.Fprintln(os.Stderr, "start PostgreSQL:", err)
		os.Exit(1)
	}
	testDB = db
	code := m.Run()
	db.Close()
	os.Exit(code)
}

func bigEnabled() bool { return os.Getenv("SYNTH_BIG") == "1" }
