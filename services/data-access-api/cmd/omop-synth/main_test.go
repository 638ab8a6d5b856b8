package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
)

func noEnv(string) string { return "" }

func TestRunRejectsBadFlags(t *testing.T) {
	cases := []struct {
		name string
		args []string
		env  map[string]string
		code int
		want string
	}{
		{"no database", []string{"-persons", "5"}, nil, 2, "no database"},
		{"unknown flag", []string{"-bogus"}, nil, 2, "flag provided but not defined"},
		{"stray argument", []string{"-dsn", "x", "extra"}, nil, 2, "unexpected arguments"},
		{"zero persons", []string{"-dsn", "x", "-persons", "0"}, nil, 2, "-persons must be"},
		{"negative persons", []string{"-dsn", "x", "-persons", "-3"}, nil, 2, "-persons must be"},
		{"too many persons", []string{"-dsn", "x", "-persons", "20000001"}, nil, 2, "-persons must be"},
		{"index beyond count", []string{"-dsn", "x", "-trust-index", "3", "-trust-count", "3"}, nil, 2, "-trust-index must be between 0 and 2"},
		{"zero trust count", []string{"-dsn", "x", "-trust-count", "0"}, nil, 2, "-trust-count must be at least 1"},
		{"dsn and cluster", []string{"-dsn", "x", "-start-cluster", "d", "-reader-password", "p"}, nil, 2, "either -dsn or -start-cluster"},
		{"cluster without password", []string{"-start-cluster", "d"}, nil, 2, "needs -reader-password"},
		{"port without cluster", []string{"-dsn", "x", "-port", "5432"}, nil, 2, "-port applies to -start-cluster"},
		{"stop with other flags", []string{"-stop-cluster", "d", "-persons", "3"}, nil, 2, "-stop-cluster takes no other flags"},
		{"unreachable database", []string{"-persons", "5"}, map[string]string{"OMOP_ADMIN_DSN": "host=/nonexistent port=1 user=x dbname=y"}, 1, "connect"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			getenv := func(k string) string { return c.env[k] }
			code := run(t.Context(), c.args, &stdout, &stderr, getenv)
			if code != c.code || !strings.Contains(stderr.String(), c.want) {
				t.Errorf("exit %d, stderr %q; want exit %d and %q", code, stderr.String(), c.code, c.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}

// A started cluster outlives the command that started it, is reused by the
// next -start-cluster, serves its reader DSN and stops with -stop-cluster.
func TestStartLoadReuseAndStopACluster(t *testing.T) {
	base, err := os.MkdirTemp("", "omop-synth-test-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(base, 0o711); err != nil { // the server may run as the postgres user
		t.Fatal(err)
	}
	dir := filepath.Join(base, "pg")
	t.Cleanup(func() {
		_ = run(context.Background(), []string{"-stop-cluster", dir}, &bytes.Buffer{}, &bytes.Buffer{}, noEnv)
		_ = os.RemoveAll(base)
	})
	env := func(k string) string {
		if k == "OMOP_READER_PASSWORD" {
			return "it's secret"
		}
		return ""
	}
	var stdout, stderr bytes.Buffer
	if code := run(t.Context(), []string{"-start-cluster", dir, "-persons", "300", "-seed", "4", "-truncate"}, &stdout, &stderr, env); code != 0 {
		t.Fatalf("start: exit %d: %s", code, stderr.String())
	}
	vars := parseAssignments(t, stdout.String())
	if !strings.Contains(stderr.String(), "300 persons in") || !strings.Contains(stderr.String(), "image_occurrence") {
		t.Errorf("stderr lacks the summary:\n%s", stderr.String())
	}
	conn, err := pgx.Connect(t.Context(), vars["OMOP_READER_DSN"])
	if err != nil {
		t.Fatalf("reader DSN %q: %v", vars["OMOP_READER_DSN"], err)
	}
	var persons int
	err = conn.QueryRow(t.Context(), "SELECT count(*) FROM omop.person").Scan(&persons)
	_ = conn.Close(t.Context())
	if err != nil || persons != 300 {
		t.Fatalf("the reader sees %d persons (%v), want 300", persons, err)
	}

	stdout.Reset()
	stderr.Reset()
	if code := run(t.Context(), []string{"-start-cluster", dir, "-persons", "0"}, &stdout, &stderr, env); code != 0 {
		t.Fatalf("reuse: exit %d: %s", code, stderr.String())
	}
	again := parseAssignments(t, stdout.String())
	if !strings.Contains(stderr.String(), "reusing the cluster") || again["OMOP_ADMIN_DSN"] != vars["OMOP_ADMIN_DSN"] {
		t.Errorf("second start did not reuse the cluster: %s\n%v", stderr.String(), again)
	}

	stderr.Reset()
	if code := run(t.Context(), []string{"-stop-cluster", dir}, &bytes.Buffer{}, &stderr, noEnv); code != 0 {
		t.Fatalf("stop: exit %d: %s", code, stderr.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "data", "postmaster.pid")); !os.IsNotExist(err) {
		t.Errorf("postmaster.pid still there after stop: %v", err)
	}
	if conn, err := pgx.Connect(t.Context(), vars["OMOP_ADMIN_DSN"]); err == nil {
		_ = conn.Close(t.Context())
		t.Errorf("the cluster still answers after -stop-cluster")
	}
}

var assignment = regexp.MustCompile(`^([A-Z_]+)='((?:[^']|'\\'')*)'$`)

// parseAssignments reads the shell assignments the command prints.
func parseAssignments(t *testing.T, s string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
		m := assignment.FindStringSubmatch(line)
		if m == nil {
			t.Fatalf("stdout line %q is not a shell assignment", line)
		}
		out[m[1]] = strings.ReplaceAll(m[2], `'\''`, "'")
	}
	for _, k := range []string{"OMOP_CLUSTER_DIR", "OMOP_ADMIN_DSN", "OMOP_READER_DSN"} {
		if out[k] == "" {
			t.Fatalf("stdout lacks %s: %q", k, s)
		}
	}
	return out
}
