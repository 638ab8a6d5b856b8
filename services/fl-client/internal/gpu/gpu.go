// Package gpu is fl-client's view of the host's NVIDIA GPUs: an inventory
// read through NVML (a host without the driver is a normal, reported state,
// never a failure of the service), an allocator that hands GPUs to jobs
// without overlap, and a JSON-ready report for /gpus, health and the
// "fl-client gpus" command.
package gpu

import (
	"context"
	"errors"
)

// Device is one physical GPU.
type Device struct {
	Index          int    `json:"index"`
	UUID           string `json:"uuid"` // "GPU-…"
	Name           string `json:"name"`
	MemoryTotalMiB uint64 `json:"memory_total_mib"`
	MemoryUsedMiB  uint64 `json:"memory_used_mib"`
	// UtilizationPct is the GPU's busy percentage over the driver's last
	// sample period, or -1 where the driver does not report it (as on a
	// GPU in MIG mode).
	UtilizationPct int         `json:"utilization_pct"`
	MIGEnabled     bool        `json:"mig_enabled"`
	MIGDevices     []MIGDevice `json:"mig_devices,omitempty"`
}

// MemoryFreeMiB is total minus used memory.
func (d Device) MemoryFreeMiB() uint64 {
	if d.MemoryUsedMiB > d.MemoryTotalMiB {
		return 0
	}
	return d.MemoryTotalMiB - d.MemoryUsedMiB
}

// MIGDevice is one MIG instance of a GPU in MIG mode.
type MIGDevice struct {
	UUID           string `json:"uuid"` // "MIG-…"
	MemoryTotalMiB uint64 `json:"memory_total_mib"`
	MemoryUsedMiB  uint64 `json:"memory_used_mib"`
}

// MemoryFreeMiB is total minus used memory.
func (m MIGDevice) MemoryFreeMiB() uint64 {
	if m.MemoryUsedMiB > m.MemoryTotalMiB {
		return 0
	}
	return m.MemoryTotalMiB - m.MemoryUsedMiB
}

// Inventory lists the host's GPUs. Implementations are safe for concurrent
// use; a host without the NVIDIA driver answers an error wrapping
// ErrNoDriver.
type Inventory interface {
	Devices(ctx context.Context) ([]Device, error)
}

// ErrNoDriver marks a host without a usable NVIDIA driver (no
// libnvidia-ml.so.1, or the kernel module is not loaded). CPU jobs still run.
var ErrNoDriver = errors.New("no NVIDIA driver")
