package gpu

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock"
)

const mib = 1 << 20

// plainGPU is an NVML device handle of a GPU without MIG.
func plainGPU() *mock.Device {
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-11111111-2222-3333-4444-555555555555", nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA H100 80GB HBM3", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 81559 * mib, Used: 1024 * mib, Free: 80535 * mib}, nvml.SUCCESS
		},
		GetUtilizationRatesFunc: func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{Gpu: 42}, nvml.SUCCESS },
		GetMigModeFunc:          func() (int, int, nvml.Return) { return 0, 0, nvml.ERROR_NOT_SUPPORTED },
	}
}

// migGPU is a GPU in MIG mode with two instances in three slots.
func migGPU() *mock.Device {
	inst := func(uuid string, total, used uint64) *mock.Device {
		return &mock.Device{
			GetUUIDFunc: func() (string, nvml.Return) { return uuid, nvml.SUCCESS },
			GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
				return nvml.Memory{Total: total * mib, Used: used * mib}, nvml.SUCCESS
			},
		}
	}
	slots := map[int]*mock.Device{0: inst("MIG-aaaa", 9856, 13), 2: inst("MIG-bbbb", 19968, 0)}
	return &mock.Device{
		GetUUIDFunc: func() (string, nvml.Return) { return "GPU-99999999-2222-3333-4444-555555555555", nvml.SUCCESS },
		GetNameFunc: func() (string, nvml.Return) { return "NVIDIA A100-SXM4-40GB", nvml.SUCCESS },
		GetMemoryInfoFunc: func() (nvml.Memory, nvml.Return) {
			return nvml.Memory{Total: 40960 * mib, Used: 13 * mib}, nvml.SUCCESS
		},
		GetUtilizationRatesFunc:  func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, nvml.ERROR_NOT_SUPPORTED },
		GetMigModeFunc:           func() (int, int, nvml.Return) { return nvml.DEVICE_MIG_ENABLE, nvml.DEVICE_MIG_ENABLE, nvml.SUCCESS },
		GetMaxMigDeviceCountFunc: func() (int, nvml.Return) { return 3, nvml.SUCCESS },
		GetMigDeviceHandleByIndexFunc: func(i int) (nvml.Device, nvml.Return) {
			if d, ok := slots[i]; ok {
				return d, nvml.SUCCESS
			}
			return nil, nvml.ERROR_NOT_FOUND
		},
	}
}

// library is an NVML library with the given devices, counting Init and
// Shutdown calls.
type library struct {
	mock.Interface
	inits, shutdowns int
}

func newLibrary(initRet nvml.Return, devs ...nvml.Device) *library {
	l := &library{}
	l.InitFunc = func() nvml.Return { l.inits++; return initRet }
	l.ShutdownFunc = func() nvml.Return { l.shutdowns++; return nvml.SUCCESS }
	l.DeviceGetCountFunc = func() (int, nvml.Return) { return len(devs), nvml.SUCCESS }
	l.DeviceGetHandleByIndexFunc = func(i int) (nvml.Device, nvml.Return) { return devs[i], nvml.SUCCESS }
	return l
}

func TestNVMLDevices(t *testing.T) {
	t.Parallel()
	lib := newLibrary(nvml.SUCCESS, plainGPU(), migGPU())
	n := newNVML(lib)
	devs, err := n.Devices(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(devs) != 2 {
		t.Fatalf("devices = %+v", devs)
	}
	d := devs[0]
	if d.Index != 0 || d.UUID != "GPU-11111111-2222-3333-4444-555555555555" || d.Name != "NVIDIA H100 80GB HBM3" ||
		d.MemoryTotalMiB != 81559 || d.MemoryUsedMiB != 1024 || d.UtilizationPct != 42 || d.MIGEnabled || d.MIGDevices != nil {
		t.Errorf("plain GPU = %+v", d)
	}
	m := devs[1]
	if m.Index != 1 || !m.MIGEnabled || m.UtilizationPct != -1 || len(m.MIGDevices) != 2 {
		t.Fatalf("MIG GPU = %+v", m)
	}
	if m.MIGDevices[0] != (MIGDevice{UUID: "MIG-aaaa", MemoryTotalMiB: 9856, MemoryUsedMiB: 13}) ||
		m.MIGDevices[1] != (MIGDevice{UUID: "MIG-bbbb", MemoryTotalMiB: 19968}) {
		t.Errorf("MIG instances = %+v", m.MIGDevices)
	}
	if _, err := n.Devices(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lib.inits != 1 {
		t.Errorf("Init called %d times, want once", lib.inits)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if err := n.Close(); err != nil {
		t.Fatal(err)
	}
	if lib.shutdowns != 1 {
		t.Errorf("Shutdown called %d times, want once", lib.shutdowns)
	}
	if _, err := n.Devices(context.Background()); err == nil {
		t.Error("a closed inventory answered")
	}
}

func TestNVMLInitFailures(t *testing.T) {
	t.Parallel()
	cases := []struct {
		ret      nvml.Return
		noDriver bool
	}{
		{nvml.ERROR_LIBRARY_NOT_FOUND, true},
		{nvml.ERROR_DRIVER_NOT_LOADED, true},
		{nvml.ERROR_NO_PERMISSION, false},
	}
	for _, tc := range cases {
		t.Run(tc.ret.Error(), func(t *testing.T) {
			t.Parallel()
			lib := newLibrary(tc.ret)
			n := newNVML(lib)
			_, err := n.Devices(context.Background())
			if err == nil {
				t.Fatal("Devices succeeded after a failed Init")
			}
			if errors.Is(err, ErrNoDriver) != tc.noDriver {
				t.Errorf("err = %v, ErrNoDriver %v, want %v", err, errors.Is(err, ErrNoDriver), tc.noDriver)
			}
			if !strings.Contains(err.Error(), tc.ret.Error()) {
				t.Errorf("err = %q lacks NVML's text %q", err, tc.ret.Error())
			}
			_, _ = n.Devices(context.Background())
			if lib.inits != 1 {
				t.Errorf("Init called %d times, want once", lib.inits)
			}
			if err := n.Close(); err != nil || lib.shutdowns != 0 {
				t.Errorf("Close = %v after %d shutdowns; an uninitialised library is not shut down", err, lib.shutdowns)
			}
		})
	}
}

func TestNVMLReturnCodesAreChecked(t *testing.T) {
	t.Parallel()
	fail := nvml.ERROR_GPU_IS_LOST
	cases := []struct {
		name    string
		breakIt func(l *library, plain, mig *mock.Device)
		want    string
	}{
		{"count", func(l *library, _, _ *mock.Device) {
			l.DeviceGetCountFunc = func() (int, nvml.Return) { return 0, fail }
		}, "count devices"},
		{"handle", func(l *library, _, _ *mock.Device) {
			l.DeviceGetHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, fail }
		}, "device 0"},
		{"uuid", func(_ *library, p, _ *mock.Device) {
			p.GetUUIDFunc = func() (string, nvml.Return) { return "", fail }
		}, "device 0 uuid"},
		{"name", func(_ *library, p, _ *mock.Device) {
			p.GetNameFunc = func() (string, nvml.Return) { return "", fail }
		}, "device 0 name"},
		{"memory", func(_ *library, p, _ *mock.Device) {
			p.GetMemoryInfoFunc = func() (nvml.Memory, nvml.Return) { return nvml.Memory{}, fail }
		}, "device 0 memory"},
		{"utilization", func(_ *library, p, _ *mock.Device) {
			p.GetUtilizationRatesFunc = func() (nvml.Utilization, nvml.Return) { return nvml.Utilization{}, fail }
		}, "device 0 utilization"},
		{"MIG mode", func(_ *library, p, _ *mock.Device) {
			p.GetMigModeFunc = func() (int, int, nvml.Return) { return 0, 0, fail }
		}, "device 0 MIG mode"},
		{"MIG count", func(_ *library, _, m *mock.Device) {
			m.GetMaxMigDeviceCountFunc = func() (int, nvml.Return) { return 0, fail }
		}, "device 1 MIG count"},
		{"MIG handle", func(_ *library, _, m *mock.Device) {
			m.GetMigDeviceHandleByIndexFunc = func(int) (nvml.Device, nvml.Return) { return nil, fail }
		}, "device 1 MIG 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			plain, mig := plainGPU(), migGPU()
			lib := newLibrary(nvml.SUCCESS, plain, mig)
			tc.breakIt(lib, plain, mig)
			_, err := newNVML(lib).Devices(context.Background())
			if err == nil {
				t.Fatal("Devices ignored a failed NVML call")
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), fail.Error()) {
				t.Errorf("err = %q, want it to name %q and %q", err, tc.want, fail.Error())
			}
		})
	}
}

// hostHasDriver reports whether the NVIDIA kernel driver is loaded here.
func hostHasDriver() bool {
	_, err := os.Stat("/proc/driver/nvidia/version")
	return err == nil
}

// TestRealNVML runs the real library: on a host without the driver it must
// report ErrNoDriver (and not panic); on a host with one it must list GPUs.
func TestRealNVML(t *testing.T) {
	t.Parallel()
	n := NewNVML()
	defer func() {
		if err := n.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	}()
	devs, err := n.Devices(context.Background())
	if !hostHasDriver() {
		if !errors.Is(err, ErrNoDriver) {
			t.Fatalf("without a driver: devices %+v, err %v; want ErrNoDriver", devs, err)
		}
		t.Logf("no driver, as expected: %v", err)
		return
	}
	if err != nil {
		t.Fatalf("with a driver: %v", err)
	}
	if len(devs) == 0 {
		t.Fatal("with a driver: no GPUs listed")
	}
	for _, d := range devs {
		if !strings.HasPrefix(d.UUID, "GPU-") || d.Name == "" || d.MemoryTotalMiB == 0 {
			t.Errorf("device %+v", d)
		}
		t.Logf("%d %s %s %d/%d MiB util %d%% MIG %v", d.Index, d.UUID, d.Name, d.MemoryUsedMiB, d.MemoryTotalMiB, d.UtilizationPct, d.MIGEnabled)
	}
	l, err := NewAllocator(n).Acquire(context.Background(), 1, 0)
	if err != nil {
		t.Fatalf("acquire one GPU on a GPU host: %v", err)
	}
	defer l.Release()
	if u := l.UUIDs(); len(u) != 1 || !(strings.HasPrefix(u[0], "GPU-") || strings.HasPrefix(u[0], "MIG-")) {
		t.Errorf("lease = %v", u)
	}
}
