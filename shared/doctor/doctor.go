// Package doctor runs a service's pre-flight checks of its own dependencies
// and prints them in the one line format every trust-node binary shares:
//
//	PASS  trust-api        hub reachable             https://hub.example/api answered 404 in 41ms
//	FAIL  trust-api        hub TLS certificate       expired 3 days ago (CN=hub.example)
//	                       fix: renew the hub's certificate, or point CENTRAL_HUB_API_URL at the right host
//
// A check never prints a secret: keys are shown by fingerprint only. Each
// check runs with its own timeout; a check that panics is reported as FAIL
// (a doctor must finish its report). Exit code: 0 when nothing failed
// (warnings allowed), 1 when a check failed.
package doctor

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/flip-trust/node/shared/mesh"
)

// Status is a check's outcome.
type Status string

// Outcomes, in increasing order of concern.
const (
	StatusPass Status = "PASS"
	StatusSkip Status = "SKIP" // not applicable with this configuration
	StatusWarn Status = "WARN" // works, but an operator should act
	StatusFail Status = "FAIL"
)

// Result is what one check found. Fix is the operator's next step; it is
// printed for WARN and FAIL.
type Result struct {
	Status Status
	Detail string
	Fix    string
}

// Pass, Warn, Fail and Skip build Results.
func Pass(format string, args ...any) Result {
	return Result{Status: StatusPass, Detail: fmt.Sprintf(format, args...)}
}

// Warn is a working dependency that needs attention.
func Warn(fix, format string, args ...any) Result {
	return Result{Status: StatusWarn, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

// Fail is a dependency the service cannot use.
func Fail(fix, format string, args ...any) Result {
	return Result{Status: StatusFail, Detail: fmt.Sprintf(format, args...), Fix: fix}
}

// Skip is a check that does not apply to this configuration.
func Skip(format string, args ...any) Result {
	return Result{Status: StatusSkip, Detail: fmt.Sprintf(format, args...)}
}

// Check is one named check. Run must honour ctx and must not print.
type Check struct {
	Name string
	Run  func(ctx context.Context) Result
}

// Options tune Run.
type Options struct {
	// Timeout bounds each check (default 15 s).
	Timeout time.Duration
}

// Summary counts a run's outcomes.
type Summary struct {
	Pass, Warn, Fail, Skip int
}

// ExitCode is 1 when a check failed, 0 otherwise.
func (s Summary) ExitCode() int {
	if s.Fail > 0 {
		return 1
	}
	return 0
}

// Run runs checks in order, writes one line per check (and a fix line for
// WARN and FAIL) and a summary line to w, and returns the counts.
func Run(ctx context.Context, w io.Writer, service string, checks []Check, opts Options) Summary {
	if opts.Timeout <= 0 {
		opts.Timeout = 15 * time.Second
	}
	var s Summary
	for _, c := range checks {
		r := runOne(ctx, c, opts.Timeout)
		switch r.Status {
		case StatusPass:
			s.Pass++
		case StatusWarn:
			s.Warn++
		case StatusSkip:
			s.Skip++
		default:
			r.Status = StatusFail
			s.Fail++
		}
		WriteLine(w, service, c.Name, r)
	}
	fmt.Fprintf(w, "%s: %d checks: %d passed, %d warnings, %d failed, %d skipped\n",
		service, len(checks), s.Pass, s.Warn, s.Fail, s.Skip)
	return s
}

// runOne runs c under its own deadline. A check that ignores ctx is
// reported at the deadline; its goroutine ends when the check returns (the
// channel is buffered).
func runOne(ctx context.Context, c Check, timeout time.Duration) Result {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	done := make(chan Result, 1)
	go func() {
		defer func() {
			if p := recover(); p != nil {
				done <- Fail("report this as a bug in the doctor", "the check panicked: %v", p)
			}
		}()
		done <- c.Run(ctx)
	}()
	select {
	case r := <-done:
		return r
	case <-ctx.Done():
		return Fail("check the network path and that the dependency is up", "no answer within %s", timeout)
	}
}

// WriteLine writes one check's line in the shared format.
func WriteLine(w io.Writer, service, name string, r Result) {
	detail := oneLine(r.Detail)
	fmt.Fprintf(w, "%-4s  %-15s  %-26s  %s\n", r.Status, service, name, detail)
	if r.Fix != "" && (r.Status == StatusWarn || r.Status == StatusFail) {
		fmt.Fprintf(w, "%-4s  %-15s  %-26s  fix: %s\n", "", "", "", oneLine(r.Fix))
	}
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// Config reports the service's configuration: PASS when it loaded, FAIL
// listing every problem otherwise (the other checks still run with what did
// load, so one report shows everything).
func Config(loadErr error) Check {
	return Check{Name: "configuration", Run: func(context.Context) Result {
		if loadErr == nil {
			return Pass("environment loaded and valid")
		}
		return Fail("set the variables named (every secret may be given as NAME_FILE)", "%s", strings.ReplaceAll(loadErr.Error(), "\n", "; "))
	}}
}

// Fingerprint is the first 12 hex digits of SHA-256 over a key's raw bytes:
// enough to compare two hosts' keys, never enough to recover one. For the
// AES envelope key it is the hub's aes_key_fingerprint.
func Fingerprint(key []byte) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:])[:12]
}

// InternalKey checks TRUST_INTERNAL_SERVICE_KEY: long enough for the mesh
// (shorter keys make every internal call fail closed), shown by fingerprint
// so that the services of one node can be compared.
func InternalKey(key string) Check {
	return Check{Name: "internal service key", Run: func(context.Context) Result {
		if !mesh.KeyUsable([]byte(key)) {
			return Fail(fmt.Sprintf("set TRUST_INTERNAL_SERVICE_KEY (or _FILE) to at least %d random bytes, the same on every service", mesh.MinKeyBytes),
				"TRUST_INTERNAL_SERVICE_KEY is %d bytes: every internal call would be refused", len(key))
		}
		return Pass("%d bytes, fingerprint %s (must be the same on every service of this node)", len(key), Fingerprint([]byte(key)))
	}}
}
