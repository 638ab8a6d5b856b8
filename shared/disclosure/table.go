package disclosure

// Vector is a released one-way table: its cells and its total.
type Vector struct {
	Cells []Cell
	// Total is the released total; Suppressed when the table was released
	// without one or the total itself had to be withheld.
	Total Cell
}

// Vector releases a one-way table of distinct-subject counts (one subject
// in at most one cell). With withTotal the table's total is released too.
//
// Primary suppression withholds every cell with 0 < n < floor. A total with
// 0 < total < floor withholds the whole table. When the total is released
// and any cell is withheld, the smallest released non-zero cells are
// withheld too (complementary suppression) until
//
//   - at least two cells are withheld,
//   - the withheld cells add up to at least the floor, and
//   - they add up to more than their number (so they cannot all be 1);
//
// if no cell is left to add, the total is withheld instead.
//
// Guarantee: zero cells are always released as 0, so a reader knows every
// withheld cell is at least 1. Given exact released cells and the released
// total, every withheld cell admits at least two values (move one subject
// between two withheld cells, one of which holds at least 2), and the
// withheld cells together hold at least floor subjects. Rounding the
// released values afterwards only widens what a reader can infer.
func (p Policy) Vector(counts []Subjects, withTotal bool) Vector {
	n := len(counts)
	hide := make([]bool, n)
	var total Subjects
	for i, c := range counts {
		c = max(c, 0)
		total += c
		hide[i] = p.Below(c) || !p.Valid()
	}
	totalHidden := !withTotal || p.Below(total) || !p.Valid()
	if withTotal && p.Below(total) {
		for i, c := range counts {
			hide[i] = c > 0
		}
	}
	if !totalHidden {
		for !vectorSafe(counts, hide, p.floor) {
			next := -1
			for i, c := range counts {
				if !hide[i] && c > 0 && (next < 0 || c < counts[next]) {
					next = i
				}
			}
			if next < 0 {
				totalHidden = true
				break
			}
			hide[next] = true
		}
	}
	out := Vector{Cells: make([]Cell, n)}
	for i, c := range counts {
		switch {
		case hide[i]:
			out.Cells[i] = Suppressed
		case c <= 0:
			out.Cells[i] = Zero()
		default:
			out.Cells[i] = Cell{n: p.Round(int64(c)), state: released}
		}
	}
	if !totalHidden {
		out.Total = Cell{n: p.Round(int64(total)), state: released}
	}
	return out
}

// vectorSafe reports whether the withheld cells of a table with a released
// total satisfy Vector's conditions (trivially when none is withheld).
func vectorSafe(counts []Subjects, hide []bool, floor int64) bool {
	var k, sum int64
	for i, c := range counts {
		if hide[i] {
			k++
			sum += int64(c)
		}
	}
	return k == 0 || (k >= 2 && sum >= floor && sum > k)
}

// Matrix is a released two-way table with its margins.
type Matrix struct {
	Cells     [][]Cell
	RowTotals []Cell
	ColTotals []Cell
	Total     Cell
}

// Matrix releases a two-way table of distinct-subject counts (rows × columns,
// every row the same length, one subject in at most one cell) with its row
// totals, column totals and grand total.
//
// Primary suppression withholds every cell with 0 < n < floor. A margin
// with 0 < m < floor withholds the whole table (cells and margins): the
// margins are released exactly, so a small margin would itself be a small
// cell. For each withheld cell not yet protected, complementary suppression
// withholds the three other corners of the cheapest rectangle (cells (i,j),
// (i,j'), (i',j), (i',j'), all non-zero) along which one subject can be
// moved — either (i,j) and (i',j') both hold at least 2, or (i,j') and
// (i',j) do — which protects all four corners at once. If a withheld cell
// has no such rectangle, the whole table is withheld.
//
// Guarantee: zero cells are always released as 0, so a reader knows every
// withheld cell is at least 1. Given the exact released cells and all
// margins, every withheld cell admits at least two values: adding and
// subtracting one subject around its rectangle keeps every margin, every
// released cell and every withheld cell's lower bound. Sums of withheld
// cells within a row or column are not protected (a row's withheld cells
// together may be below the floor). Rounding afterwards only widens what a
// reader can infer.
func (p Policy) Matrix(counts [][]Subjects) Matrix {
	rows := len(counts)
	cols := 0
	if rows > 0 {
		cols = len(counts[0])
	}
	val := func(i, j int) Subjects {
		if j < len(counts[i]) {
			return max(counts[i][j], 0)
		}
		return 0
	}
	rowT := make([]Subjects, rows)
	colT := make([]Subjects, cols)
	var total Subjects
	for i := range rows {
		for j := range cols {
			v := val(i, j)
			rowT[i] += v
			colT[j] += v
			total += v
		}
	}
	withhold := !p.Valid() || p.Below(total)
	for _, m := range append(append([]Subjects{}, rowT...), colT...) {
		withhold = withhold || p.Below(m)
	}
	hide := make([][]bool, rows)
	protected := make([][]bool, rows)
	for i := range rows {
		hide[i] = make([]bool, cols)
		protected[i] = make([]bool, cols)
		for j := range cols {
			hide[i][j] = p.Below(val(i, j))
		}
	}
	for i := 0; i < rows && !withhold; i++ {
		for j := 0; j < cols && !withhold; j++ {
			if !hide[i][j] || protected[i][j] {
				continue
			}
			bi, bj, best := -1, -1, Subjects(-1)
			for i2 := range rows {
				for j2 := range cols {
					if i2 == i || j2 == j {
						continue
					}
					a, b, c, d := val(i, j), val(i, j2), val(i2, j), val(i2, j2)
					if a == 0 || b == 0 || c == 0 || d == 0 || !((a >= 2 && d >= 2) || (b >= 2 && c >= 2)) {
						continue
					}
					var cost Subjects
					for _, rc := range [][2]int{{i, j2}, {i2, j}, {i2, j2}} {
						if !hide[rc[0]][rc[1]] {
							cost += val(rc[0], rc[1])
						}
					}
					if best < 0 || cost < best {
						bi, bj, best = i2, j2, cost
					}
				}
			}
			if bi < 0 {
				withhold = true
				break
			}
			for _, rc := range [][2]int{{i, j}, {i, bj}, {bi, j}, {bi, bj}} {
				hide[rc[0]][rc[1]] = true
				protected[rc[0]][rc[1]] = true
			}
		}
	}
	out := Matrix{Cells: make([][]Cell, rows), RowTotals: make([]Cell, rows), ColTotals: make([]Cell, cols)}
	rel := func(v Subjects) Cell {
		if v == 0 {
			return Zero()
		}
		return Cell{n: p.Round(int64(v)), state: released}
	}
	for i := range rows {
		out.Cells[i] = make([]Cell, cols)
		for j := range cols {
			if !withhold && !hide[i][j] {
				out.Cells[i][j] = rel(val(i, j))
			}
		}
		if !withhold {
			out.RowTotals[i] = rel(rowT[i])
		}
	}
	if !withhold {
		for j := range cols {
			out.ColTotals[j] = rel(colT[j])
		}
		out.Total = rel(total)
	}
	return out
}
