// Package proctest runs a trust node's services as child processes in
// end-to-end tests: each lives for the test's lifetime, and its output is
// shown when the test fails.
package proctest

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Buffer is a bytes.Buffer safe for a process's concurrent writes.
type Buffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

// Write appends p.
func (s *Buffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what was written.
func (s *Buffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Process is a child process started by Start.
type Process struct {
	cmd  *exec.Cmd
	out  *Buffer
	done chan struct{} // closed once the process has been reaped
}

// Start runs path with args and env (plus PATH and HOME) until the test
// ends; the last tail bytes of its output are logged if the test failed.
func Start(t testing.TB, name, path string, env []string, args ...string) *Process {
	t.Helper()
	const tail = 6000
	cmd := exec.Command(path, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	out := &Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // so cleanup ends its children too
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	p := &Process{cmd: cmd, out: out, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.Kill()
		if t.Failed() {
			s := out.String()
			if len(s) > tail {
				s = s[len(s)-tail:]
			}
			t.Logf("---- %s output ----\n%s", name, s)
		}
	})
	return p
}

// Kill ends the process and its children at once (SIGKILL), as a crash
// would, and waits until it has exited. Killing an exited process does
// nothing.
func (p *Process) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Output returns what the process has written to stdout and stderr so far.
func (p *Process) Output() string { return p.out.String() }

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// WaitHTTP waits up to 30 s for url to answer below 500.
func WaitHTTP(t testing.TB, url string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not answering", url)
}

// Build compiles ./cmd/<cmd> of the Go module in moduleDir into dir, with
// cgo on or off, and returns the binary's path.
func Build(t testing.TB, dir, moduleDir, cmd string, cgo bool) string {
	t.Helper()
	path := filepath.Join(dir, cmd)
	c := exec.Command("go", "build", "-o", path, "./cmd/"+cmd)
	c.Dir = moduleDir
	flag := "0"
	if cgo {
		flag = "1"
	}
	c.Env = append(os.Environ(), "CGO_ENABLED="+flag)
	if out, err := c.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", cmd, err, out)
	}
	return path
}

// Run runs path with args and env (plus PATH) to completion within two
// minutes and returns its standard output; a failure ends the test with the
// standard error.
func Run(t testing.TB, path string, env []string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH")}, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(path), strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String()
}

// LastField returns the last whitespace-separated field of s (a CLI's
// printed id), or "".
func LastField(s string) string {
	f := strings.Fields(s)
	if len(f) == 0 {
		return ""
	}
	return f[len(f)-1]
}
