package gpu

import (
	"context"
	"sync"
)

// fakeInventory stands in for a host's GPUs in tests (this machine has
// none). Its devices can be changed between calls.
type fakeInventory struct {
	mu   sync.Mutex
	devs []Device
	err  error
}

var _ Inventory = (*fakeInventory)(nil)

func (f *fakeInventory) Devices(ctx context.Context) ([]Device, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	return append([]Device(nil), f.devs...), nil
}

func (f *fakeInventory) setUsed(uuid string, used uint64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i := range f.devs {
		if f.devs[i].UUID == uuid {
			f.devs[i].MemoryUsedMiB = used
		}
	}
}

func gpu(i int, uuid string, total, used uint64) Device {
	return Device{Index: i, UUID: uuid, Name: "NVIDIA H100 80GB HBM3", MemoryTotalMiB: total, MemoryUsedMiB: used, UtilizationPct: 0}
}
