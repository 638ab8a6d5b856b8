// Package e2e drives real processes: dev-hub (the hub's trust-facing API and
// its admin CLI), a dev-hub stand-in for the trust's internal services, and
// trust-api, each built from this workspace and started as a child process.
// Faults are real too: processes are stopped, killed with SIGKILL and
// restarted on the same ports and data directories.
package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

var bins struct {
	once     sync.Once
	dir      string
	trustAPI string
	devHub   string
	err      error
}

// binaries builds trust-api and dev-hub once per test binary.
func binaries(t *testing.T) (trustAPI, devHub string) {
	t.Helper()
	bins.once.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		services := filepath.Join(filepath.Dir(file), "..", "..", "..")
		bins.dir, bins.err = os.MkdirTemp("", "flip-e2e-bin-")
		if bins.err != nil {
			return
		}
		for _, b := range []struct{ module, pkg, out string }{
			{"trust-api", "./cmd/trust-api", "trust-api"},
			{"dev-hub", "./cmd/dev-hub", "dev-hub"},
		} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(bins.dir, b.out), b.pkg)
			cmd.Dir = filepath.Join(services, b.module)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
			if out, err := cmd.CombinedOutput(); err != nil {
				bins.err = fmt.Errorf("build %s: %v\n%s", b.module, err, out)
				return
			}
		}
		bins.trustAPI = filepath.Join(bins.dir, "trust-api")
		bins.devHub = filepath.Join(bins.dir, "dev-hub")
	})
	if bins.err != nil {
		t.Fatal(bins.err)
	}
	return bins.trustAPI, bins.devHub
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// proc is a child process whose output is kept for failure reports.
type proc struct {
	name string
	path string
	args []string
	env  []string
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func startProc(t *testing.T, name, path string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, path: path, args: args, env: env, out: &syncBuffer{}}
	p.start(t)
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			t.Logf("---- %s output (last 4 KiB) ----\n%s", p.name, tail(p.out.String(), 4096))
		}
	})
	return p
}

func (p *proc) start(t *testing.T) {
	t.Helper()
	p.cmd = exec.Command(p.path, p.args...)
	p.cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, p.env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	p.done = make(chan struct{})
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
}

func (p *proc) running() bool {
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// stop sends SIGTERM and waits for the process to end.
func (p *proc) stop(t *testing.T) {
	t.Helper()
	if !p.running() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop within 15s of SIGTERM", p.name)
	}
}

// kill sends SIGKILL and waits for the process to end.
func (p *proc) kill() {
	if p.cmd == nil || p.cmd.Process == nil || !p.running() {
		return
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}

// exitCode waits up to d for the process to exit and returns its code.
func (p *proc) exitCode(t *testing.T, d time.Duration) int {
	t.Helper()
	select {
	case <-p.done:
	case <-time.After(d):
		t.Fatalf("%s still running after %s", p.name, d)
	}
	if p.err == nil {
		return 0
	}
	if ee, ok := p.err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	t.Fatalf("%s: %v", p.name, p.err)
	return -1
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[len(s)-n:]
}

func waitHTTP(t *testing.T, url string, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode < 500 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s not answering after %s", url, d)
}

func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("timed out after %s waiting for %s", d, what)
}

// hub is a running dev-hub with its admin credentials.
type hub struct {
	*proc
	bin, addr, adminAddr, token, aesKey, dataDir string
}

const testAESKey = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="

func startHub(t *testing.T, extraEnv ...string) *hub {
	t.Helper()
	_, devHub := binaries(t)
	h := &hub{bin: devHub, addr: freeAddr(t), adminAddr: freeAddr(t), token: "admin-token-for-tests-0123456789abcdef",
		aesKey: testAESKey, dataDir: t.TempDir()}
	env := append([]string{
		"DEV_HUB_ADDR=" + h.addr, "DEV_HUB_ADMIN_ADDR=" + h.adminAddr, "DEV_HUB_ADMIN_TOKEN=" + h.token,
		"DEV_HUB_DATA_DIR=" + h.dataDir, "AES_KEY_BASE64=" + h.aesKey,
		"RATE_LIMIT_PENDING_PER_MIN=0", "RATE_LIMIT_HEARTBEAT_PER_MIN=0", "RATE_LIMIT_RESULT_PER_MIN=0",
	}, extraEnv...)
	h.proc = startProc(t, "dev-hub", devHub, env, "serve")
	h.waitUp(t)
	return h
}

func (h *hub) waitUp(t *testing.T) {
	t.Helper()
	waitHTTP(t, "http://"+h.adminAddr+"/health", 20*time.Second)
	waitHTTP(t, "http://"+h.addr+"/health", 20*time.Second)
}

func (h *hub) apiURL() string { return "http://" + h.addr + "/api" }

// cli runs a dev-hub CLI command against the admin API.
func (h *hub) cli(t *testing.T, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.Env = []string{"DEV_HUB_ADMIN_URL=http://" + h.adminAddr, "DEV_HUB_ADMIN_TOKEN=" + h.token, "PATH=" + os.Getenv("PATH")}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("dev-hub %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return stdout.String(), nil
}

func (h *hub) mustCLI(t *testing.T, args ...string) string {
	t.Helper()
	out, err := h.cli(t, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// admin calls the admin API and decodes the JSON reply into v.
func (h *hub) admin(t *testing.T, method, path string, body any, v any) int {
	t.Helper()
	var rd *bytes.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	} else {
		rd = bytes.NewReader(nil)
	}
	req, _ := http.NewRequest(method, "http://"+h.adminAddr+path, rd)
	req.Header.Set("Authorization", "Bearer "+h.token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("admin %s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	if v != nil {
		if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
			t.Fatalf("admin %s %s: decode: %v", method, path, err)
		}
	}
	return resp.StatusCode
}

type hubTask struct {
	ID          string  `json:"id"`
	TrustID     string  `json:"trust_id"`
	TaskType    string  `json:"task_type"`
	Status      string  `json:"status"`
	Result      *string `json:"result"`
	ResultPosts int     `json:"result_posts"`
}

func (h *hub) task(t *testing.T, id string) hubTask {
	t.Helper()
	var task hubTask
	if code := h.admin(t, http.MethodGet, "/admin/tasks/"+id, nil, &task); code != http.StatusOK {
		t.Fatalf("GET task %s: HTTP %d", id, code)
	}
	return task
}

// kit registers a trust and returns its kit env as a map.
func (h *hub) kit(t *testing.T, name string) map[string]string {
	t.Helper()
	out := h.mustCLI(t, "trust", "add", "--name", name, "--hub-url", h.apiURL())
	kit := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if ok {
			kit[k] = strings.Trim(v, `"'`)
		}
	}
	for _, k := range []string{"TRUST_API_KEY", "TRUST_INTERNAL_SERVICE_KEY", "AES_KEY_BASE64", "CENTRAL_HUB_API_URL", "EXPECTED_TRUST_ID"} {
		if kit[k] == "" {
			t.Fatalf("kit lacks %s:\n%s", k, out)
		}
	}
	return kit
}

// standin is the dev-hub stand-in for the internal services.
type standin struct {
	*proc
	addr string
}

func startStandin(t *testing.T, devHub string, kit map[string]string, delay time.Duration) *standin {
	t.Helper()
	s := &standin{addr: freeAddr(t)}
	s.proc = startProc(t, "stand-in", devHub, []string{
		"STANDIN_ADDR=" + s.addr, "TRUST_INTERNAL_SERVICE_KEY=" + kit["TRUST_INTERNAL_SERVICE_KEY"],
		fmt.Sprintf("STANDIN_DELAY_MS=%d", delay.Milliseconds()),
	}, "standin")
	waitHTTP(t, "http://"+s.addr+"/health", 20*time.Second)
	return s
}

type standinRequest struct {
	Method      string          `json:"method"`
	Path        string          `json:"path"`
	Caller      string          `json:"caller"`
	AuthScheme  string          `json:"auth_scheme"`
	CohortAdmin bool            `json:"cohort_admin_header"`
	Body        json.RawMessage `json:"body"`
}

func (s *standin) requests(t *testing.T) []standinRequest {
	t.Helper()
	resp, err := http.Get("http://" + s.addr + "/_standin/requests")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rs []standinRequest
	if err := json.NewDecoder(resp.Body).Decode(&rs); err != nil {
		t.Fatal(err)
	}
	return rs
}

// trustAPI starts a trust-api with a kit, pointed at the stand-in.
type trustNode struct {
	*proc
	addr, dataDir string
}

func trustEnv(kit map[string]string, standinAddr, addr, dataDir string, extra ...string) []string {
	env := []string{
		"CENTRAL_HUB_API_URL=" + kit["CENTRAL_HUB_API_URL"],
		"TRUST_API_KEY=" + kit["TRUST_API_KEY"],
		"TRUST_API_KEY_HEADER=Authorization",
		"AES_KEY_BASE64=" + kit["AES_KEY_BASE64"],
		"TRUST_INTERNAL_SERVICE_KEY=" + kit["TRUST_INTERNAL_SERVICE_KEY"],
		"EXPECTED_TRUST_ID=" + kit["EXPECTED_TRUST_ID"],
		"DATA_ACCESS_API_URL=http://" + standinAddr,
		"IMAGING_API_URL=http://" + standinAddr,
		"XNAT_URL=http://" + standinAddr,
		"OMOP_DB_HOST=127.0.0.1", "OMOP_DB_PORT=1",
		"POLL_INTERVAL_SECONDS=0.2", "HEARTBEAT_INTERVAL_SECONDS=0.5", "HEALTH_COLLECT_INTERVAL_SECONDS=1",
		"DELIVERY_BACKOFF_MIN_SECONDS=0.2", "DELIVERY_BACKOFF_MAX_SECONDS=2",
		"TRUST_API_ADDR=" + addr, "TRUST_API_DATA_DIR=" + dataDir, "LOG_LEVEL=DEBUG",
	}
	return append(env, extra...)
}

func startTrust(t *testing.T, kit map[string]string, standinAddr, dataDir string, extra ...string) *trustNode {
	t.Helper()
	trustAPI, _ := binaries(t)
	n := &trustNode{addr: freeAddr(t), dataDir: dataDir}
	n.proc = startProc(t, "trust-api", trustAPI, trustEnv(kit, standinAddr, n.addr, dataDir, extra...))
	return n
}

// submitCohort submits a cohort_query with the CLI and returns the task id.
func submitCohort(t *testing.T, h *hub, trust string) string {
	t.Helper()
	out := h.mustCLI(t, "task", "submit", "--trust", trust, "--type", "cohort_query",
		"--sql", "SELECT person_id, gender_concept_id FROM omop.person", "--project-id", "9a3e8f1c-2b4d-4c6e-8f00-1a2b3c4d5e6f")
	id := strings.TrimSpace(out)
	if lines := strings.Fields(id); len(lines) > 0 {
		id = lines[len(lines)-1]
	}
	if len(id) != 36 {
		t.Fatalf("task submit printed %q, want a task id", out)
	}
	return id
}
