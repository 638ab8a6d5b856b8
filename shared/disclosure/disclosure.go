// Package disclosure is the trust node's disclosure-control kernel: every
// number that leaves the trust, whatever the channel, passes it.
//
// The rules (docs/egress.md, "Disclosure control"):
//
//   - Counts are counts of distinct subjects. Callers hand the kernel
//     Subjects values, never row counts, so the unit is explicit at every
//     call site.
//   - The site floor: a released count is 0 or at least Policy.Floor. The
//     floor is the trust's COHORT_QUERY_THRESHOLD, raised (never lowered) by
//     the site policy file.
//   - Small-cell suppression: a count with 0 < n < floor is withheld. A
//     withheld count is a Cell in the Suppressed state, which encodes as JSON
//     null and is never confused with a true 0.
//   - Secondary (complementary) suppression: where a released total or margin
//     would let a reader recover a withheld cell by subtraction, further cells
//     are withheld (see Policy.Vector and Policy.Matrix for what is
//     guaranteed).
//   - Rounding: a site may round every released count to a multiple of
//     Policy.Rounding. Rounding is applied after suppression, to cells and
//     totals alike, and never yields a value between 0 and the floor.
//
// Released marks a payload that passed the kernel; outgoing payload code
// requires it, and Seal refuses payloads that carry raw integer counts.
//
// Every function is pure and safe for concurrent use.
package disclosure

import (
	"errors"
	"fmt"
	"strconv"
)

// Subjects is a count of distinct subjects (persons). A row count or a
// count of studies is not a Subjects value: convert it only where the
// caller has established that each row or study is one subject, or where
// the count is bounded by the subjects it covers.
type Subjects int64

// Policy is a site's disclosure configuration. The zero Policy is not
// usable: build one with NewPolicy.
type Policy struct {
	floor    int64
	rounding int64
}

// ErrPolicy marks an invalid disclosure configuration.
var ErrPolicy = errors.New("invalid disclosure policy")

// NewPolicy returns the policy for a trust whose COHORT_QUERY_THRESHOLD is
// threshold, with the site's floor (0: the threshold) and rounding (0: off;
// otherwise round released counts to a multiple of rounding). A floor below
// the threshold is an error: the site policy can only raise it.
func NewPolicy(threshold, floor, rounding int64) (Policy, error) {
	var errs []error
	if threshold < 1 {
		errs = append(errs, fmt.Errorf("%w: COHORT_QUERY_THRESHOLD must be at least 1, got %d", ErrPolicy, threshold))
	}
	if floor != 0 && floor < threshold {
		errs = append(errs, fmt.Errorf("%w: floor %d is below COHORT_QUERY_THRESHOLD %d; the site policy can only raise it", ErrPolicy, floor, threshold))
	}
	if rounding < 0 {
		errs = append(errs, fmt.Errorf("%w: rounding must be 0 (off) or a positive integer, got %d", ErrPolicy, rounding))
	}
	if len(errs) > 0 {
		return Policy{}, errors.Join(errs...)
	}
	return Policy{floor: max(threshold, floor), rounding: rounding}, nil
}

// MustPolicy is NewPolicy for constants known to be valid (tests and
// defaults); it panics on an invalid combination.
func MustPolicy(threshold, floor, rounding int64) Policy {
	p, err := NewPolicy(threshold, floor, rounding)
	if err != nil {
		panic(err)
	}
	return p
}

// Floor is the minimum released count.
func (p Policy) Floor() int64 { return p.floor }

// Rounding is the multiple released counts are rounded to (0 or 1: none).
func (p Policy) Rounding() int64 { return p.rounding }

// Valid reports whether p was built by NewPolicy.
func (p Policy) Valid() bool { return p.floor >= 1 }

// Below reports whether n is a small cell: 0 < n < floor.
func (p Policy) Below(n Subjects) bool { return n > 0 && int64(n) < p.floor }

// Round is the released form of a count that cleared the floor: the nearest
// multiple of the rounding (halves up), and never below the floor: a count
// whose nearest multiple falls under the floor is released as the smallest
// multiple at or above it. 0 stays 0. Round is monotone, so rounding cannot
// reorder cells.
func (p Policy) Round(n int64) int64 {
	if n <= 0 || p.rounding <= 1 {
		return n
	}
	r := (n + p.rounding/2) / p.rounding * p.rounding
	if r < p.floor {
		r = (p.floor + p.rounding - 1) / p.rounding * p.rounding
	}
	return r
}

// state of a Cell. The zero state is suppressed, so a Cell nobody filled in
// never leaks a number.
type state uint8

const (
	suppressed state = iota
	released
)

// Cell is one count as it leaves the trust: either a released value (0 or
// at least the floor, rounded) or Suppressed. Only this package makes
// released cells; the zero Cell is suppressed.
//
// JSON: a released cell encodes as its number, a suppressed one as null.
type Cell struct {
	n     int64
	state state
}

// Suppressed is the withheld cell.
var Suppressed = Cell{}

// Cell applies the floor and rounding to a single count that no released
// total constrains.
func (p Policy) Cell(n Subjects) Cell {
	if n < 0 || p.Below(n) || !p.Valid() {
		return Suppressed
	}
	return Cell{n: p.Round(int64(n)), state: released}
}

// Zero is a released true zero.
func Zero() Cell { return Cell{state: released} }

// IsSuppressed reports whether c is withheld.
func (c Cell) IsSuppressed() bool { return c.state != released }

// Value returns the released value; ok is false for a suppressed cell.
func (c Cell) Value() (n int64, ok bool) { return c.n, c.state == released }

// OrZero is the released value, or 0 for a suppressed cell: only for wire
// formats that carry suppression in a separate flag (FLIP's
// "suppressed": true beside "record_count": 0).
func (c Cell) OrZero() int64 {
	if c.state != released {
		return 0
	}
	return c.n
}

// String is the value, or "suppressed".
func (c Cell) String() string {
	if c.state != released {
		return "suppressed"
	}
	return strconv.FormatInt(c.n, 10)
}

// MarshalJSON encodes a released cell as its number and a suppressed cell
// as null.
func (c Cell) MarshalJSON() ([]byte, error) {
	if c.state != released {
		return []byte("null"), nil
	}
	return strconv.AppendInt(nil, c.n, 10), nil
}
