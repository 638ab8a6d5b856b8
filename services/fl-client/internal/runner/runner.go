// Package runner runs one task's job under the job contract of
// docs/fl-protocol.md: a sandboxed container through the Docker Engine
// (Docker) or a local command (Process). Both report how the job ended as an
// Outcome classified the same way (ok, oom, timeout, error) and stream the
// job's output, line by line, into the caller's log.
package runner

import (
	"context"
	"errors"
	"io"
	"strconv"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
)

// Runner runs one job to its end.
//
// Run blocks until the job has ended and its sandbox is gone. It returns an
// Outcome when the job ran (whether it succeeded or failed: see
// Outcome.Failure) and a non-nil error when it could not be run or was
// stopped from outside: an image refused by the site (ErrImageNotAllowed), an
// image that is not on the host (ErrImageNotFound), ctx cancelled (an error
// wrapping ctx.Err()), or a failure of the engine or the host. Run may be
// called concurrently for different tasks.
type Runner interface {
	Run(ctx context.Context, spec Spec) (Outcome, error)
}

// Errors that refuse a job before anything is created.
var (
	// ErrImageNotAllowed marks an image that is not pinned by digest, not in
	// the site's allowlist, or whose local copy does not match its digest.
	ErrImageNotAllowed = errors.New("image not allowed")
	// ErrImageNotFound marks an allowed image that is not on the host;
	// images are never pulled by the runner.
	ErrImageNotFound = errors.New("image not present on this host")
	// ErrInvalidSpec marks a Spec a runner cannot run (no command, no
	// workspace, a bad GPU id).
	ErrInvalidSpec = errors.New("invalid job spec")
)

// Spec is one job to run.
type Spec struct {
	// TaskID identifies the task (container labels, log context).
	TaskID string
	// Image is the container image, pinned by digest
	// (repo@sha256:<hex> or sha256:<hex>). Container jobs only.
	Image string
	// Command is the program and its arguments. Process jobs: required.
	// Container jobs: optional, replaces the image's CMD.
	Command []string
	// Workspace holds the job's input and output directories.
	Workspace contract.Workspace
	// Env is the contract environment (see ContractEnv). Runners set the
	// directory and GPU variables themselves, whatever Env says.
	Env map[string]string
	// GPUs are the UUIDs of the GPUs chosen for the job (none: no GPU).
	GPUs []string
	// MemoryBytes limits the job's memory (0: no limit).
	MemoryBytes int64
	// NanoCPUs limits the job's CPU time in billionths of a CPU (0: no limit;
	// container jobs only).
	NanoCPUs int64
	// Timeout ends the job (0: none; ctx still bounds it).
	Timeout time.Duration
	// Log receives the job's stdout and stderr as whole lines, one Write per
	// line, never concurrently. Nil discards them.
	Log io.Writer
}

// Outcome is how a job that ran ended.
type Outcome struct {
	// ExitCode is the job's exit status (-1 when it was killed by a signal).
	ExitCode int
	// Failure is "" when the job succeeded, else flproto.FailureOOM,
	// flproto.FailureTimeout or flproto.FailureError.
	Failure string
	// Detail says briefly why the job failed; it never holds job output.
	Detail string
}

// OK reports whether the job succeeded.
func (o Outcome) OK() bool { return o.Failure == "" }

// ContractEnv is the environment the job contract gives a job of task whose
// workspace is ws, without GPU variables: FLIP_INPUT_DIR, FLIP_OUTPUT_DIR,
// FLIP_TASK_KIND, FLIP_ROUND and FLIP_ROUNDS.
func ContractEnv(task flproto.Task, ws contract.Workspace) map[string]string {
	return map[string]string{
		contract.EnvInput:  ws.Input,
		contract.EnvOutput: ws.Output,
		contract.EnvKind:   task.Kind,
		contract.EnvRound:  strconv.Itoa(task.Round),
		contract.EnvRounds: strconv.Itoa(task.Rounds),
	}
}

// NewSpec is the Spec of task's job in workspace ws on the chosen GPUs, with
// the task's resource requests as limits. The caller adds Command (process
// jobs) and Log.
func NewSpec(task flproto.Task, ws contract.Workspace, gpus []string) Spec {
	r := task.Resources
	return Spec{
		TaskID:      task.ID,
		Image:       task.Job.Image,
		Workspace:   ws,
		Env:         ContractEnv(task, ws),
		GPUs:        gpus,
		MemoryBytes: int64(r.MemoryMiB) << 20,
		NanoCPUs:    int64(r.CPUs) * 1e9,
		Timeout:     time.Duration(r.TimeoutSeconds) * time.Second,
	}
}
