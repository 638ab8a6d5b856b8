package disclosure

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
)

func TestNewPolicy(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                       string
		threshold, floor, rounding int64
		wantFloor                  int64
		wantErr                    []string
	}{
		{name: "threshold only", threshold: 10, wantFloor: 10},
		{name: "floor raises", threshold: 10, floor: 15, rounding: 5, wantFloor: 15},
		{name: "floor equal", threshold: 10, floor: 10, wantFloor: 10},
		{name: "floor lowers", threshold: 10, floor: 5, wantErr: []string{"below COHORT_QUERY_THRESHOLD"}},
		{name: "zero threshold", threshold: 0, wantErr: []string{"at least 1"}},
		{name: "all wrong", threshold: 10, floor: 3, rounding: -5, wantErr: []string{"below COHORT_QUERY_THRESHOLD", "rounding"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			p, err := NewPolicy(tc.threshold, tc.floor, tc.rounding)
			if len(tc.wantErr) == 0 {
				if err != nil || p.Floor() != tc.wantFloor || !p.Valid() {
					t.Fatalf("NewPolicy = %+v, %v; want floor %d", p, err, tc.wantFloor)
				}
				return
			}
			if err == nil || !errors.Is(err, ErrPolicy) {
				t.Fatalf("NewPolicy = %v, want ErrPolicy", err)
			}
			for _, w := range tc.wantErr {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q lacks %q", err, w)
				}
			}
		})
	}
}

func TestCellFloorAndJSON(t *testing.T) {
	t.Parallel()
	p := MustPolicy(10, 0, 0)
	cases := []struct {
		n    Subjects
		json string
	}{{0, "0"}, {1, "null"}, {9, "null"}, {10, "10"}, {11, "11"}, {-1, "null"}}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.n), func(t *testing.T) {
			t.Parallel()
			b, err := json.Marshal(p.Cell(tc.n))
			if err != nil || string(b) != tc.json {
				t.Fatalf("Cell(%d) = %s, %v; want %s", tc.n, b, err, tc.json)
			}
		})
	}
	// The zero Cell and Suppressed never read as a true zero.
	var zero Cell
	if !zero.IsSuppressed() || zero.String() != "suppressed" || Zero().IsSuppressed() {
		t.Fatal("the zero Cell must be suppressed and Zero() released")
	}
	if _, ok := Suppressed.Value(); ok {
		t.Fatal("Suppressed has a value")
	}
	if Suppressed.OrZero() != 0 || p.Cell(12).OrZero() != 12 {
		t.Fatal("OrZero")
	}
	b, _ := json.Marshal(struct {
		A, B Cell
	}{Zero(), Suppressed})
	if string(b) != `{"A":0,"B":null}` {
		t.Fatalf("struct JSON = %s", b)
	}
}

func TestRound(t *testing.T) {
	t.Parallel()
	cases := []struct {
		floor, rounding, n, want int64
	}{
		{10, 0, 13, 13},
		{10, 1, 13, 13},
		{10, 5, 0, 0},
		{10, 5, 10, 10},
		{10, 5, 12, 10},
		{10, 5, 13, 15}, // halves and above go up
		{10, 5, 17, 15},
		{10, 10, 14, 10},
		{10, 10, 15, 20},
		{11, 10, 11, 20}, // nearest multiple (10) is under the floor: next multiple
		{11, 10, 14, 20},
		{11, 10, 15, 20},
		{11, 10, 25, 30},
		{13, 5, 13, 15},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprintf("floor%d_by%d_%d", tc.floor, tc.rounding, tc.n), func(t *testing.T) {
			t.Parallel()
			p := MustPolicy(tc.floor, 0, tc.rounding)
			if got := p.Round(tc.n); got != tc.want {
				t.Fatalf("Round(%d) = %d, want %d", tc.n, got, tc.want)
			}
		})
	}
}

func TestRoundMonotoneAndAboveFloor(t *testing.T) {
	t.Parallel()
	for _, floor := range []int64{1, 5, 7, 10, 11, 23} {
		for _, r := range []int64{0, 2, 3, 5, 10} {
			p := MustPolicy(floor, 0, r)
			prev := int64(0)
			for n := floor; n < 300; n++ {
				got := p.Round(n)
				if got < floor || got < prev || (r > 1 && got%r != 0) {
					t.Fatalf("floor %d rounding %d: Round(%d) = %d after %d", floor, r, n, got, prev)
				}
				prev = got
			}
		}
	}
}

// render shows a released vector as "a b * c | total" (* suppressed).
func render(v Vector) string {
	parts := make([]string, len(v.Cells))
	for i, c := range v.Cells {
		parts[i] = c.String()
	}
	return strings.ReplaceAll(strings.Join(parts, " ")+" | "+v.Total.String(), "suppressed", "*")
}

func TestVector(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name      string
		floor     int64
		rounding  int64
		counts    []Subjects
		withTotal bool
		want      string
	}{
		{name: "nothing small", floor: 10, counts: []Subjects{30, 12, 0}, withTotal: true, want: "30 12 0 | 42"},
		{name: "no total: primary only", floor: 10, counts: []Subjects{30, 4, 12}, want: "30 * 12 | *"},
		{name: "one small: next smallest too", floor: 10, counts: []Subjects{30, 4, 12}, withTotal: true, want: "30 * * | 46"},
		{name: "two small under floor together: one more", floor: 10, counts: []Subjects{30, 3, 2, 12}, withTotal: true, want: "30 * * * | 47"},
		{name: "two small reaching floor", floor: 10, counts: []Subjects{30, 6, 5, 12}, withTotal: true, want: "30 * * 12 | 53"},
		{name: "all ones", floor: 3, counts: []Subjects{1, 1, 1, 20}, withTotal: true, want: "* * * * | 23"},
		{name: "zeros are never complements", floor: 10, counts: []Subjects{0, 4, 0, 25}, withTotal: true, want: "0 * 0 * | 29"},
		{name: "small total withholds all", floor: 10, counts: []Subjects{4, 3, 0}, withTotal: true, want: "* * 0 | *"},
		{name: "no complement left: total withheld", floor: 10, counts: []Subjects{4, 0, 0}, withTotal: false, want: "* 0 0 | *"},
		{name: "rounding after suppression", floor: 10, rounding: 5, counts: []Subjects{33, 4, 12, 18}, withTotal: true, want: "35 * * 20 | 65"},
		{name: "empty", floor: 10, counts: nil, withTotal: true, want: " | 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := render(MustPolicy(tc.floor, 0, tc.rounding).Vector(tc.counts, tc.withTotal))
			if got != tc.want {
				t.Fatalf("Vector(%v) = %q, want %q", tc.counts, got, tc.want)
			}
		})
	}
}

func renderMatrix(m Matrix) string {
	var b strings.Builder
	for i, row := range m.Cells {
		for _, c := range row {
			b.WriteString(c.String() + " ")
		}
		b.WriteString("| " + m.RowTotals[i].String() + "\n")
	}
	for _, c := range m.ColTotals {
		b.WriteString(c.String() + " ")
	}
	b.WriteString("| " + m.Total.String())
	return strings.ReplaceAll(b.String(), "suppressed", "*")
}

func TestMatrix(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		counts [][]Subjects
		want   string
	}{
		{name: "nothing small", counts: [][]Subjects{{20, 30}, {40, 50}}, want: "20 30 | 50\n40 50 | 90\n60 80 | 140"},
		{name: "one small: cheapest rectangle",
			counts: [][]Subjects{{3, 30, 12}, {40, 50, 11}, {25, 90, 60}},
			want:   "* 30 * | 45\n* 50 * | 101\n25 90 60 | 175\n68 170 83 | 321"},
		{name: "small margin withholds all", counts: [][]Subjects{{3, 4}, {40, 50}},
			want: "* * | *\n* * | *\n* * | *"},
		{name: "rectangle skips zeros", counts: [][]Subjects{{3, 0, 20}, {0, 40, 0}, {20, 0, 30}},
			want: "* 0 * | 23\n0 40 0 | 40\n* 0 * | 50\n23 40 50 | 113"},
		{name: "zeros leave no rectangle", counts: [][]Subjects{{3, 0, 20}, {0, 40, 0}, {20, 0, 0}},
			want: "* * * | *\n* * * | *\n* * * | *\n* * * | *"},
		{name: "single row cannot be protected", counts: [][]Subjects{{30, 4, 40}},
			want: "* * * | *\n* * * | *"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := renderMatrix(MustPolicy(10, 0, 0).Matrix(tc.counts))
			if got != tc.want {
				t.Fatalf("Matrix =\n%s\nwant\n%s", got, tc.want)
			}
		})
	}
}

type statusErr int

func (e statusErr) Error() string {
	return fmt.Sprintf("status %d: SELECT * FROM omop.person WHERE email='a@b.c'", int(e))
}
func (e statusErr) HTTPStatus() int { return int(e) }

func TestErrorCategory(t *testing.T) {
	t.Parallel()
	timeout := &net.OpError{Op: "dial", Err: &timeoutErr{}}
	cases := []struct {
		err  error
		want string
	}{
		{nil, ""},
		{statusErr(400), CategoryInvalid},
		{statusErr(401), CategoryUnauthorized},
		{statusErr(403), CategoryRefused},
		{fmt.Errorf("call: %w", statusErr(404)), CategoryNotFound},
		{statusErr(409), CategoryConflict},
		{statusErr(413), CategoryTooLarge},
		{statusErr(418), CategoryNotEnabled},
		{statusErr(422), CategoryInvalid},
		{statusErr(429), CategoryBusy},
		{statusErr(451), CategoryRefused},
		{statusErr(499), CategoryInvalid},
		{statusErr(500), CategoryInternal},
		{statusErr(501), CategoryNotSupported},
		{statusErr(502), CategoryUnavailable},
		{statusErr(503), CategoryUnavailable},
		{statusErr(504), CategoryTimeout},
		{statusErr(599), CategoryUpstreamError},
		{context.DeadlineExceeded, CategoryTimeout},
		{fmt.Errorf("x: %w", context.Canceled), CategoryCanceled},
		{timeout, CategoryTimeout},
		{errors.New("patient 12345 jane@example.org SELECT 1"), CategoryInternal},
	}
	for _, tc := range cases {
		t.Run(fmt.Sprint(tc.err), func(t *testing.T) {
			t.Parallel()
			got := ErrorCategory(tc.err)
			if got != tc.want {
				t.Fatalf("ErrorCategory = %q, want %q", got, tc.want)
			}
			for _, leak := range []string{"SELECT", "@", "12345", "omop"} {
				if strings.Contains(got, leak) {
					t.Fatalf("category %q leaks %q", got, leak)
				}
			}
		})
	}
}

type timeoutErr struct{}

func (*timeoutErr) Error() string { return "i/o timeout" }
func (*timeoutErr) Timeout() bool { return true }

func TestSeal(t *testing.T) {
	t.Parallel()
	p := MustPolicy(10, 0, 0)
	type ok struct {
		Name   string             `json:"name"`
		N      Cell               `json:"n"`
		Loss   float64            `json:"loss"`
		Cells  []Cell             `json:"cells"`
		Extra  map[string]any     `json:"extra"`
		hidden int                //nolint:unused // unexported fields are not encoded
		Skip   int                `json:"-"`
		Ptr    *Cell              `json:"ptr"`
		M      map[string]float64 `json:"m"`
	}
	r, err := Seal(ok{Name: "x", N: p.Cell(3), Loss: 0.5, Cells: []Cell{p.Cell(12)}, Extra: map[string]any{"a": "b", "f": 1.5}})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"name":"x","n":null,"loss":0.5,"cells":[12],"extra":{"a":"b","f":1.5},"ptr":null,"m":null}`; string(r.Bytes()) != want {
		t.Fatalf("sealed %s, want %s", r.Bytes(), want)
	}
	if b, _ := json.Marshal(struct{ R Released }{r}); !strings.Contains(string(b), `"cells":[12]`) {
		t.Fatalf("Released does not marshal to its bytes: %s", b)
	}
	if b, _ := json.Marshal(Released{}); string(b) != "null" {
		t.Fatalf("zero Released = %s", b)
	}
	bad := []struct {
		name string
		v    any
		path string
	}{
		{"int field", struct{ Count int }{3}, "$.Count"},
		{"int in slice", struct{ Results []struct{ Count int64 } }{[]struct{ Count int64 }{{5}}}, "$.Results[0].Count"},
		{"int behind interface", map[string]any{"n": 4}, "$[n]"},
		{"raw bytes", json.RawMessage(`{"n":3}`), "raw bytes"},
		{"uint", []uint32{1}, "$[0]"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			if _, err := Seal(tc.v); err == nil || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("Seal = %v, want an error naming %s", err, tc.path)
			}
		})
	}
}
