package runner

import (
	"bytes"
	"fmt"
	"syscall"
	"time"

	"github.com/flip-trust/node/shared/flproto"
)

// oomMarkers are texts that CUDA, PyTorch, cuBLAS and XLA print when a GPU
// runs out of memory. A job's log line containing one marks the job as having
// run out of memory.
var oomMarkers = [][]byte{
	[]byte("CUDA out of memory"),
	[]byte("CUDA error: out of memory"),
	[]byte("torch.OutOfMemoryError"),
	[]byte("CUBLAS_STATUS_ALLOC_FAILED"),
	[]byte("RESOURCE_EXHAUSTED: Out of memory"),
}

// ReportsOOM reports whether a log line says that a GPU ran out of memory.
func ReportsOOM(line []byte) bool {
	for _, m := range oomMarkers {
		if bytes.Contains(line, m) {
			return true
		}
	}
	return false
}

// Exit is what a runner observed about a job's end.
type Exit struct {
	// Code is the exit status; -1 when the job was killed by a signal.
	Code int
	// Signal is the signal that killed the job (process jobs), or 0.
	Signal syscall.Signal
	// OOMKilled is the engine's word that the kernel killed the job for
	// memory (container jobs).
	OOMKilled bool
	// MemoryLimited says a memory limit was applied to the job.
	MemoryLimited bool
	// TimedOut says the runner killed the job at its timeout.
	TimedOut bool
	// Timeout is the limit the job ran under.
	Timeout time.Duration
	// LogOOM says the job's log reported a GPU out of memory.
	LogOOM bool
}

// exitOOMKill is a shell's exit status for a child killed by SIGKILL, the
// kernel OOM killer's signal.
const exitOOMKill = 128 + int(syscall.SIGKILL)

// Classify turns what a runner observed into an Outcome, the same for every
// runner:
//
//   - the kernel killed the job for memory: oom;
//   - the runner killed it at its timeout: timeout, unless its log had already
//     reported a GPU out of memory (a job often hangs after one): oom;
//   - exit status 0: ok, whatever the log said (a job may recover);
//   - killed by SIGKILL under a memory limit, or exit status 137: oom;
//   - the log reported a GPU out of memory: oom;
//   - anything else: error.
func Classify(e Exit) Outcome {
	o := Outcome{ExitCode: e.Code}
	switch {
	case e.OOMKilled:
		o.Failure, o.Detail = flproto.FailureOOM, "killed by the kernel for exceeding its memory limit"
	case e.TimedOut && e.LogOOM:
		o.Failure, o.Detail = flproto.FailureOOM, "GPU out of memory reported in the job's log, then timed out"
	case e.TimedOut:
		o.Failure, o.Detail = flproto.FailureTimeout, fmt.Sprintf("killed after its timeout of %s", e.Timeout)
	case e.Code == 0 && e.Signal == 0:
	case e.Signal == syscall.SIGKILL && e.MemoryLimited:
		o.Failure, o.Detail = flproto.FailureOOM, "killed by SIGKILL under a memory limit"
	case e.Code == exitOOMKill:
		o.Failure, o.Detail = flproto.FailureOOM, "exit status 137 (killed by SIGKILL, likely for memory)"
	case e.LogOOM:
		o.Failure, o.Detail = flproto.FailureOOM, fmt.Sprintf("GPU out of memory reported in the job's log (%s)", exitText(e))
	default:
		o.Failure, o.Detail = flproto.FailureError, exitText(e)
	}
	return o
}

func exitText(e Exit) string {
	if e.Signal != 0 {
		return "killed by signal " + e.Signal.String()
	}
	return fmt.Sprintf("exit status %d", e.Code)
}
