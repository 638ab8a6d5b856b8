package synth

import (
	"encoding/binary"
	"math"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestDatesMatchTheCalendar(t *testing.T) {
	for day := time.Date(1890, 1, 1, 0, 0, 0, 0, time.UTC); day.Year() < 2110; day = day.AddDate(0, 0, 1) {
		d := dateOf(day.Year(), int(day.Month()), day.Day())
		if want := date(day.Sub(time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)).Hours() / 24); d != want {
			t.Fatalf("dateOf(%s) = %d, want %d", day.Format(time.DateOnly), d, want)
		}
		if got := d.Time(); !got.Equal(day) {
			t.Fatalf("date %d is %s, want %s", d, got.Format(time.DateOnly), day.Format(time.DateOnly))
		}
	}
}

func TestAgeAtCountsCompletedYears(t *testing.T) {
	cases := []struct {
		birth, at string
		want      int
	}{
		{"2000-01-01", "2025-01-01", 25},
		{"2000-01-02", "2025-01-01", 24},
		{"2000-02-29", "2025-02-28", 24},
		{"2000-02-29", "2025-03-01", 25},
		{"2024-12-31", "2025-01-01", 0},
		{"1930-06-15", "2025-06-14", 94},
	}
	parse := func(s string) date {
		tm, err := time.Parse(time.DateOnly, s)
		if err != nil {
			t.Fatal(err)
		}
		return dateOf(tm.Year(), int(tm.Month()), tm.Day())
	}
	for _, c := range cases {
		if got := ageAt(parse(c.birth), parse(c.at)); got != c.want {
			t.Errorf("ageAt(%s, %s) = %d, want %d", c.birth, c.at, got, c.want)
		}
	}
}

func TestNumericEncoding(t *testing.T) {
	cases := []struct {
		unscaled int64
		scale    int
		weight   int16
		sign     uint16
		digits   []uint16
	}{
		{274, 1, 0, 0, []uint16{27, 4000}},
		{270, 1, 0, 0, []uint16{27}},
		{5, 1, -1, 0, []uint16{5000}},
		{344, 2, 0, 0, []uint16{3, 4400}},
		{0, 1, 0, 0, nil},
		{152, 0, 0, 0, []uint16{152}},
		{20000, 0, 1, 0, []uint16{2}},
		{123456789, 0, 2, 0, []uint16{1, 2345, 6789}},
		{-75, 1, 0, 0x4000, []uint16{7, 5000}},
	}
	for _, c := range cases {
		var e enc
		e.numeric(c.unscaled, c.scale)
		b := e.b
		if n := binary.BigEndian.Uint32(b); int(n) != len(b)-4 {
			t.Fatalf("%d/%d: length %d, body %d bytes", c.unscaled, c.scale, n, len(b)-4)
		}
		nd := int(binary.BigEndian.Uint16(b[4:]))
		weight := int16(binary.BigEndian.Uint16(b[6:]))
		sign := binary.BigEndian.Uint16(b[8:])
		dscale := int(binary.BigEndian.Uint16(b[10:]))
		var digits []uint16
		for i := range nd {
			digits = append(digits, binary.BigEndian.Uint16(b[12+2*i:]))
		}
		if weight != c.weight || sign != c.sign || dscale != c.scale || !slices.Equal(digits, c.digits) {
			t.Errorf("numeric(%d, %d) = weight %d sign %#x dscale %d digits %v; want weight %d sign %#x dscale %d digits %v",
				c.unscaled, c.scale, weight, sign, dscale, digits, c.weight, c.sign, c.scale, c.digits)
		}
	}
}

func TestSlicePersons(t *testing.T) {
	cases := []struct {
		persons, index, count int
		want                  []int64
	}{
		{7, 0, 1, []int64{1, 2, 3, 4, 5, 6, 7}},
		{10, 0, 3, []int64{3, 6, 9}},
		{10, 1, 3, []int64{1, 4, 7, 10}},
		{10, 2, 3, []int64{2, 5, 8}},
		{2, 4, 5, nil},
	}
	for _, c := range cases {
		o := Options{Persons: c.persons, TrustIndex: c.index, TrustCount: c.count}
		var got []int64
		o.slicePersons(func(id int64) bool { got = append(got, id); return true })
		if !slices.Equal(got, c.want) {
			t.Errorf("slice %d of %d over %d persons = %v, want %v", c.index, c.count, c.persons, got, c.want)
		}
	}
}

func TestOptionsAreValidated(t *testing.T) {
	cases := []struct {
		name string
		opts Options
		want string
	}{
		{"no persons", Options{}, "persons must be"},
		{"negative persons", Options{Persons: -1}, "persons must be"},
		{"too many persons", Options{Persons: MaxPersons + 1}, "persons must be"},
		{"negative trust count", Options{Persons: 10, TrustCount: -2}, "trust count"},
		{"index beyond count", Options{Persons: 10, TrustIndex: 3, TrustCount: 3}, "trust index"},
		{"negative index", Options{Persons: 10, TrustIndex: -1, TrustCount: 3}, "trust index"},
		{"index without count", Options{Persons: 10, TrustIndex: 1}, "trust index"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			// The DSN is never dialled: validation comes first.
			_, err := Load(t.Context(), "host=/nonexistent port=1", c.opts)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Load(%+v) error = %v, want one mentioning %q", c.opts, err, c.want)
			}
		})
	}
}

// Row ids stay unique, within a person's stride and inside a PostgreSQL
// integer, up to the largest population.
func TestRowIDsStayWithinTheirStride(t *testing.T) {
	var p person
	for _, id := range []int64{1, 2, 3, MaxPersons - 2, MaxPersons - 1, MaxPersons} {
		for s := uint64(0); s < 400; s++ {
			p.generate(s, id)
			check := func(table string, ids []int32) {
				seen := map[int32]bool{}
				for _, rid := range ids {
					if int64(rid)/idStride != id || seen[rid] {
						t.Fatalf("person %d seed %d: %s id %d is outside the stride or repeated", id, s, table, rid)
					}
					seen[rid] = true
				}
			}
			var ids []int32
			for _, v := range p.visits {
				ids = append(ids, v.id)
			}
			check("visit", ids)
			ids = ids[:0]
			for _, c := range p.conditions {
				ids = append(ids, c.id)
			}
			check("condition", ids)
			ids = ids[:0]
			for _, d := range p.drugs {
				ids = append(ids, d.id)
			}
			check("drug", ids)
			ids = ids[:0]
			for _, m := range p.measures {
				ids = append(ids, m.id)
			}
			check("measurement", ids)
			ids = ids[:0]
			for _, pr := range p.procedures {
				ids = append(ids, pr.id)
			}
			check("procedure", ids)
			if len(p.visits) < 1 || len(p.visits) > 6 || len(p.images) > maxImages {
				t.Fatalf("person %d: %d visits, %d images", id, len(p.visits), len(p.images))
			}
		}
	}
}

// A logistic regression fitted to generated persons — features and outcome
// read from the generated rows, as a model would read them from the
// tables — recovers Signal's coefficients.
func TestSignalIsRecoverable(t *testing.T) {
	const n = 60000
	x := make([][6]float64, 0, n)
	y := make([]float64, 0, n)
	var p person
	for id := int64(1); id <= n; id++ {
		p.generate(11, id)
		f := [6]float64{1, float64(ageAt(p.birth, refDate))}
		if p.gender == ConceptMale {
			f[2] = 1
		}
		outcome := 0.0
		for _, c := range p.conditions {
			switch c.concept {
			case ConceptType2Diabetes:
				f[3] = 1
			case ConceptHeartFailure:
				outcome = 1
			}
		}
		for _, m := range p.measures {
			switch m.concept {
			case ConceptBMI:
				f[4] = float64(m.value) / 10
			case ConceptSystolicBP:
				f[5] = float64(m.value)
			}
		}
		x = append(x, f)
		y = append(y, outcome)
	}
	beta, se := fitLogistic(t, x, y)
	want := [6]float64{Signal.Intercept, Signal.AgeYears, Signal.Male, Signal.Type2Diabetes, Signal.BMI, Signal.SystolicBP}
	names := [6]string{"intercept", "age", "male", "t2d", "bmi", "sbp"}
	for i := range want {
		if math.Abs(beta[i]-want[i]) > 4*se[i] {
			t.Errorf("%s: fitted %.4f ± %.4f, planted %.4f", names[i], beta[i], se[i], want[i])
		}
	}
	t.Logf("fitted %v\nse     %v", beta, se)
}

// fitLogistic fits a logistic regression by Newton's method and returns the
// coefficients and their standard errors.
func fitLogistic(t *testing.T, x [][6]float64, y []float64) (beta, se [6]float64) {
	t.Helper()
	var h [6][6]float64
	for iter := 0; iter < 50; iter++ {
		var g [6]float64
		h = [6][6]float64{}
		for i, xi := range x {
			eta := 0.0
			for j := range xi {
				eta += beta[j] * xi[j]
			}
			p := 1 / (1 + math.Exp(-eta))
			w := p * (1 - p)
			for j := range xi {
				g[j] += (y[i] - p) * xi[j]
				for k := range xi {
					h[j][k] += w * xi[j] * xi[k]
				}
			}
		}
		step := solve(h, g)
		maxStep := 0.0
		for j := range beta {
			beta[j] += step[j]
			maxStep = math.Max(maxStep, math.Abs(step[j]))
		}
		if maxStep < 1e-9 {
			break
		}
	}
	for j := range se {
		var e [6]float64
		e[j] = 1
		se[j] = math.Sqrt(solve(h, e)[j])
	}
	return beta, se
}

// solve solves a·v = b by Gaussian elimination with partial pivoting.
func solve(a [6][6]float64, b [6]float64) [6]float64 {
	const n = 6
	for c := 0; c < n; c++ {
		p := c
		for r := c + 1; r < n; r++ {
			if math.Abs(a[r][c]) > math.Abs(a[p][c]) {
				p = r
			}
		}
		a[c], a[p] = a[p], a[c]
		b[c], b[p] = b[p], b[c]
		for r := c + 1; r < n; r++ {
			f := a[r][c] / a[c][c]
			for k := c; k < n; k++ {
				a[r][k] -= f * a[c][k]
			}
			b[r] -= f * b[c]
		}
	}
	var v [6]float64
	for r := n - 1; r >= 0; r-- {
		s := b[r]
		for k := r + 1; k < n; k++ {
			s -= a[r][k] * v[k]
		}
		v[r] = s / a[r][r]
	}
	return v
}

func TestSignalProbability(t *testing.T) {
	cases := []struct {
		f    Features
		want float64
	}{
		{Features{AgeYears: 60, BMI: 27, SystolicBP: 130}, 0.01816},
		{Features{AgeYears: 75, Male: true, Type2Diabetes: true, BMI: 32, SystolicBP: 150}, 0.31217},
	}
	for _, c := range cases {
		if got := Signal.Probability(c.f); math.Abs(got-c.want) > 1e-4 {
			t.Errorf("Probability(%+v) = %.5f, want %.5f", c.f, got, c.want)
		}
	}
}
