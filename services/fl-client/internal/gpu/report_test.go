package gpu

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
)

func TestReport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	t.Run("devices", func(t *testing.T) {
		t.Parallel()
		s := Report(ctx, &fakeInventory{devs: []Device{gpu(0, "GPU-a", 81559, 512)}})
		if !s.Available || s.Reason != "" || len(s.Devices) != 1 || s.Devices[0].UUID != "GPU-a" {
			t.Errorf("summary = %+v", s)
		}
		js, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		for _, w := range []string{`"available":true`, `"uuid":"GPU-a"`, `"memory_total_mib":81559`, `"memory_used_mib":512`, `"mig_enabled":false`} {
			if !strings.Contains(string(js), w) {
				t.Errorf("JSON %s lacks %s", js, w)
			}
		}
	})
	t.Run("no driver", func(t *testing.T) {
		t.Parallel()
		s := Report(ctx, &fakeInventory{err: fmt.Errorf("%w: nvml init: ERROR_LIBRARY_NOT_FOUND", ErrNoDriver)})
		if s.Available || !strings.Contains(s.Reason, "no NVIDIA driver") || !strings.Contains(s.Reason, "ERROR_LIBRARY_NOT_FOUND") {
			t.Errorf("summary = %+v", s)
		}
		js, _ := json.Marshal(s)
		if !strings.Contains(string(js), `"devices":[]`) {
			t.Errorf("JSON %s: devices must be an empty list, not null", js)
		}
	})
	t.Run("nvml failure", func(t *testing.T) {
		t.Parallel()
		s := Report(ctx, &fakeInventory{err: errors.New("nvml: count devices: ERROR_UNKNOWN")})
		if s.Available || !strings.Contains(s.Reason, "ERROR_UNKNOWN") {
			t.Errorf("summary = %+v", s)
		}
	})
	t.Run("no GPUs", func(t *testing.T) {
		t.Parallel()
		s := Report(ctx, &fakeInventory{})
		if s.Available || s.Reason != "no GPUs found" {
			t.Errorf("summary = %+v", s)
		}
	})
}

func TestPrint(t *testing.T) {
	t.Parallel()
	s := Summary{Available: true, Devices: []Device{
		{Index: 0, UUID: "GPU-5e1b", Name: "NVIDIA H100 80GB HBM3", MemoryTotalMiB: 81559, MemoryUsedMiB: 4, UtilizationPct: 37},
		{Index: 1, UUID: "GPU-77aa", Name: "NVIDIA A100-SXM4-40GB", MemoryTotalMiB: 40960, UtilizationPct: -1, MIGEnabled: true,
			MIGDevices: []MIGDevice{{UUID: "MIG-0c1d", MemoryTotalMiB: 9856, MemoryUsedMiB: 13}}},
	}}
	var b bytes.Buffer
	if err := Print(&b, s); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(b.String(), "\n"), "\n")
	if len(lines) != 4 {
		t.Fatalf("printed %d lines, want a header, two GPUs and a MIG instance:\n%s", len(lines), b.String())
	}
	for i, want := range [][]string{
		{"INDEX", "UUID", "NAME", "MEMORY USED/TOTAL", "UTIL", "MIG"},
		{"0", "GPU-5e1b", "NVIDIA H100 80GB HBM3", "4/81559 MiB", "37%", "off"},
		{"1", "GPU-77aa", "NVIDIA A100-SXM4-40GB", "0/40960 MiB", "n/a", "on (1)"},
		{"1.0", "MIG-0c1d", "13/9856 MiB"},
	} {
		for _, w := range want {
			if !strings.Contains(lines[i], w) {
				t.Errorf("line %d %q lacks %q", i, lines[i], w)
			}
		}
	}
	// The columns line up: every row's UUID starts where the header's does.
	col := strings.Index(lines[0], "UUID")
	for _, l := range lines[1:] {
		if !strings.HasPrefix(l[col:], "GPU-") && !strings.HasPrefix(l[col:], "MIG-") {
			t.Errorf("misaligned row %q", l)
		}
	}

	b.Reset()
	if err := Print(&b, Summary{Reason: "no NVIDIA driver: nvml init: ERROR_LIBRARY_NOT_FOUND"}); err != nil {
		t.Fatal(err)
	}
	if b.String() != "GPUs unavailable: no NVIDIA driver: nvml init: ERROR_LIBRARY_NOT_FOUND\n" {
		t.Errorf("printed %q", b.String())
	}
}
