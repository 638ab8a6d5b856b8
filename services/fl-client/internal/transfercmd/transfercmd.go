// Package transfercmd is `fl-client artifact`: moving an artifact between a
// file and the FL server by hand, with the same resumable, verified chunked
// transfer the service uses (docs/fl-client.md, "Moving artifacts by hand").
package transfercmd

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/flip-trust/node/shared/flproto"
)

// ErrUsage is wrapped by the error of a command line that does not parse;
// main answers it with exit status 2.
var ErrUsage = errors.New("usage")

// Usage is the synopsis of the artifact command.
const Usage = `usage:
  fl-client artifact get [--server URL] --id sha256:<hex> --out FILE
  fl-client artifact put [--server URL] [--chunk-size BYTES] FILE

The client name and secret come from FL_CLIENT_NAME and FL_CLIENT_SECRET (or
FL_CLIENT_SECRET_FILE); the server from --server or FL_SERVER_URL; TLS files
from FL_CA_FILE, FL_CLIENT_CERT_FILE and FL_CLIENT_KEY_FILE. An interrupted
get or put resumes where it stopped when run again.`

// Run runs `fl-client artifact <args>` with the process's environment.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return RunEnv(ctx, args, os.Getenv, stdout, stderr)
}

// RunEnv is Run reading the environment through getenv.
func RunEnv(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return fmt.Errorf("%w: artifact needs a command (get or put)\n%s", ErrUsage, Usage)
	}
	switch args[0] {
	case "get":
		return get(ctx, args[1:], getenv, stdout, stderr)
	case "put":
		return put(ctx, args[1:], getenv, stdout, stderr)
	case "-h", "-help", "--help", "help":
		_, _ = fmt.Fprintln(stdout, Usage)
		return nil
	}
	return fmt.Errorf("%w: unknown artifact command %q\n%s", ErrUsage, args[0], Usage)
}

// common are the flags of both commands.
type common struct {
	server   string
	parallel int
	quiet    bool
}

func newFlags(name string, getenv func(string) string, stderr io.Writer) (*flag.FlagSet, *common) {
	fs := flag.NewFlagSet("fl-client artifact "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c := &common{}
	fs.StringVar(&c.server, "server", getenv("FL_SERVER_URL"), "FL server base URL (default $FL_SERVER_URL)")
	fs.IntVar(&c.parallel, "parallel", 2, "chunks moved at once")
	fs.BoolVar(&c.quiet, "quiet", false, "no progress lines on stderr")
	return fs, c
}

func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return fmt.Errorf("%w: %s", ErrUsage, Usage)
		}
		return fmt.Errorf("%w: %w", ErrUsage, err)
	}
	return nil
}

func get(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, c := newFlags("get", getenv, stderr)
	id := fs.String("id", "", "artifact id (sha256:<hex>)")
	out := fs.String("out", "", "file to write")
	if err := parse(fs, args); err != nil {
		return err
	}
	var missing []string
	if *id == "" {
		missing = append(missing, "--id")
	}
	if *out == "" {
		missing = append(missing, "--out")
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected arguments %q", ErrUsage, fs.Args())
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: artifact get needs %s", ErrUsage, strings.Join(missing, " and "))
	}
	client, err := newClient(c, getenv, stderr, "get "+*id)
	if err != nil {
		return err
	}
	start := time.Now()
	m, err := client.Download(ctx, *id, *out)
	if err != nil {
		return fmt.Errorf("artifact get: %w", err)
	}
	_, _ = fmt.Fprintf(stdout, "%s %d bytes -> %s (verified, %s)\n", m.ID, m.Size, *out, time.Since(start).Round(time.Millisecond))
	return nil
}

func put(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	fs, c := newFlags("put", getenv, stderr)
	chunkSize := fs.Int64("chunk-size", flproto.DefaultChunkSize, fmt.Sprintf("chunk size in bytes (%d to %d)", flproto.MinChunkSize, flproto.MaxChunkSize))
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return fmt.Errorf("%w: artifact put needs exactly one FILE\n%s", ErrUsage, Usage)
	}
	if *chunkSize < flproto.MinChunkSize || *chunkSize > flproto.MaxChunkSize {
		return fmt.Errorf("%w: --chunk-size must be between %d and %d", ErrUsage, flproto.MinChunkSize, flproto.MaxChunkSize)
	}
	path := fs.Arg(0)
	client, err := newClient(c, getenv, stderr, "put "+path)
	if err != nil {
		return err
	}
	id, err := client.Upload(ctx, path, *chunkSize)
	if err != nil {
		return fmt.Errorf("artifact put: %w", err)
	}
	_, _ = fmt.Fprintln(stdout, id)
	return nil
}

// newClient builds the FL client from the flags and the environment,
// reporting every missing setting at once.
func newClient(c *common, getenv func(string) string, stderr io.Writer, what string) (*flproto.Client, error) {
	var problems []string
	if c.server == "" {
		problems = append(problems, "--server or FL_SERVER_URL is required")
	}
	name := getenv("FL_CLIENT_NAME")
	if name == "" {
		problems = append(problems, "FL_CLIENT_NAME is required")
	}
	secret, err := readSecret(getenv)
	if err != nil {
		problems = append(problems, err.Error())
	}
	if c.parallel < 1 || c.parallel > 16 {
		problems = append(problems, "--parallel must be between 1 and 16")
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w: %s", ErrUsage, strings.Join(problems, "; "))
	}
	hc, err := flproto.NewHTTPClient(flproto.TLSOptions{
		CAFile:   getenv("FL_CA_FILE"),
		CertFile: getenv("FL_CLIENT_CERT_FILE"),
		KeyFile:  getenv("FL_CLIENT_KEY_FILE"),
	})
	if err != nil {
		return nil, fmt.Errorf("fl client: %w", err)
	}
	client := flproto.NewClient(c.server, name, secret, hc)
	client.Parallel = c.parallel
	if !c.quiet {
		client.Progress = progressLogger(stderr, what)
	}
	return client, nil
}

// readSecret is FL_CLIENT_SECRET, or the first line of FL_CLIENT_SECRET_FILE.
func readSecret(getenv func(string) string) (string, error) {
	if s := getenv("FL_CLIENT_SECRET"); s != "" {
		return s, nil
	}
	path := getenv("FL_CLIENT_SECRET_FILE")
	if path == "" {
		return "", errors.New("FL_CLIENT_SECRET or FL_CLIENT_SECRET_FILE is required")
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("FL_CLIENT_SECRET_FILE: %w", err)
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		return "", errors.New("FL_CLIENT_SECRET_FILE is empty")
	}
	return s, nil
}

// progressLogger writes a progress line at most every two seconds, and at
// the end.
func progressLogger(w io.Writer, what string) flproto.Progress {
	var (
		mu   sync.Mutex
		last time.Time
	)
	return func(done, total int64) {
		mu.Lock()
		defer mu.Unlock()
		if done < total && time.Since(last) < 2*time.Second {
			return
		}
		last = time.Now()
		pct := 100.0
		if total > 0 {
			pct = 100 * float64(done) / float64(total)
		}
		_, _ = fmt.Fprintf(w, "%s: %.1f / %.1f MiB (%.0f%%)\n", what, float64(done)/(1<<20), float64(total)/(1<<20), pct)
	}
}
