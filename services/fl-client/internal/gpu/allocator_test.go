package gpu

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

func TestAcquire(t *testing.T) {
	t.Parallel()
	host := []Device{
		gpu(0, "GPU-a", 81559, 1000),  // 80559 free
		gpu(1, "GPU-b", 81559, 60000), // 21559 free
		gpu(2, "GPU-c", 40960, 0),     // 40960 free
	}
	mig := Device{Index: 3, UUID: "GPU-m", Name: "NVIDIA A100", MemoryTotalMiB: 40960, UtilizationPct: -1, MIGEnabled: true,
		MIGDevices: []MIGDevice{{UUID: "MIG-1", MemoryTotalMiB: 9856}, {UUID: "MIG-2", MemoryTotalMiB: 19968, MemoryUsedMiB: 19700}}}
	cases := []struct {
		name     string
		devs     []Device
		held     []string // leased before the request
		n        int
		mem      uint64
		want     []string
		wantErr  error
		wantText []string
	}{
		{name: "no GPUs asked", devs: host, n: 0, mem: 0, want: nil},
		{name: "one GPU, smallest that fits", devs: host, n: 1, want: []string{"GPU-b"}},
		{name: "memory only means one GPU", devs: host, n: 0, mem: 30000, want: []string{"GPU-c"}},
		{name: "memory picks the tightest fit", devs: host, n: 1, mem: 50000, want: []string{"GPU-a"}},
		{name: "two GPUs with memory", devs: host, n: 2, mem: 20000, want: []string{"GPU-b", "GPU-c"}},
		{name: "all three", devs: host, n: 3, want: []string{"GPU-b", "GPU-c", "GPU-a"}},
		{name: "leased GPUs are skipped", devs: host, held: []string{"GPU-b", "GPU-c"}, n: 1, want: []string{"GPU-a"}},
		{name: "too many", devs: host, n: 4, wantErr: ErrInsufficient,
			wantText: []string{"asked for 4 GPU(s)", "GPU-a 80559 MiB free", "GPU-b 21559 MiB free", "GPU-c 40960 MiB free"}},
		{name: "not enough memory", devs: host, n: 1, mem: 90000, wantErr: ErrInsufficient,
			wantText: []string{"with 90000 MiB free each", "GPU-a 80559 MiB free"}},
		{name: "leased GPUs are named", devs: host, held: []string{"GPU-a"}, n: 1, mem: 50000, wantErr: ErrInsufficient,
			wantText: []string{"GPU-a leased"}},
		{name: "a host without GPUs", devs: nil, n: 1, wantErr: ErrInsufficient, wantText: []string{"the host has none"}},
		{name: "MIG instances are allocated", devs: []Device{mig}, n: 0, mem: 500, want: []string{"MIG-1"}},
		{name: "a full MIG instance is not", devs: []Device{mig}, n: 2, mem: 500, wantErr: ErrInsufficient,
			wantText: []string{"MIG-2 268 MiB free"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a := NewAllocator(&fakeInventory{devs: tc.devs})
			for _, u := range tc.held {
				a.leased[u] = true
			}
			l, err := a.Acquire(context.Background(), tc.n, tc.mem)
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
				var ie *InsufficientError
				if !errors.As(err, &ie) || ie.Want != max(tc.n, 1) || ie.MemMiB != tc.mem {
					t.Errorf("error = %#v, want what was asked", ie)
				}
				for _, w := range tc.wantText {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("err = %q, missing %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := l.UUIDs(); !slices.Equal(got, tc.want) {
				t.Errorf("UUIDs() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestAcquireNegative(t *testing.T) {
	t.Parallel()
	a := NewAllocator(&fakeInventory{})
	if _, err := a.Acquire(context.Background(), -1, 0); err == nil || errors.Is(err, ErrInsufficient) {
		t.Errorf("err = %v, want a plain argument error", err)
	}
}

func TestAcquireWithoutDriver(t *testing.T) {
	t.Parallel()
	a := NewAllocator(&fakeInventory{err: fmt.Errorf("%w: nvml init: ERROR_LIBRARY_NOT_FOUND", ErrNoDriver)})
	_, err := a.Acquire(context.Background(), 1, 0)
	if !errors.Is(err, ErrInsufficient) || !errors.Is(err, ErrNoDriver) {
		t.Fatalf("err = %v, want ErrInsufficient and ErrNoDriver", err)
	}
	if !strings.Contains(err.Error(), "ERROR_LIBRARY_NOT_FOUND") {
		t.Errorf("err = %q does not say why", err)
	}
	// A CPU job needs no inventory at all.
	if l, err := a.Acquire(context.Background(), 0, 0); err != nil || len(l.UUIDs()) != 0 {
		t.Errorf("empty lease = %v, %v", l, err)
	}
}

func TestReleaseIsIdempotent(t *testing.T) {
	t.Parallel()
	a := NewAllocator(&fakeInventory{devs: []Device{gpu(0, "GPU-a", 100, 0), gpu(1, "GPU-b", 100, 0)}})
	ctx := context.Background()
	first, err := a.Acquire(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	second, err := a.Acquire(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if first.UUIDs()[0] == second.UUIDs()[0] {
		t.Fatal("two leases share a GPU")
	}
	if _, err := a.Acquire(ctx, 1, 0); !errors.Is(err, ErrInsufficient) {
		t.Fatalf("third lease: err = %v, want ErrInsufficient", err)
	}
	first.Release()
	first.Release() // a second release must not free the GPU a later lease holds
	third, err := a.Acquire(ctx, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if third.UUIDs()[0] != first.UUIDs()[0] {
		t.Errorf("third lease = %v, want the released %v", third.UUIDs(), first.UUIDs())
	}
	first.Release()
	if _, err := a.Acquire(ctx, 1, 0); !errors.Is(err, ErrInsufficient) {
		t.Errorf("a repeated Release freed a GPU another lease holds: err = %v", err)
	}
	// UUIDs hands out a copy.
	u := third.UUIDs()
	u[0] = "changed"
	if third.UUIDs()[0] == "changed" {
		t.Error("UUIDs exposes the lease's slice")
	}
}

func TestAcquireSeesMemoryUsedElsewhere(t *testing.T) {
	t.Parallel()
	inv := &fakeInventory{devs: []Device{gpu(0, "GPU-a", 80000, 0)}}
	a := NewAllocator(inv)
	inv.setUsed("GPU-a", 75000)
	if _, err := a.Acquire(context.Background(), 1, 10000); !errors.Is(err, ErrInsufficient) {
		t.Fatalf("err = %v, want ErrInsufficient once another process uses the memory", err)
	}
	inv.setUsed("GPU-a", 1000)
	if _, err := a.Acquire(context.Background(), 1, 10000); err != nil {
		t.Fatal(err)
	}
}

func TestAcquireConcurrently(t *testing.T) {
	t.Parallel()
	var devs []Device
	for i := range 4 {
		devs = append(devs, gpu(i, fmt.Sprintf("GPU-%d", i), 1000, 0))
	}
	a := NewAllocator(&fakeInventory{devs: devs})
	const jobs = 32
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		holding = map[string]int{}
		overlap bool
		granted int
	)
	for range jobs {
		wg.Go(func() {
			for {
				l, err := a.Acquire(context.Background(), 1, 0)
				if errors.Is(err, ErrInsufficient) {
					continue
				}
				if err != nil {
					t.Error(err)
					return
				}
				u := l.UUIDs()[0]
				mu.Lock()
				holding[u]++
				if holding[u] > 1 {
					overlap = true
				}
				granted++
				mu.Unlock()
				mu.Lock()
				holding[u]--
				mu.Unlock()
				l.Release()
				return
			}
		})
	}
	wg.Wait()
	if overlap {
		t.Error("two running jobs held the same GPU")
	}
	if granted != jobs {
		t.Errorf("%d of %d jobs got a GPU", granted, jobs)
	}
}
