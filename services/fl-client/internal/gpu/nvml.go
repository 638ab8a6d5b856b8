package gpu

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
)

// NVML is the Inventory of the host's NVIDIA driver. NVML is initialised on
// first use, once; Close shuts it down. It is safe for concurrent use.
type NVML struct {
	lib nvml.Interface

	mu      sync.Mutex
	tried   bool  // Init has been called
	initErr error // Init's outcome
	closed  bool
}

var _ Inventory = (*NVML)(nil)

// NewNVML returns the inventory of the host's driver, loading
// libnvidia-ml.so.1 when it is first asked.
func NewNVML() *NVML { return newNVML(nvml.New()) }

func newNVML(lib nvml.Interface) *NVML { return &NVML{lib: lib} }

// init initialises NVML once; later calls return the first outcome.
func (n *NVML) init() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return errors.New("gpu inventory is closed")
	}
	if !n.tried {
		n.tried = true
		n.initErr = initError(n.lib.Init())
	}
	return n.initErr
}

// initError maps Init's return code: a missing library or driver is
// ErrNoDriver, anything else a plain NVML error.
func initError(ret nvml.Return) error {
	switch ret {
	case nvml.SUCCESS:
		return nil
	case nvml.ERROR_LIBRARY_NOT_FOUND, nvml.ERROR_DRIVER_NOT_LOADED:
		return fmt.Errorf("%w: nvml init: %s", ErrNoDriver, nvml.ErrorString(ret))
	}
	return fmt.Errorf("nvml init: %s", nvml.ErrorString(ret))
}

// Close shuts NVML down if it was initialised. Devices fails afterwards.
func (n *NVML) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if !n.tried || n.initErr != nil {
		return nil
	}
	if ret := n.lib.Shutdown(); ret != nvml.SUCCESS {
		return fmt.Errorf("nvml shutdown: %s", nvml.ErrorString(ret))
	}
	return nil
}

// Devices reads every GPU's identity, memory, utilisation and MIG state.
func (n *NVML) Devices(ctx context.Context) ([]Device, error) {
	if err := n.init(); err != nil {
		return nil, err
	}
	count, ret := n.lib.DeviceGetCount()
	if ret != nvml.SUCCESS {
		return nil, nvmlError("count devices", ret)
	}
	devs := make([]Device, 0, count)
	for i := range count {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		h, ret := n.lib.DeviceGetHandleByIndex(i)
		if ret != nvml.SUCCESS {
			return nil, nvmlError(fmt.Sprintf("device %d", i), ret)
		}
		d, err := readDevice(i, h)
		if err != nil {
			return nil, err
		}
		devs = append(devs, d)
	}
	return devs, nil
}

func nvmlError(what string, ret nvml.Return) error {
	return fmt.Errorf("nvml: %s: %s", what, nvml.ErrorString(ret))
}

func readDevice(i int, h nvml.Device) (Device, error) {
	d := Device{Index: i, UtilizationPct: -1}
	var ret nvml.Return
	if d.UUID, ret = h.GetUUID(); ret != nvml.SUCCESS {
		return Device{}, nvmlError(fmt.Sprintf("device %d uuid", i), ret)
	}
	if d.Name, ret = h.GetName(); ret != nvml.SUCCESS {
		return Device{}, nvmlError(fmt.Sprintf("device %d name", i), ret)
	}
	mem, ret := h.GetMemoryInfo()
	if ret != nvml.SUCCESS {
		return Device{}, nvmlError(fmt.Sprintf("device %d memory", i), ret)
	}
	d.MemoryTotalMiB, d.MemoryUsedMiB = mem.Total>>20, mem.Used>>20
	switch u, ret := h.GetUtilizationRates(); ret {
	case nvml.SUCCESS:
		d.UtilizationPct = int(u.Gpu)
	case nvml.ERROR_NOT_SUPPORTED:
	default:
		return Device{}, nvmlError(fmt.Sprintf("device %d utilization", i), ret)
	}
	switch current, _, ret := h.GetMigMode(); ret {
	case nvml.SUCCESS:
		d.MIGEnabled = current == nvml.DEVICE_MIG_ENABLE
	case nvml.ERROR_NOT_SUPPORTED: // a GPU without MIG
	default:
		return Device{}, nvmlError(fmt.Sprintf("device %d MIG mode", i), ret)
	}
	if d.MIGEnabled {
		migs, err := readMIG(i, h)
		if err != nil {
			return Device{}, err
		}
		d.MIGDevices = migs
	}
	return d, nil
}

func readMIG(i int, h nvml.Device) ([]MIGDevice, error) {
	slots, ret := h.GetMaxMigDeviceCount()
	if ret != nvml.SUCCESS {
		return nil, nvmlError(fmt.Sprintf("device %d MIG count", i), ret)
	}
	var out []MIGDevice
	for j := range slots {
		m, ret := h.GetMigDeviceHandleByIndex(j)
		if ret == nvml.ERROR_NOT_FOUND || ret == nvml.ERROR_INVALID_ARGUMENT {
			continue // an empty slot
		}
		if ret != nvml.SUCCESS {
			return nil, nvmlError(fmt.Sprintf("device %d MIG %d", i, j), ret)
		}
		uuid, ret := m.GetUUID()
		if ret != nvml.SUCCESS {
			return nil, nvmlError(fmt.Sprintf("device %d MIG %d uuid", i, j), ret)
		}
		mem, ret := m.GetMemoryInfo()
		if ret != nvml.SUCCESS {
			return nil, nvmlError(fmt.Sprintf("device %d MIG %d memory", i, j), ret)
		}
		out = append(out, MIGDevice{UUID: uuid, MemoryTotalMiB: mem.Total >> 20, MemoryUsedMiB: mem.Used >> 20})
	}
	return out, nil
}
