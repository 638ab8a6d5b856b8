// Command omop-synth loads a synthetic OMOP population (package synth) into
// a provisioned OMOP database, or into a private PostgreSQL cluster that it
// starts and leaves running.
//
// Load into an existing database (the DSN connects as its owner or a
// superuser):
//
//	omop-synth -dsn "$OMOP_ADMIN_DSN" -persons 100000 -seed 1 -truncate
//
// Start (or reuse) a cluster in a directory, provision it, load, and print
// the DSNs as shell assignments on stdout:
//
//	eval "$(omop-synth -start-cluster .run/omop -reader-password secret -persons 10000 -truncate)"
//
// The cluster's postgres runs in its own process group and keeps running
// after the command exits; a later -start-cluster with the same directory
// reuses it. Stop it with:
//
//	omop-synth -stop-cluster .run/omop
//
// Progress and the summary go to stderr. An interrupted or failed load
// rolls back every table and rebuilds the indexes before the command exits.
// The exit status is 2 for bad flags and 1 for any other failure.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/flip-trust/node/services/data-access-api/internal/pgcluster"
	"github.com/flip-trust/node/services/data-access-api/internal/synth"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// config is the parsed command line.
type config struct {
	dsn            string
	opts           synth.Options
	startDir       string
	stopDir        string
	port           int
	readerPassword string
}

// errUsage marks a command-line error (exit status 2).
var errUsage = errors.New("usage")

func parse(args []string, stderr io.Writer, getenv func(string) string) (config, error) {
	var c config
	fs := flag.NewFlagSet("omop-synth", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.dsn, "dsn", getenv("OMOP_ADMIN_DSN"), "`DSN` of the OMOP database as its owner or a superuser (default $OMOP_ADMIN_DSN)")
	fs.IntVar(&c.opts.Persons, "persons", 10000, "population size: person ids 1..`N` (0 with -start-cluster: start only)")
	fs.Uint64Var(&c.opts.Seed, "seed", 1, "random `seed`; the same seed gives the same data")
	fs.IntVar(&c.opts.TrustIndex, "trust-index", 0, "load only persons with person_id % trust-count == `I`")
	fs.IntVar(&c.opts.TrustCount, "trust-count", 1, "number of trusts the population is split across")
	fs.BoolVar(&c.opts.Truncate, "truncate", false, "empty the generated tables before loading")
	fs.StringVar(&c.startDir, "start-cluster", "", "start (or reuse) a private PostgreSQL cluster in `DIR`, provision it, load into it and print its DSNs")
	fs.IntVar(&c.port, "port", 0, "TCP `port` of a cluster started by -start-cluster (0: a free port)")
	fs.StringVar(&c.readerPassword, "reader-password", getenv("OMOP_READER_PASSWORD"), "`password` of the read-only reader for -start-cluster (default $OMOP_READER_PASSWORD)")
	fs.StringVar(&c.stopDir, "stop-cluster", "", "stop the cluster running in `DIR` and exit")
	if err := fs.Parse(args); err != nil {
		return c, errUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	bad := func(format string, a ...any) (config, error) {
		return c, fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, a...))
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	case c.stopDir != "":
		for _, f := range []string{"dsn", "start-cluster", "persons", "seed", "trust-index", "trust-count", "truncate", "port", "reader-password"} {
			if set[f] {
				return bad("-stop-cluster takes no other flags (got -%s)", f)
			}
		}
		return c, nil
	case c.startDir != "" && set["dsn"]:
		return bad("use either -dsn or -start-cluster, not both")
	case c.startDir != "" && c.readerPassword == "":
		return bad("-start-cluster needs -reader-password or $OMOP_READER_PASSWORD")
	case c.startDir == "" && c.dsn == "":
		return bad("no database: set -dsn, $OMOP_ADMIN_DSN or -start-cluster")
	case c.startDir == "" && set["port"]:
		return bad("-port applies to -start-cluster only")
	case c.port < 0 || c.port > 65535:
		return bad("-port must be between 0 and 65535")
	case c.opts.Persons < 0 || c.opts.Persons > synth.MaxPersons:
		return bad("-persons must be between 1 and %d", synth.MaxPersons)
	case c.opts.Persons == 0 && c.startDir == "":
		return bad("-persons must be between 1 and %d", synth.MaxPersons)
	case c.opts.TrustCount < 1:
		return bad("-trust-count must be at least 1")
	case c.opts.TrustIndex < 0 || c.opts.TrustIndex >= c.opts.TrustCount:
		return bad("-trust-index must be between 0 and %d", c.opts.TrustCount-1)
	}
	return c, nil
}

// run is the command; it returns the exit status.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	c, err := parse(args, stderr, getenv)
	if err != nil {
		if msg, ok := strings.CutPrefix(err.Error(), errUsage.Error()+": "); ok {
			fmt.Fprintln(stderr, "omop-synth:", msg)
		}
		return 2
	}
	if c.stopDir != "" {
		if err := stopCluster(ctx, c.stopDir, stderr); err != nil {
			fmt.Fprintln(stderr, "omop-synth:", err)
			return 1
		}
		return 0
	}
	var readerDSN string
	if c.startDir != "" {
		cl, err := startCluster(ctx, c.startDir, c.port, stderr)
		if err != nil {
			fmt.Fprintln(stderr, "omop-synth:", err)
			return 1
		}
		if err := pgcluster.Provision(ctx, cl, c.readerPassword, true); err != nil {
			fmt.Fprintf(stderr, "omop-synth: provision the cluster in %s: %v\n", cl.Dir, err)
			return 1
		}
		c.dsn = cl.SuperuserDSN(pgcluster.Database)
		readerDSN = (&url.URL{Scheme: "postgres", User: url.UserPassword(pgcluster.Reader, c.readerPassword),
			Host: "127.0.0.1:" + strconv.Itoa(cl.Port), Path: "/" + pgcluster.Database, RawQuery: "sslmode=disable"}).String()
	}
	if c.opts.Persons > 0 {
		if err := load(ctx, c.dsn, c.opts, stderr); err != nil {
			fmt.Fprintln(stderr, "omop-synth:", err)
			return 1
		}
	}
	if c.startDir != "" {
		dir, _ := filepath.Abs(c.startDir)
		fmt.Fprintf(stdout, "OMOP_CLUSTER_DIR=%s\nOMOP_ADMIN_DSN=%s\nOMOP_READER_DSN=%s\n",
			shellQuote(dir), shellQuote(c.dsn), shellQuote(readerDSN))
	}
	return 0
}

// load runs synth.Load with progress lines on stderr and prints a summary.
func load(ctx context.Context, dsn string, opts synth.Options, stderr io.Writer) error {
	start := time.Now()
	opts.Progress = func(table string, rows int64) {
		el := time.Since(start)
		fmt.Fprintf(stderr, "omop-synth: %-20s %11d rows %10.0f rows/s (%s)\n", table, rows,
			float64(rows)/el.Seconds(), el.Round(time.Millisecond))
	}
	fmt.Fprintf(stderr, "omop-synth: loading %d persons (seed %d, slice %d of %d)\n",
		opts.Persons, opts.Seed, opts.TrustIndex, max(opts.TrustCount, 1))
	res, err := synth.Load(ctx, dsn, opts)
	if err != nil {
		return err
	}
	var total int64
	fmt.Fprintln(stderr, "omop-synth: rows loaded")
	for _, t := range append(synth.TableNames(), "concept") {
		fmt.Fprintf(stderr, "  %-22s %11d\n", t, res.Rows[t])
		total += res.Rows[t]
	}
	fmt.Fprintf(stderr, "  %-22s %11d\n", "total", total)
	fmt.Fprintf(stderr, "omop-synth: %d persons in %s (copy %s, indexes %s, analyze %s; %.0f rows/s)\n",
		res.Persons, res.Elapsed.Round(time.Millisecond), res.Copy.Round(time.Millisecond),
		res.Index.Round(time.Millisecond), res.Analyze.Round(time.Millisecond), float64(total)/res.Elapsed.Seconds())
	return nil
}

// postmaster reads a cluster's postmaster.pid: the server's pid and port.
// ok is false when the file is absent.
func postmaster(dir string) (pid, port int, ok bool, err error) {
	b, err := os.ReadFile(filepath.Join(dir, "data", "postmaster.pid"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, 0, false, nil
	}
	if err != nil {
		return 0, 0, false, err
	}
	lines := strings.Split(string(b), "\n")
	if len(lines) < 4 {
		return 0, 0, false, fmt.Errorf("%s/data/postmaster.pid is incomplete", dir)
	}
	if pid, err = strconv.Atoi(strings.TrimSpace(lines[0])); err != nil {
		return 0, 0, false, fmt.Errorf("%s/data/postmaster.pid: %w", dir, err)
	}
	if port, err = strconv.Atoi(strings.TrimSpace(lines[3])); err != nil {
		return 0, 0, false, fmt.Errorf("%s/data/postmaster.pid: %w", dir, err)
	}
	return pid, port, true, nil
}

// alive reports whether process pid exists.
func alive(pid int) bool {
	err := syscall.Kill(pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

// startCluster reuses the cluster running in dir or starts one there. The
// server's output is appended to dir/postgres.log.
func startCluster(ctx context.Context, dir string, port int, stderr io.Writer) (*pgcluster.Cluster, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	pid, running, ok, err := postmaster(abs)
	if err != nil {
		return nil, err
	}
	if ok && alive(pid) {
		cl := &pgcluster.Cluster{Dir: abs, Port: running}
		conn, err := pgx.Connect(ctx, cl.SuperuserDSN("postgres"))
		if err != nil {
			return nil, fmt.Errorf("a server (pid %d) runs in %s but does not answer: %w", pid, abs, err)
		}
		_ = conn.Close(ctx)
		fmt.Fprintf(stderr, "omop-synth: reusing the cluster in %s (pid %d, port %d)\n", abs, pid, running)
		return cl, nil
	}
	// The server may run as the postgres user: keep the parents traversable.
	if err := os.MkdirAll(filepath.Dir(abs), 0o755); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, err
	}
	logPath := filepath.Join(abs, "postgres.log")
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer logf.Close() // the server keeps its own descriptor
	cl, err := pgcluster.Start(ctx, pgcluster.Options{Dir: abs, Port: port, Log: logf})
	if err != nil {
		return nil, fmt.Errorf("start the cluster in %s (see %s): %w", abs, logPath, err)
	}
	fmt.Fprintf(stderr, "omop-synth: started a cluster in %s (port %d); stop it with -stop-cluster %s\n", abs, cl.Port, dir)
	return cl, nil
}

// stopCluster stops the server running in dir (fast shutdown) and waits
// until it is gone.
func stopCluster(ctx context.Context, dir string, stderr io.Writer) error {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return err
	}
	pid, _, ok, err := postmaster(abs)
	if err != nil {
		return err
	}
	if !ok || !alive(pid) {
		fmt.Fprintf(stderr, "omop-synth: no cluster is running in %s\n", abs)
		return nil
	}
	if err := syscall.Kill(pid, syscall.SIGINT); err != nil {
		return fmt.Errorf("stop the cluster in %s (pid %d): %w", abs, pid, err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		// The server removes postmaster.pid as the last step of its shutdown.
		if _, _, ok, err := postmaster(abs); err == nil && !ok {
			fmt.Fprintf(stderr, "omop-synth: stopped the cluster in %s\n", abs)
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster in %s (pid %d) did not stop within 60s", abs, pid)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// shellQuote quotes s for a POSIX shell.
func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }
