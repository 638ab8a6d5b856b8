package runner

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
)

// ProcessConfig configures the process runner.
type ProcessConfig struct {
	// Path is the PATH a job is given (default "/usr/local/bin:/usr/bin:/bin").
	Path string
	// Lang is the LANG a job is given (default "C.UTF-8").
	Lang string
	// WaitDelay bounds how long output is still read after the job's main
	// process has exited while something it started holds its output open
	// (default 2 s); then the job's process group is killed.
	WaitDelay time.Duration
}

// Process runs a job as a local command: in its own process group, with
// exactly the contract environment plus PATH, HOME, TMPDIR and LANG, and the
// chosen GPUs in CUDA_VISIBLE_DEVICES (empty when none, so that the job sees
// no GPU). At its timeout, when ctx is cancelled and after it has exited, the
// whole process group is killed, so nothing it started outlives it.
//
// A memory limit is applied as RLIMIT_AS (address space) to the job's main
// process right after it starts. This is best-effort: a process the job
// starts before the limit is set escapes it, address space is not resident
// memory, and the limit is not applied to jobs given GPUs, because the CUDA
// driver reserves far more address space than the GPU's memory. Use the
// docker runner where memory must be enforced.
type Process struct {
	cfg ProcessConfig
}

var _ Runner = (*Process)(nil)

// NewProcess returns a process runner.
func NewProcess(cfg ProcessConfig) *Process {
	if cfg.Path == "" {
		cfg.Path = "/usr/local/bin:/usr/bin:/bin"
	}
	if cfg.Lang == "" {
		cfg.Lang = "C.UTF-8"
	}
	if cfg.WaitDelay <= 0 {
		cfg.WaitDelay = 2 * time.Second
	}
	return &Process{cfg: cfg}
}

// Run runs spec.Command to its end (see Runner).
func (p *Process) Run(ctx context.Context, spec Spec) (Outcome, error) {
	if len(spec.Command) == 0 {
		return Outcome{}, fmt.Errorf("task %s: no command: %w", spec.TaskID, ErrInvalidSpec)
	}
	if spec.Workspace.Root == "" || spec.Workspace.Input == "" || spec.Workspace.Output == "" {
		return Outcome{}, fmt.Errorf("task %s: no workspace: %w", spec.TaskID, ErrInvalidSpec)
	}
	home := filepath.Join(spec.Workspace.Root, "home")
	tmp := filepath.Join(spec.Workspace.Root, "tmp")
	for _, d := range []string{home, tmp} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return Outcome{}, fmt.Errorf("task %s: create %s: %w", spec.TaskID, filepath.Base(d), err)
		}
	}

	runCtx := ctx
	if spec.Timeout > 0 {
		var cancel context.CancelFunc
		runCtx, cancel = context.WithTimeout(ctx, spec.Timeout)
		defer cancel()
	}

	cmd := exec.CommandContext(runCtx, spec.Command[0], spec.Command[1:]...)
	cmd.Dir = spec.Workspace.Root
	cmd.Env = p.env(spec, home, tmp)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return killGroup(cmd.Process.Pid) }
	cmd.WaitDelay = p.cfg.WaitDelay
	sink := newLogSink(spec.Log)
	stdout, stderr := sink.stream(), sink.stream()
	cmd.Stdout, cmd.Stderr = stdout, stderr

	if err := cmd.Start(); err != nil {
		return Outcome{}, fmt.Errorf("task %s: start %s: %w", spec.TaskID, filepath.Base(spec.Command[0]), err)
	}
	pgid := cmd.Process.Pid
	limited := false
	if spec.MemoryBytes > 0 && len(spec.GPUs) == 0 {
		lim := unix.Rlimit{Cur: uint64(spec.MemoryBytes), Max: uint64(spec.MemoryBytes)}
		if err := unix.Prlimit(pgid, unix.RLIMIT_AS, &lim, nil); err == nil {
			limited = true
		}
	}
	waitErr := cmd.Wait()
	// Whatever the main process left running in its group ends with it.
	_ = killGroup(pgid)
	stdout.Flush()
	stderr.Flush()

	if ctx.Err() != nil {
		return Outcome{}, fmt.Errorf("task %s: job stopped: %w", spec.TaskID, ctx.Err())
	}
	if cmd.ProcessState == nil {
		return Outcome{}, fmt.Errorf("task %s: wait for job: %w", spec.TaskID, waitErr)
	}
	// Otherwise waitErr is the job's own exit status, or exec.ErrWaitDelay
	// when something it started held its output open: both are in
	// ProcessState.
	e := Exit{
		Code:          cmd.ProcessState.ExitCode(),
		MemoryLimited: limited,
		TimedOut:      errors.Is(runCtx.Err(), context.DeadlineExceeded),
		Timeout:       spec.Timeout,
		LogOOM:        sink.sawOOM(),
	}
	if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
		e.Signal = ws.Signal()
	}
	return Classify(e), nil
}

// env is exactly what the job may see: nothing of fl-client's own
// environment.
func (p *Process) env(spec Spec, home, tmp string) []string {
	m := make(map[string]string, len(spec.Env)+7)
	for k, v := range spec.Env {
		m[k] = v
	}
	m[contract.EnvInput] = spec.Workspace.Input
	m[contract.EnvOutput] = spec.Workspace.Output
	m[contract.EnvCUDA] = strings.Join(spec.GPUs, ",")
	m["PATH"] = p.cfg.Path
	m["HOME"] = home
	m["TMPDIR"] = tmp
	m["LANG"] = p.cfg.Lang
	env := make([]string, 0, len(m))
	for k, v := range m {
		env = append(env, k+"="+v)
	}
	return env
}

// killGroup sends SIGKILL to every process of the group pgid; a group
// already gone is not an error.
func killGroup(pgid int) error {
	if err := syscall.Kill(-pgid, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("kill process group %d: %w", pgid, err)
	}
	return nil
}
