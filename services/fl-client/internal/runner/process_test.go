package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
)

// shellSpec is a process job running script under /bin/sh in a fresh
// workspace.
func shellSpec(t *testing.T, script string) (Spec, *lineRecorder) {
	t.Helper()
	ws, err := contract.NewWorkspace(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	task := flproto.Task{ID: "task-1", Kind: flproto.KindTrain, Round: 2, Rounds: 3}
	spec := NewSpec(task, ws, nil)
	spec.Command = []string{"/bin/sh", "-c", script}
	spec.Timeout = 20 * time.Second
	rec := &lineRecorder{}
	spec.Log = rec
	return spec, rec
}

func runProcess(t *testing.T, spec Spec) Outcome {
	t.Helper()
	out, err := NewProcess(ProcessConfig{WaitDelay: 500 * time.Millisecond}).Run(context.Background(), spec)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return out
}

func TestProcessSuccessWritesOutputs(t *testing.T) {
	t.Parallel()
	spec, rec := shellSpec(t, `
		echo "reading $FLIP_INPUT_DIR"
		echo "to stderr" >&2
		printf '{"sample_count": 42, "loss": 0.5}' > "$FLIP_OUTPUT_DIR/metrics.json"
		printf 'no newline at the end'`)
	out := runProcess(t, spec)
	if !out.OK() || out.ExitCode != 0 {
		t.Fatalf("outcome = %+v, want ok", out)
	}
	b, err := os.ReadFile(filepath.Join(spec.Workspace.Output, contract.MetricsFile))
	if err != nil || string(b) != `{"sample_count": 42, "loss": 0.5}` {
		t.Fatalf("metrics.json = %q, %v", b, err)
	}
	for _, l := range []string{"reading " + spec.Workspace.Input, "to stderr", "no newline at the end"} {
		if !rec.has(l) {
			t.Errorf("log lacks %q: %q", l, rec.lines())
		}
	}
	if p := rec.problems(); len(p) > 0 {
		t.Errorf("log writes: %q", p)
	}
}

func TestProcessFailures(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		script   string
		failure  string
		exitCode int
	}{
		{"nonzero exit", "echo working; exit 3", flproto.FailureError, 3},
		{"CUDA OOM text", `echo "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" >&2; exit 1`, flproto.FailureOOM, 1},
		{"exit 137", "exit 137", flproto.FailureOOM, 137},
		{"killed by a signal", "kill -TERM $$", flproto.FailureError, -1},
		{"command not found", "/no/such/program", flproto.FailureError, 127},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec, _ := shellSpec(t, tc.script)
			out := runProcess(t, spec)
			if out.Failure != tc.failure || out.ExitCode != tc.exitCode || out.Detail == "" {
				t.Fatalf("outcome = %+v, want failure %q exit %d", out, tc.failure, tc.exitCode)
			}
		})
	}
}

func TestProcessTimeoutKillsTheGroup(t *testing.T) {
	t.Parallel()
	spec, _ := shellSpec(t, `sleep 300 & echo $! > "$FLIP_OUTPUT_DIR/child.pid"; sleep 300`)
	spec.Timeout = 300 * time.Millisecond
	start := time.Now()
	out := runProcess(t, spec)
	if out.Failure != flproto.FailureTimeout {
		t.Fatalf("outcome = %+v, want timeout", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s after a 300ms timeout", d)
	}
	assertGone(t, readPid(t, spec))
}

func TestProcessExitKillsWhatItLeftBehind(t *testing.T) {
	t.Parallel()
	// The background sleep holds stdout open: Run must not wait for it.
	spec, _ := shellSpec(t, `sleep 300 & echo $! > "$FLIP_OUTPUT_DIR/child.pid"; exit 0`)
	start := time.Now()
	out := runProcess(t, spec)
	if !out.OK() {
		t.Fatalf("outcome = %+v, want ok", out)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Run took %s: it waited for a leftover child", d)
	}
	assertGone(t, readPid(t, spec))
}

func TestProcessCancel(t *testing.T) {
	t.Parallel()
	spec, _ := shellSpec(t, `sleep 300 & echo $! > "$FLIP_OUTPUT_DIR/child.pid"; sleep 300`)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// Cancel once the job is running.
		for range 200 {
			if _, err := os.Stat(filepath.Join(spec.Workspace.Output, "child.pid")); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		cancel()
	}()
	_, err := NewProcess(ProcessConfig{}).Run(ctx, spec)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Run after cancel: %v, want context.Canceled", err)
	}
	assertGone(t, readPid(t, spec))
}

func TestProcessEnvironment(t *testing.T) {
	t.Setenv("FLIP_RUNNER_HOST_SENTINEL", "must-not-leak")
	for _, tc := range []struct {
		name string
		gpus []string
		cuda string
	}{
		{"no GPU", nil, ""},
		{"two GPUs", []string{"GPU-8d3e5a1c-0000-0000-0000-000000000001", "GPU-8d3e5a1c-0000-0000-0000-000000000002"},
			"GPU-8d3e5a1c-0000-0000-0000-000000000001,GPU-8d3e5a1c-0000-0000-0000-000000000002"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// /proc/$$/environ is exactly what the job was started with.
			spec, _ := shellSpec(t, `tr '\0' '\n' < /proc/$$/environ > "$FLIP_OUTPUT_DIR/env.txt"`)
			spec.GPUs = tc.gpus
			spec.Env["FLIP_INPUT_DIR"] = "/somewhere/else" // the runner's own paths win
			if out := runProcess(t, spec); !out.OK() {
				t.Fatalf("outcome = %+v", out)
			}
			b, err := os.ReadFile(filepath.Join(spec.Workspace.Output, "env.txt"))
			if err != nil {
				t.Fatal(err)
			}
			got := strings.Split(strings.TrimSpace(string(b)), "\n")
			slices.Sort(got)
			want := []string{
				"CUDA_VISIBLE_DEVICES=" + tc.cuda,
				"FLIP_INPUT_DIR=" + spec.Workspace.Input,
				"FLIP_OUTPUT_DIR=" + spec.Workspace.Output,
				"FLIP_ROUND=2",
				"FLIP_ROUNDS=3",
				"FLIP_TASK_KIND=train",
				"HOME=" + filepath.Join(spec.Workspace.Root, "home"),
				"LANG=C.UTF-8",
				"PATH=/usr/local/bin:/usr/bin:/bin",
				"TMPDIR=" + filepath.Join(spec.Workspace.Root, "tmp"),
			}
			if !slices.Equal(got, want) {
				t.Fatalf("job environment:\n got %q\nwant %q", got, want)
			}
		})
	}
}

func TestProcessMemoryLimit(t *testing.T) {
	t.Parallel()
	const limit = 512 << 20
	for _, tc := range []struct {
		name string
		gpus []string
		want string
	}{
		{"applied", nil, strconv.Itoa(limit)},
		{"not with GPUs", []string{"GPU-1"}, "unlimited"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			spec, _ := shellSpec(t, `sleep 0.2; grep 'Max address space' /proc/$$/limits > "$FLIP_OUTPUT_DIR/limits.txt"`)
			spec.MemoryBytes = limit
			spec.GPUs = tc.gpus
			if out := runProcess(t, spec); !out.OK() {
				t.Fatalf("outcome = %+v", out)
			}
			b, err := os.ReadFile(filepath.Join(spec.Workspace.Output, "limits.txt"))
			if err != nil {
				t.Fatal(err)
			}
			if f := strings.Fields(string(b)); len(f) < 5 || f[3] != tc.want || f[4] != tc.want {
				t.Fatalf("limits: %q, want soft and hard %s", b, tc.want)
			}
		})
	}
}

func TestProcessRefusesBadSpecs(t *testing.T) {
	t.Parallel()
	spec, _ := shellSpec(t, "true")
	spec.Command = nil
	if _, err := NewProcess(ProcessConfig{}).Run(context.Background(), spec); !errors.Is(err, ErrInvalidSpec) {
		t.Fatalf("no command: %v, want ErrInvalidSpec", err)
	}
}

func readPid(t *testing.T, spec Spec) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(spec.Workspace.Output, "child.pid"))
	if err != nil {
		t.Fatalf("the job did not record its child: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// assertGone fails unless pid has exited (gone, or a zombie waiting for
// its new parent to reap it) within two seconds.
func assertGone(t *testing.T, pid int) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			return
		}
		// pid (comm) state ...
		if i := strings.LastIndexByte(string(b), ')'); i > 0 && len(b) > i+2 && b[i+2] == 'Z' {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d the job started is still running: %s", pid, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
