package logreg

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
)

// ErrData marks a dataframe the job cannot use (a missing column, no usable
// rows, malformed CSV). Its messages carry column names and counts only.
var ErrData = errors.New("unusable dataframe")

// dataset is the usable rows of a dataframe, standardised, held compactly:
// x is row-major (row i's features are x[i*f : (i+1)*f]) and y holds 0 or 1.
// A million rows of five features take about 21 MB.
type dataset struct {
	f       int
	x       []float32
	y       []uint8
	skipped int64
}

// rows returns the number of usable rows.
func (d *dataset) rows() int { return len(d.y) }

// ctxCheckRows is how many CSV records pass between context checks.
const ctxCheckRows = 4096

// readDataset streams the CSV in r (header row first) once, keeping the
// standardised feature columns and the label of every row whose values all
// parse. Rows with an empty or unparsable feature or label are counted in
// skipped.
//
// size, when positive, is the dataframe's size in bytes: after the first
// rows the arrays are sized for the whole file once, so that they do not
// grow (and copy) step by step.
func readDataset(ctx context.Context, r io.Reader, size int64, p Params) (*dataset, error) {
	counted := &countingReader{r: r}
	cr := csv.NewReader(counted)
	cr.ReuseRecord = true
	cr.FieldsPerRecord = -1 // short rows are skipped, not fatal
	header, err := cr.Read()
	if errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%w: no header row", ErrData)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: read header: %w", ErrData, err)
	}
	index := make(map[string]int, len(header))
	for i, name := range header {
		if i == 0 {
			name = strings.TrimPrefix(name, "\ufeff")
		}
		name = strings.TrimSpace(name)
		if _, dup := index[name]; dup {
			index[name] = -1 // ambiguous; refused only if asked for
			continue
		}
		index[name] = i
	}
	col := func(name string) (int, error) {
		i, ok := index[name]
		switch {
		case !ok:
			return 0, fmt.Errorf("%w: no column %q", ErrData, name)
		case i < 0:
			return 0, fmt.Errorf("%w: column %q appears more than once", ErrData, name)
		}
		return i, nil
	}
	f := len(p.Features)
	featCols := make([]int, f)
	for j, ft := range p.Features {
		if featCols[j], err = col(ft.Column); err != nil {
			return nil, err
		}
	}
	labelCol, err := col(p.Label)
	if err != nil {
		return nil, err
	}
	need := labelCol
	for _, c := range featCols {
		need = max(need, c)
	}

	d := &dataset{f: f}
	row := make([]float32, f)
	for n := 0; ; n++ {
		if n%ctxCheckRows == 0 {
			if err := ctx.Err(); err != nil {
				return nil, err
			}
			if n == ctxCheckRows && size > 0 {
				d.reserve(estimateRows(size, counted.n, n))
			}
		}
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			// csv.ParseError names the line and column, never the value.
			return nil, fmt.Errorf("%w: %w", ErrData, err)
		}
		if len(rec) <= need {
			d.skipped++
			continue
		}
		y, ok := parseLabel(rec[labelCol])
		if !ok {
			d.skipped++
			continue
		}
		usable := true
		for j, c := range featCols {
			v, ok := parseValue(rec[c])
			if !ok {
				usable = false
				break
			}
			row[j] = float32((v - p.Features[j].Center) / p.Features[j].Scale)
			if math.IsInf(float64(row[j]), 0) {
				usable = false
				break
			}
		}
		if !usable {
			d.skipped++
			continue
		}
		d.x = append(d.x, row...)
		d.y = append(d.y, y)
	}
	return d, nil
}

// reserve makes room for rows rows in all.
func (d *dataset) reserve(rows int) {
	if rows > d.rows() {
		d.x = slices.Grow(d.x, (rows-d.rows())*d.f)
		d.y = slices.Grow(d.y, rows-d.rows())
	}
}

// estimateRows extrapolates the records in a file of size bytes from the
// first records, which took consumed bytes, with a little headroom.
func estimateRows(size, consumed int64, records int) int {
	if consumed <= 0 || records <= 0 {
		return 0
	}
	perRow := float64(consumed) / float64(records)
	return int(float64(size)/perRow*1.05) + 1
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// parseValue reads a feature: a finite number, or a boolean as 1 or 0.
func parseValue(s string) (float64, bool) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, false
	}
	if b, ok := parseBool(s); ok {
		if b {
			return 1, true
		}
		return 0, true
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		return 0, false
	}
	return v, true
}

// parseLabel reads a label: 0 or 1 (as any number equal to them), or
// true/false, t/f in any case.
func parseLabel(s string) (uint8, bool) {
	s = strings.TrimSpace(s)
	if b, ok := parseBool(s); ok {
		if b {
			return 1, true
		}
		return 0, true
	}
	v, err := strconv.ParseFloat(s, 64)
	switch {
	case err != nil:
		return 0, false
	case v == 0:
		return 0, true
	case v == 1:
		return 1, true
	}
	return 0, false
}

func parseBool(s string) (value, ok bool) {
	switch strings.ToLower(s) {
	case "true", "t":
		return true, true
	case "false", "f":
		return false, true
	}
	return false, false
}
