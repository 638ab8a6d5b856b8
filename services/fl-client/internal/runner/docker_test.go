package runner

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
)

// The docker runner's tests drive the machine's real Docker Engine with a
// job image built here, once per test binary, from testdata/probe: a static
// binary imported as a one-layer image. Nothing is pulled.

const dockerHost = "unix:///var/run/docker.sock"

var probe struct {
	once    sync.Once
	err     error
	engine  *client.Client
	imageID string // sha256:<hex>
	repo    string // the tag's repository
}

// TestMain removes the probe image after the tests.
func TestMain(m *testing.M) {
	code := m.Run()
	if probe.imageID != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, _ = probe.engine.ImageRemove(ctx, probe.imageID, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		cancel()
	}
	os.Exit(code)
}

// probeImage returns the engine and the probe image's id, building the
// image on first use.
func probeImage(t *testing.T) (*client.Client, string) {
	t.Helper()
	probe.once.Do(func() { probe.err = buildProbe() })
	if probe.err != nil {
		t.Fatalf("the docker runner's tests need the Docker Engine at %s: %v", dockerHost, probe.err)
	}
	return probe.engine, probe.imageID
}

func buildProbe() error {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	engine, err := ConnectEngine(ctx, dockerHost)
	if err != nil {
		return err
	}
	probe.engine = engine
	dir, err := os.MkdirTemp("", "flip-probe-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	bin := filepath.Join(dir, "job")
	build := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/probe")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		return fmt.Errorf("build the probe job: %v\n%s", err, out)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		return err
	}
	var layer bytes.Buffer
	tw := tar.NewWriter(&layer)
	if err := tw.WriteHeader(&tar.Header{Name: "job", Mode: 0o755, Size: int64(len(body)), Typeflag: tar.TypeReg}); err != nil {
		return err
	}
	if _, err := tw.Write(body); err != nil {
		return err
	}
	if err := tw.Close(); err != nil {
		return err
	}
	probe.repo = "flip-runner-probe"
	tag := probe.repo + ":" + randomHex(6)
	rc, err := engine.ImageImport(ctx, client.ImageImportSource{Source: &layer, SourceName: "-"}, tag,
		client.ImageImportOptions{Changes: []string{`ENTRYPOINT ["/job"]`}})
	if err != nil {
		return fmt.Errorf("import the probe image: %w", err)
	}
	_, err = io.Copy(io.Discard, rc)
	_ = rc.Close()
	if err != nil {
		return fmt.Errorf("import the probe image: %w", err)
	}
	info, err := engine.ImageInspect(ctx, tag)
	if err != nil {
		return fmt.Errorf("inspect the probe image: %w", err)
	}
	probe.imageID = info.ID
	return nil
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// dockerFixture is a docker runner of its own instance, so that tests
// running at the same time (and other users of the engine) do not see each
// other's containers.
type dockerFixture struct {
	engine   *client.Client
	imageID  string
	instance string
	runner   *Docker
}

func newDockerFixture(t *testing.T, cfg DockerConfig) *dockerFixture {
	t.Helper()
	engine, imageID := probeImage(t)
	f := &dockerFixture{engine: engine, imageID: imageID, instance: "runner-test-" + randomHex(6)}
	cfg.Instance = f.instance
	if cfg.Allowlist == nil {
		cfg.Allowlist = []string{probe.repo + "@" + imageID}
	}
	r, err := NewDocker(engine, cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f.runner = r
	t.Cleanup(func() {
		if _, err := r.Cleanup(context.Background()); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	return f
}

// containers counts this instance's containers, running or not.
func (f *dockerFixture) containers(t *testing.T) int {
	t.Helper()
	list, err := f.engine.ContainerList(context.Background(), client.ContainerListOptions{
		All: true, Filters: make(client.Filters).Add("label", LabelOwner+"="+f.instance),
	})
	if err != nil {
		t.Fatal(err)
	}
	return len(list.Items)
}

func (f *dockerFixture) spec(t *testing.T, args ...string) (Spec, *lineRecorder) {
	t.Helper()
	ws, err := contract.NewWorkspace(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	task := flproto.Task{ID: "task-" + randomHex(4), Kind: flproto.KindEvaluate, Round: 1, Rounds: 1,
		Job: flproto.JobRef{Image: probe.repo + "@" + f.imageID}}
	if err := os.WriteFile(filepath.Join(ws.Input, contract.TaskFile), []byte(`{"kind":"evaluate"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	spec := NewSpec(task, ws, nil)
	spec.Command = args
	spec.Timeout = 20 * time.Second
	spec.MemoryBytes = 64 << 20
	spec.NanoCPUs = 1e9
	rec := &lineRecorder{}
	spec.Log = rec
	return spec, rec
}

// hostAddr listens on a non-loopback address of this host and returns it:
// a place a job with network access could reach.
func hostAddr(t *testing.T) string {
	t.Helper()
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok || ipn.IP.IsLoopback() || ipn.IP.To4() == nil {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort(ipn.IP.String(), "0"))
		if err != nil {
			continue
		}
		t.Cleanup(func() { _ = l.Close() })
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				_ = c.Close()
			}
		}()
		// The address is reachable from here: only the sandbox can stop the job.
		c, err := net.DialTimeout("tcp", l.Addr().String(), 2*time.Second)
		if err != nil {
			t.Fatalf("dial own listener: %v", err)
		}
		_ = c.Close()
		return l.Addr().String()
	}
	t.Fatal("no non-loopback IPv4 address on this host")
	return ""
}

type probeReport struct {
	Status     map[string]string `json:"status"`
	Dial       map[string]string `json:"dial"`
	Write      map[string]string `json:"write"`
	ReadInput  string            `json:"read_input"`
	TmpSmall   string            `json:"tmp_small"`
	TmpLarge   string            `json:"tmp_large"`
	DockerSock bool              `json:"docker_sock"`
	Mounts     map[string]string `json:"mounts"`
	Env        []string          `json:"env"`
}

func TestDockerSandbox(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{TmpfsBytes: 1 << 20})
	host := hostAddr(t)
	const public = "1.1.1.1:443"
	spec, _ := f.spec(t, "probe", host, public)
	out, err := f.runner.Run(context.Background(), spec)
	if err != nil || !out.OK() {
		t.Fatalf("Run = %+v, %v", out, err)
	}
	b, err := os.ReadFile(filepath.Join(spec.Workspace.Output, "report.json"))
	if err != nil {
		t.Fatalf("the job wrote no report: %v", err)
	}
	var r probeReport
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}

	for _, a := range []string{host, public} {
		if r.Dial[a] == "" {
			t.Errorf("the job opened a TCP connection to %s", a)
		}
	}
	for _, p := range []string{"/probe-file", "/flip/input/probe-file", "/etc/probe-file", "/etc/hosts"} {
		if r.Write[p] == "" {
			t.Errorf("the job wrote %s", p)
		}
	}
	if e := r.Write["/flip/output/probe-file"]; e != "" {
		t.Errorf("the job cannot write its output directory: %s", e)
	}
	if r.ReadInput != "" {
		t.Errorf("the job cannot read its input: %s", r.ReadInput)
	}
	if r.TmpSmall != "" {
		t.Errorf("the job cannot write a small file to /tmp: %s", r.TmpSmall)
	}
	if r.TmpLarge == "" {
		t.Error("the job wrote 8 MiB to a 1 MiB /tmp")
	}
	for mnt, want := range map[string][]string{
		"/":            {"ro"},
		"/flip/input":  {"ro"},
		"/flip/output": {"rw"},
		"/tmp":         {"rw", "nosuid", "nodev", "noexec"},
	} {
		opts := strings.Split(r.Mounts[mnt], ",")
		for _, o := range want {
			if !slices.Contains(opts, o) {
				t.Errorf("mount %s has options %q, want %s", mnt, r.Mounts[mnt], o)
			}
		}
	}
	if r.DockerSock {
		t.Error("the job sees /var/run/docker.sock")
	}
	for _, k := range []string{"Uid", "Gid"} {
		if f := strings.Fields(r.Status[k]); len(f) == 0 || f[0] != "65534" || slices.Contains(f, "0") {
			t.Errorf("%s = %q, want 65534 throughout", k, r.Status[k])
		}
	}
	for _, k := range []string{"CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"} {
		if r.Status[k] != "0000000000000000" {
			t.Errorf("%s = %q, want no capabilities", k, r.Status[k])
		}
	}
	if r.Status["NoNewPrivs"] != "1" {
		t.Errorf("NoNewPrivs = %q, want 1", r.Status["NoNewPrivs"])
	}

	env := map[string]string{}
	for _, kv := range r.Env {
		k, v, _ := strings.Cut(kv, "=")
		env[k] = v
	}
	want := map[string]string{
		"FLIP_INPUT_DIR": "/flip/input", "FLIP_OUTPUT_DIR": "/flip/output",
		"FLIP_TASK_KIND": "evaluate", "FLIP_ROUND": "1", "FLIP_ROUNDS": "1",
		"NVIDIA_VISIBLE_DEVICES": "void",
	}
	for k, v := range want {
		if env[k] != v {
			t.Errorf("job env %s = %q, want %q", k, env[k], v)
		}
	}
	for k := range env {
		if _, ok := want[k]; !ok && k != "PATH" && k != "HOSTNAME" && k != "HOME" {
			t.Errorf("job env has %s", k)
		}
	}
	if n := f.containers(t); n != 0 {
		t.Errorf("%d containers left after the job", n)
	}
}

func TestDockerLogsAndExitCode(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{})
	spec, rec := f.spec(t, "log", "3")
	out, err := f.runner.Run(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if out.Failure != flproto.FailureError || out.ExitCode != 3 {
		t.Fatalf("outcome = %+v, want error with exit 3", out)
	}
	for _, l := range []string{"stdout line 1", "stderr line 1", "stdout line 2 without newline"} {
		if !rec.has(l) {
			t.Errorf("log lacks %q: %q", l, rec.lines())
		}
	}
	if p := rec.problems(); len(p) > 0 {
		t.Errorf("log writes: %q", p)
	}
}

func TestDockerTimeoutKillsAndRemoves(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{})
	spec, rec := f.spec(t, "sleep")
	// Long enough for a loaded engine to start the container and the job
	// to print, far shorter than the job's sleep.
	spec.Timeout = 5 * time.Second
	start := time.Now()
	out, err := f.runner.Run(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if out.Failure != flproto.FailureTimeout {
		t.Fatalf("outcome = %+v, want timeout", out)
	}
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("Run took %s after a 5s timeout", d)
	}
	if !rec.has("sleeping") {
		t.Errorf("log lacks the job's output: %q", rec.lines())
	}
	if n := f.containers(t); n != 0 {
		t.Fatalf("%d containers left after the timeout", n)
	}
}

func TestDockerCancel(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{})
	spec, _ := f.spec(t, "sleep")
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(time.Second, cancel)
	if _, err := f.runner.Run(ctx, spec); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	if n := f.containers(t); n != 0 {
		t.Fatalf("%d containers left after cancel", n)
	}
}

func TestDockerOOMKill(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{})
	spec, _ := f.spec(t, "oom")
	spec.MemoryBytes = 32 << 20
	out, err := f.runner.Run(context.Background(), spec)
	if err != nil {
		t.Fatal(err)
	}
	if out.Failure != flproto.FailureOOM {
		t.Fatalf("outcome = %+v, want oom", out)
	}
}

func TestDockerRefusesImages(t *testing.T) {
	t.Parallel()
	_, imageID := probeImage(t)
	other := "sha256:" + strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name      string
		allowlist []string
		image     string
		want      error
	}{
		{"not in the allowlist", []string{"registry.example/other@" + other}, probe.repo + "@" + imageID, ErrImageNotAllowed},
		{"other repository", []string{"registry.example/other@" + imageID}, probe.repo + "@" + imageID, ErrImageNotAllowed},
		{"not pinned", []string{probe.repo + "@" + imageID}, probe.repo + ":latest", ErrImageNotAllowed},
		{"empty allowlist", []string{}, imageID, ErrImageNotAllowed},
		{"allowed but absent", []string{other}, probe.repo + "@" + other, ErrImageNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			f := newDockerFixture(t, DockerConfig{Allowlist: tc.allowlist})
			spec, _ := f.spec(t, "log", "0")
			spec.Image = tc.image
			before := f.containers(t)
			_, err := f.runner.Run(context.Background(), spec)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Run(%s) = %v, want %v", tc.image, err, tc.want)
			}
			if after := f.containers(t); after != before {
				t.Fatalf("containers %d before, %d after a refused image", before, after)
			}
		})
	}
	t.Run("bare digest allowed", func(t *testing.T) {
		t.Parallel()
		f := newDockerFixture(t, DockerConfig{Allowlist: []string{imageID}})
		spec, _ := f.spec(t, "log", "0")
		spec.Image = imageID
		if out, err := f.runner.Run(context.Background(), spec); err != nil || !out.OK() {
			t.Fatalf("Run = %+v, %v", out, err)
		}
	})
}

func TestDockerCleanup(t *testing.T) {
	t.Parallel()
	f := newDockerFixture(t, DockerConfig{})
	bystander := newDockerFixture(t, DockerConfig{})
	ctx := context.Background()
	start := func(instance string) string {
		c, err := f.engine.ContainerCreate(ctx, client.ContainerCreateOptions{
			Config: &container.Config{Image: f.imageID, Cmd: []string{"sleep"},
				Labels: map[string]string{LabelOwner: instance, LabelTask: "left-over"}},
			HostConfig: &container.HostConfig{NetworkMode: "none"},
		})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := f.engine.ContainerStart(ctx, c.ID, client.ContainerStartOptions{}); err != nil {
			t.Fatal(err)
		}
		return c.ID
	}
	start(f.instance)
	start(f.instance)
	start(bystander.instance)
	n, err := f.runner.Cleanup(ctx)
	if err != nil || n != 2 {
		t.Fatalf("Cleanup = %d, %v; want 2 removed", n, err)
	}
	if c := f.containers(t); c != 0 {
		t.Fatalf("%d containers left after Cleanup", c)
	}
	if c := bystander.containers(t); c != 1 {
		t.Fatalf("another instance has %d containers after Cleanup, want its 1", c)
	}
}

func TestNewDockerReportsBadConfig(t *testing.T) {
	t.Parallel()
	_, err := NewDocker(nil, DockerConfig{Allowlist: []string{"repo:latest", "sha256:xyz"}, User: "root"}, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, s := range []string{"repo:latest", "sha256:xyz"} {
		if !strings.Contains(err.Error(), s) {
			t.Errorf("error %q does not name %s", err, s)
		}
	}
	if os.Geteuid() == 0 && !strings.Contains(err.Error(), "root") {
		t.Errorf("error %q does not name the bad user", err)
	}
}
