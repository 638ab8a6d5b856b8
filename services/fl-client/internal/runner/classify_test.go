package runner

import (
	"syscall"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/flproto"
)

func TestReportsOOM(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		line string
		want bool
	}{
		{"torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB", true},
		{"RuntimeError: CUDA out of memory. Tried to allocate 20.00 MiB", true},
		{"RuntimeError: CUDA error: out of memory", true},
		{"RuntimeError: CUDA error: CUBLAS_STATUS_ALLOC_FAILED when calling `cublasCreate(handle)`", true},
		{"jaxlib.xla_extension.XlaRuntimeError: RESOURCE_EXHAUSTED: Out of memory while trying to allocate", true},
		{"epoch 3 loss 0.41", false},
		{"cuda out of memory", false}, // the libraries' exact spelling only
		{"MemoryError", false},
		{"", false},
	} {
		if got := ReportsOOM([]byte(tc.line)); got != tc.want {
			t.Errorf("ReportsOOM(%q) = %v, want %v", tc.line, got, tc.want)
		}
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		exit     Exit
		failure  string
		exitCode int
	}{
		{"success", Exit{Code: 0}, "", 0},
		{"success despite an OOM line", Exit{Code: 0, LogOOM: true}, "", 0},
		{"nonzero exit", Exit{Code: 3}, flproto.FailureError, 3},
		{"docker OOM kill", Exit{Code: 137, OOMKilled: true}, flproto.FailureOOM, 137},
		{"docker OOM kill wins over timeout", Exit{Code: 137, OOMKilled: true, TimedOut: true}, flproto.FailureOOM, 137},
		{"timeout", Exit{Code: -1, Signal: syscall.SIGKILL, TimedOut: true, Timeout: time.Second}, flproto.FailureTimeout, -1},
		{"timeout under a memory limit stays a timeout", Exit{Code: -1, Signal: syscall.SIGKILL, MemoryLimited: true, TimedOut: true}, flproto.FailureTimeout, -1},
		{"container timeout with exit 137", Exit{Code: 137, TimedOut: true}, flproto.FailureTimeout, 137},
		{"hung after a CUDA OOM then timed out", Exit{Code: -1, Signal: syscall.SIGKILL, TimedOut: true, LogOOM: true}, flproto.FailureOOM, -1},
		{"SIGKILL under a memory limit", Exit{Code: -1, Signal: syscall.SIGKILL, MemoryLimited: true}, flproto.FailureOOM, -1},
		{"SIGKILL without a memory limit", Exit{Code: -1, Signal: syscall.SIGKILL}, flproto.FailureError, -1},
		{"SIGSEGV", Exit{Code: -1, Signal: syscall.SIGSEGV, MemoryLimited: true}, flproto.FailureError, -1},
		{"exit 137", Exit{Code: 137}, flproto.FailureOOM, 137},
		{"CUDA OOM in the log", Exit{Code: 1, LogOOM: true}, flproto.FailureOOM, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := Classify(tc.exit)
			if got.Failure != tc.failure || got.ExitCode != tc.exitCode {
				t.Fatalf("Classify(%+v) = %+v, want failure %q exit %d", tc.exit, got, tc.failure, tc.exitCode)
			}
			if (got.Failure == "") != (got.Detail == "") {
				t.Fatalf("Classify(%+v) = %+v: a failure needs a detail, success none", tc.exit, got)
			}
			if got.OK() != (tc.failure == "") {
				t.Fatalf("OK() = %v for failure %q", got.OK(), got.Failure)
			}
		})
	}
}

func TestLineWriter(t *testing.T) {
	t.Parallel()
	rec := &lineRecorder{}
	sink := newLogSink(rec)
	out, errs := sink.stream(), sink.stream()
	mustWrite(t, out, "first li")
	mustWrite(t, errs, "err one\nerr ")
	mustWrite(t, out, "ne\r\nsecond\n\nthird")
	mustWrite(t, errs, "two: CUDA out of ")
	if sink.sawOOM() {
		t.Fatal("OOM seen before the line was complete")
	}
	mustWrite(t, errs, "memory\n")
	out.Flush()
	errs.Flush()
	want := []string{"err one", "first line", "second", "", "err two: CUDA out of memory", "third"}
	got := rec.lines()
	if len(got) != len(want) {
		t.Fatalf("lines = %q, want %q", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("lines = %q, want %q", got, want)
		}
	}
	if !sink.sawOOM() {
		t.Fatal("CUDA out of memory line not seen")
	}

	long := make([]byte, 2*maxLine+10)
	for i := range long {
		long[i] = 'x'
	}
	mustWrite(t, out, string(long)+"\n")
	got = rec.lines()[len(want):]
	if len(got) != 3 || len(got[0]) != maxLine || len(got[2]) != 10 {
		t.Fatalf("a long line was split into %d pieces", len(got))
	}
}

func mustWrite(t *testing.T, w *lineWriter, s string) {
	t.Helper()
	if n, err := w.Write([]byte(s)); err != nil || n != len(s) {
		t.Fatalf("Write(%q) = %d, %v", s, n, err)
	}
}
