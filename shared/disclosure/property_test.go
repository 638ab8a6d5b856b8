package disclosure

import (
	"math/rand/v2"
	"testing"
)

// The property tests draw random cohorts (one-way tables: a cohort split by
// a category, e.g. age decade or sex) and random metric tables (two-way:
// e.g. a confusion matrix per site or a category by outcome), release them,
// and check, from the released values alone plus the true table:
//
//  1. no released cell or total has 0 < n < floor;
//  2. no suppressed cell is pinned by the released constraints: the test
//     constructs a second table, different in that cell, that agrees with
//     every released cell and released total/margin, has every suppressed
//     cell >= 1 (a reader knows zeros are released as 0), and checks the
//     constraints on it directly.

const propertyRuns = 3000

func randomCount(r *rand.Rand, floor int64) Subjects {
	switch r.IntN(6) {
	case 0:
		return 0
	case 1, 2:
		return Subjects(1 + r.Int64N(floor)) // small, sometimes exactly the floor
	default:
		return Subjects(r.Int64N(8 * floor))
	}
}

func randomPolicy(r *rand.Rand) Policy {
	threshold := 1 + r.Int64N(15)
	floor := int64(0)
	if r.IntN(2) == 0 {
		floor = threshold + r.Int64N(10)
	}
	rounding := []int64{0, 0, 1, 2, 5, 10}[r.IntN(6)]
	return MustPolicy(threshold, floor, rounding)
}

func checkReleased(t *testing.T, p Policy, where string, c Cell, truth Subjects) {
	t.Helper()
	v, ok := c.Value()
	if !ok {
		return
	}
	if (v > 0 && v < p.Floor()) || (truth > 0 && int64(truth) < p.Floor()) || (v == 0) != (truth == 0) {
		t.Fatalf("%s released %d (true %d) under floor %d", where, v, truth, p.Floor())
	}
}

func TestPropertyVector(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	for run := range propertyRuns {
		p := randomPolicy(r)
		counts := make([]Subjects, r.IntN(9))
		for i := range counts {
			counts[i] = randomCount(r, p.Floor())
		}
		withTotal := r.IntN(4) != 0
		v := p.Vector(counts, withTotal)
		var total Subjects
		for i, c := range v.Cells {
			checkReleased(t, p, "cell", c, counts[i])
			total += counts[i]
		}
		checkReleased(t, p, "total", v.Total, total)
		if !withTotal && !v.Total.IsSuppressed() {
			t.Fatalf("run %d: total released without being asked for", run)
		}
		// Exact released constraints: released cells, and the total if released.
		for c := range counts {
			if !v.Cells[c].IsSuppressed() {
				continue
			}
			if !vectorAlternative(counts, v, c) {
				t.Fatalf("run %d: floor %d, counts %v, released %q: suppressed cell %d is pinned", run, p.Floor(), counts, render(v), c)
			}
		}
	}
}

// vectorAlternative builds a table other than counts that matches every
// released constraint of v and differs in cell c, and verifies it.
func vectorAlternative(counts []Subjects, v Vector, c int) bool {
	alt := append([]Subjects(nil), counts...)
	if v.Total.IsSuppressed() {
		alt[c]++ // nothing ties a suppressed cell to the others
	} else {
		found := false
		for d := range counts {
			if d == c || !v.Cells[d].IsSuppressed() {
				continue
			}
			if counts[c] >= 2 {
				alt[c]--
				alt[d]++
			} else if counts[d] >= 2 {
				alt[c]++
				alt[d]--
			} else {
				continue
			}
			found = true
			break
		}
		if !found {
			return false
		}
	}
	// Verify against the released constraints directly.
	var sumTrue, sumAlt Subjects
	for i := range counts {
		sumTrue += counts[i]
		sumAlt += alt[i]
		if !v.Cells[i].IsSuppressed() && alt[i] != counts[i] {
			return false
		}
		if v.Cells[i].IsSuppressed() && alt[i] < 1 {
			return false
		}
	}
	return alt[c] != counts[c] && (v.Total.IsSuppressed() || sumAlt == sumTrue)
}

func TestPropertyVectorGroupReachesFloor(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(3, 4))
	for range propertyRuns {
		p := randomPolicy(r)
		counts := make([]Subjects, 1+r.IntN(8))
		for i := range counts {
			counts[i] = randomCount(r, p.Floor())
		}
		v := p.Vector(counts, true)
		if v.Total.IsSuppressed() {
			continue
		}
		var hidden Subjects
		for i, c := range v.Cells {
			if c.IsSuppressed() {
				hidden += counts[i]
			}
		}
		if hidden > 0 && int64(hidden) < p.Floor() {
			t.Fatalf("floor %d, counts %v: total minus released cells reveals %d", p.Floor(), counts, hidden)
		}
	}
}

func TestPropertyMatrix(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(5, 6))
	withheld, protectedCells := 0, 0
	for run := range propertyRuns {
		p := randomPolicy(r)
		rows, cols := 1+r.IntN(5), 1+r.IntN(5)
		counts := make([][]Subjects, rows)
		for i := range counts {
			counts[i] = make([]Subjects, cols)
			for j := range counts[i] {
				counts[i][j] = randomCount(r, p.Floor())
				if r.IntN(3) > 0 {
					counts[i][j] += Subjects(p.Floor()) // fewer whole-table withholds
				}
			}
		}
		m := p.Matrix(counts)
		rowT, colT, total := margins(counts)
		for i := range rows {
			for j := range cols {
				checkReleased(t, p, "cell", m.Cells[i][j], counts[i][j])
			}
			checkReleased(t, p, "row total", m.RowTotals[i], rowT[i])
		}
		for j := range cols {
			checkReleased(t, p, "column total", m.ColTotals[j], colT[j])
		}
		checkReleased(t, p, "total", m.Total, total)
		if m.Total.IsSuppressed() {
			withheld++
		}
		for i := range rows {
			for j := range cols {
				if !m.Cells[i][j].IsSuppressed() {
					continue
				}
				protectedCells++
				if !matrixAlternative(counts, m, i, j) {
					t.Fatalf("run %d: floor %d, table %v:\n%s\nsuppressed cell (%d,%d) is pinned", run, p.Floor(), counts, renderMatrix(m), i, j)
				}
			}
		}
	}
	if withheld == propertyRuns || protectedCells == 0 {
		t.Fatalf("generator degenerate: %d of %d tables withheld, %d suppressed cells", withheld, propertyRuns, protectedCells)
	}
}

func margins(counts [][]Subjects) (rowT, colT []Subjects, total Subjects) {
	rowT = make([]Subjects, len(counts))
	if len(counts) > 0 {
		colT = make([]Subjects, len(counts[0]))
	}
	for i, row := range counts {
		for j, v := range row {
			rowT[i] += v
			colT[j] += v
			total += v
		}
	}
	return rowT, colT, total
}

// matrixAlternative searches the suppressed cells for a rectangle through
// (i,j) along which one subject can move, applies the move, and verifies
// the result against every released constraint of m.
func matrixAlternative(counts [][]Subjects, m Matrix, i, j int) bool {
	if m.Total.IsSuppressed() {
		return true // the table is withheld whole: nothing constrains it
	}
	for i2 := range counts {
		for j2 := range counts[i] {
			if i2 == i || j2 == j || !m.Cells[i][j2].IsSuppressed() || !m.Cells[i2][j].IsSuppressed() || !m.Cells[i2][j2].IsSuppressed() {
				continue
			}
			for _, sign := range []Subjects{-1, 1} {
				alt := make([][]Subjects, len(counts))
				for k := range counts {
					alt[k] = append([]Subjects(nil), counts[k]...)
				}
				alt[i][j] += sign
				alt[i2][j2] += sign
				alt[i][j2] -= sign
				alt[i2][j] -= sign
				if matrixConsistent(counts, alt, m) && alt[i][j] != counts[i][j] {
					return true
				}
			}
		}
	}
	return false
}

func matrixConsistent(truth, alt [][]Subjects, m Matrix) bool {
	rt, ct, tt := margins(truth)
	ra, ca, ta := margins(alt)
	if tt != ta {
		return false
	}
	for i := range truth {
		if rt[i] != ra[i] {
			return false
		}
		for j := range truth[i] {
			if ct[j] != ca[j] {
				return false
			}
			if m.Cells[i][j].IsSuppressed() && alt[i][j] < 1 {
				return false
			}
			if !m.Cells[i][j].IsSuppressed() && alt[i][j] != truth[i][j] {
				return false
			}
		}
	}
	return true
}
