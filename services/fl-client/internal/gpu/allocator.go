package gpu

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// ErrInsufficient marks a request the host's free GPUs cannot meet; the
// error's text (an *InsufficientError) says what was asked and what is free.
var ErrInsufficient = errors.New("not enough free GPUs")

// Unit is one allocatable GPU: a whole GPU, or a MIG instance of a GPU in
// MIG mode (whose UUID starts "MIG-").
type Unit struct {
	UUID    string
	FreeMiB uint64
	Leased  bool
}

// InsufficientError is a request the allocator could not meet.
type InsufficientError struct {
	Want   int    // GPUs asked for
	MemMiB uint64 // free memory asked for on each
	Units  []Unit // every unit at the time, with its free memory
	Cause  error  // why the inventory could not be read, if it could not
}

// Error says what was asked and what is free.
func (e *InsufficientError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: asked for %d GPU(s)", ErrInsufficient, e.Want)
	if e.MemMiB > 0 {
		fmt.Fprintf(&b, " with %d MiB free each", e.MemMiB)
	}
	switch {
	case e.Cause != nil:
		fmt.Fprintf(&b, "; %v", e.Cause)
	case len(e.Units) == 0:
		b.WriteString("; the host has none")
	default:
		b.WriteString("; have ")
		for i, u := range e.Units {
			if i > 0 {
				b.WriteString(", ")
			}
			if u.Leased {
				fmt.Fprintf(&b, "%s leased", u.UUID)
			} else {
				fmt.Fprintf(&b, "%s %d MiB free", u.UUID, u.FreeMiB)
			}
		}
	}
	return b.String()
}

// Unwrap lets errors.Is match ErrInsufficient and the inventory's error
// (such as ErrNoDriver).
func (e *InsufficientError) Unwrap() []error {
	if e.Cause != nil {
		return []error{ErrInsufficient, e.Cause}
	}
	return []error{ErrInsufficient}
}

// Allocator hands GPUs to jobs so that no two running jobs share one. It
// reads the inventory afresh on every Acquire, so memory used by other
// processes counts. It is safe for concurrent use.
type Allocator struct {
	inv Inventory

	mu     sync.Mutex
	leased map[string]bool // UUID → held by a lease
}

// NewAllocator returns an allocator over inv.
func NewAllocator(inv Inventory) *Allocator {
	return &Allocator{inv: inv, leased: make(map[string]bool)}
}

// Lease is a set of GPUs held for one job until Release.
type Lease struct {
	a     *Allocator
	uuids []string
	once  sync.Once
}

// UUIDs returns the leased GPUs' UUIDs ("GPU-…" or "MIG-…"), in the order
// they were chosen; empty for a job that asked for none.
func (l *Lease) UUIDs() []string { return append([]string(nil), l.uuids...) }

// Release gives the GPUs back. Calling it again does nothing.
func (l *Lease) Release() {
	l.once.Do(func() {
		l.a.mu.Lock()
		defer l.a.mu.Unlock()
		for _, u := range l.uuids {
			delete(l.a.leased, u)
		}
	})
}

// Acquire leases n GPUs, each with at least memMiB of free memory (total −
// used), that no other lease holds. n = 0 with memMiB > 0 means one GPU
// with that much free memory; n = 0 and memMiB = 0 is an empty lease. Of
// the fitting GPUs it takes those with the least free memory, keeping the
// larger ones for larger jobs. When the request cannot be met the error is
// an *InsufficientError (errors.Is(err, ErrInsufficient)).
func (a *Allocator) Acquire(ctx context.Context, n int, memMiB uint64) (*Lease, error) {
	if n < 0 {
		return nil, fmt.Errorf("gpu count %d must not be negative", n)
	}
	if n == 0 && memMiB > 0 {
		n = 1
	}
	if n == 0 {
		return &Lease{a: a}, nil
	}
	devs, err := a.inv.Devices(ctx)
	if err != nil {
		return nil, &InsufficientError{Want: n, MemMiB: memMiB, Cause: err}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	units := a.units(devs)
	var fit []Unit
	for _, u := range units {
		if !u.Leased && u.FreeMiB >= memMiB {
			fit = append(fit, u)
		}
	}
	if len(fit) < n {
		return nil, &InsufficientError{Want: n, MemMiB: memMiB, Units: units}
	}
	sort.SliceStable(fit, func(i, j int) bool { return fit[i].FreeMiB < fit[j].FreeMiB })
	l := &Lease{a: a, uuids: make([]string, n)}
	for i := range n {
		l.uuids[i] = fit[i].UUID
		a.leased[fit[i].UUID] = true
	}
	return l, nil
}

// units flattens devices into allocatable units, in inventory order; the
// caller holds a.mu.
func (a *Allocator) units(devs []Device) []Unit {
	var units []Unit
	for _, d := range devs {
		if d.MIGEnabled {
			for _, m := range d.MIGDevices {
				units = append(units, Unit{UUID: m.UUID, FreeMiB: m.MemoryFreeMiB(), Leased: a.leased[m.UUID]})
			}
			continue
		}
		units = append(units, Unit{UUID: d.UUID, FreeMiB: d.MemoryFreeMiB(), Leased: a.leased[d.UUID]})
	}
	return units
}
