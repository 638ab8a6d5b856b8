package rdp

import (
	"errors"
	"math"
	"testing"
)

// tfOrders are the orders TensorFlow Privacy's MNIST tutorial evaluated:
// 1.1, 1.2, …, 10.9 and 12, 13, …, 63.
func tfOrders() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		o = append(o, float64(a))
	}
	return o
}

// TestPublishedMNIST checks the accountant against the figures published in
// TensorFlow Privacy's tutorials README (github.com/tensorflow/privacy,
// tutorials/README.md, "Select Parameters" and "Expected Output"): DP-SGD on
// MNIST's 60000 examples with batches of 256, ε reported at δ = 1e-5. The
// tutorial (tutorials/mnist_dpsgd_tutorial.py) computes q = 256/60000 and
// steps = epochs × (60000 // 256) over tfOrders, and its accountant
// (privacy/analysis/rdp_accountant.py, _compute_eps) used the standard
// conversion, as Epsilon does.
func TestPublishedMNIST(t *testing.T) {
	t.Parallel()
	cases := []struct {
		sigma     float64
		epochs    int64
		published float64
	}{
		{1.12, 60, 2.92}, // the default setting, first row of the table
		{0.6, 30, 9.74},
		{1.2, 10, 1.20},
		{1.12, 1, 1.00}, // expected output after 1 and 2 epochs
		{1.12, 2, 1.04},
	}
	for _, c := range cases {
		curve, err := SampledGaussian(256.0/60000, c.sigma, c.epochs*(60000/256), tfOrders())
		if err != nil {
			t.Fatal(err)
		}
		eps, order, err := curve.Epsilon(1e-5)
		if err != nil {
			t.Fatal(err)
		}
		if rel := math.Abs(eps-c.published) / c.published; rel > 0.01 {
			t.Errorf("σ=%v, %d epochs: ε = %.4f (order %v), published %.2f (%.2f%% off)", c.sigma, c.epochs, eps, order, c.published, 100*rel)
		}
	}
}

// TestGaussianClosedForm: with q = 1 the mechanism is the Gaussian
// mechanism, whose RDP is exactly α/(2σ²) per step (Mironov 2017,
// proposition 7), and whose standard conversion over a continuum of orders is
// minimised at α = 1 + √(L/c) with value c + 2√(cL), where c = T/(2σ²) and
// L = log(1/δ).
func TestGaussianClosedForm(t *testing.T) {
	t.Parallel()
	for _, sigma := range []float64{0.5, 1, 4} {
		for _, alpha := range []float64{1.5, 2, 7, 32.5, 512} {
			// The integer path (binomial expansion) must reach the same value
			// as q → 1; q = 1 itself takes the closed form.
			want := alpha / (2 * sigma * sigma)
			if got := Step(1, sigma, alpha); got != want {
				t.Errorf("Step(1, %v, %v) = %v, want %v", sigma, alpha, got, want)
			}
			if alpha == math.Trunc(alpha) && alpha < 64 {
				got := logAInt(1-1e-12, sigma, int(alpha)) / (alpha - 1)
				if math.Abs(got-want) > 1e-6*want {
					t.Errorf("binomial expansion at q→1, σ=%v, α=%v: %v, want %v", sigma, alpha, got, want)
				}
			}
		}
	}
	var fine []float64
	for a := 1.001; a < 200; a += 0.001 {
		fine = append(fine, a)
	}
	const sigma, steps, delta = 2.0, 10, 1e-5
	curve, err := SampledGaussian(1, sigma, steps, fine)
	if err != nil {
		t.Fatal(err)
	}
	c, l := float64(steps)/(2*sigma*sigma), math.Log(1/delta)
	want := c + 2*math.Sqrt(c*l)
	got, order, err := curve.Epsilon(delta)
	if err != nil {
		t.Fatal(err)
	}
	if got < want-1e-9 || got > want*(1+1e-5) {
		t.Errorf("Gaussian ε = %v at order %v, closed form %v at order %v", got, order, want, 1+math.Sqrt(l/c))
	}
}

// TestFractionalSeriesMatchesBinomial: the fractional-order series holds
// for every real α > 1, so at integer orders it must agree with the
// binomial expansion.
func TestFractionalSeriesMatchesBinomial(t *testing.T) {
	t.Parallel()
	for _, q := range []float64{1e-4, 0.01, 0.3, 0.9} {
		for _, sigma := range []float64{0.7, 1.1, 5} {
			for _, alpha := range []int{2, 3, 8, 20} {
				a, b := logAInt(q, sigma, alpha), logAFrac(q, sigma, float64(alpha))
				if math.Abs(a-b) > 1e-9*math.Max(1, math.Abs(a)) {
					t.Errorf("q=%v σ=%v α=%d: binomial %v, series %v", q, sigma, alpha, a, b)
				}
			}
		}
	}
}

func epsilon(t *testing.T, q, sigma float64, steps int64, delta float64) float64 {
	t.Helper()
	c, err := SampledGaussian(q, sigma, steps, nil)
	if err != nil {
		t.Fatal(err)
	}
	eps, _, err := c.Epsilon(delta)
	if err != nil {
		t.Fatal(err)
	}
	return eps
}

func TestMonotone(t *testing.T) {
	t.Parallel()
	orders := DefaultOrders()
	t.Run("rdp grows with the sample rate", func(t *testing.T) {
		for _, alpha := range orders {
			prev := 0.0
			for _, q := range []float64{0, 1e-4, 1e-3, 0.01, 0.1, 0.5, 0.9, 1} {
				r := Step(q, 1.1, alpha)
				if r < prev-1e-12 || math.IsNaN(r) {
					t.Fatalf("α=%v: RDP %v at q=%v below %v at a smaller q", alpha, r, q, prev)
				}
				prev = r
			}
		}
	})
	t.Run("rdp falls as the noise grows", func(t *testing.T) {
		for _, alpha := range orders {
			prev := math.Inf(1)
			for _, sigma := range []float64{0.3, 0.5, 0.8, 1.1, 2, 5, 20} {
				r := Step(0.01, sigma, alpha)
				if r > prev+1e-12 || math.IsNaN(r) {
					t.Fatalf("α=%v: RDP %v at σ=%v above %v at a smaller σ", alpha, r, sigma, prev)
				}
				prev = r
			}
		}
	})
	t.Run("epsilon grows with steps, sample rate and smaller delta", func(t *testing.T) {
		prev := 0.0
		for _, steps := range []int64{1, 10, 100, 1000, 10000} {
			e := epsilon(t, 0.01, 1.1, steps, 1e-5)
			if e <= prev {
				t.Errorf("ε %v after %d steps is not above %v", e, steps, prev)
			}
			prev = e
		}
		prev = 0
		for _, q := range []float64{0.001, 0.01, 0.1, 1} {
			e := epsilon(t, q, 1.1, 100, 1e-5)
			if e <= prev {
				t.Errorf("ε %v at q=%v is not above %v", e, q, prev)
			}
			prev = e
		}
		prev = math.Inf(1)
		for _, delta := range []float64{1e-10, 1e-7, 1e-5, 1e-3, 0.1} {
			e := epsilon(t, 0.01, 1.1, 1000, delta)
			if e >= prev {
				t.Errorf("ε %v at δ=%v is not below %v", e, delta, prev)
			}
			prev = e
		}
	})
}

func TestComposition(t *testing.T) {
	t.Parallel()
	a, _ := SampledGaussian(0.02, 1.3, 300, nil)
	b, _ := SampledGaussian(0.02, 1.3, 700, nil)
	whole, _ := SampledGaussian(0.02, 1.3, 1000, nil)
	sum := a.Compose(b)
	for i := range whole.Orders {
		if math.Abs(sum.RDP[i]-whole.RDP[i]) > 1e-9*whole.RDP[i] {
			t.Fatalf("order %v: 300+700 steps %v, 1000 steps %v", whole.Orders[i], sum.RDP[i], whole.RDP[i])
		}
	}
	if got := (Curve{}).Compose(a); len(got.Orders) != len(a.Orders) {
		t.Errorf("composing with nothing changed the curve")
	}
	// Curves on different orders compose on the orders they share.
	c, _ := SampledGaussian(1, 2, 1, []float64{2, 3, 4})
	d, _ := SampledGaussian(1, 2, 1, []float64{3, 4, 5})
	cd := c.Compose(d)
	if len(cd.Orders) != 2 || cd.Orders[0] != 3 || cd.RDP[0] != 2*Step(1, 2, 3) {
		t.Errorf("composition over shared orders: %+v", cd)
	}
	// Two jobs compose to more ε than either, and less than the sum of their ε.
	ea, _, _ := a.Epsilon(1e-5)
	eb, _, _ := b.Epsilon(1e-5)
	es, _, _ := sum.Epsilon(1e-5)
	if es <= max(ea, eb) || es >= ea+eb {
		t.Errorf("ε of the composition %v, of the parts %v and %v", es, ea, eb)
	}
}

func TestTightConversion(t *testing.T) {
	t.Parallel()
	for _, steps := range []int64{1, 100, 10000} {
		c, _ := SampledGaussian(0.01, 1.1, steps, nil)
		std, _, _ := c.Epsilon(1e-5)
		tight, _, err := c.EpsilonTight(1e-5)
		if err != nil || tight > std || tight <= 0 {
			t.Errorf("%d steps: tight ε %v, standard %v (%v)", steps, tight, std, err)
		}
	}
}

func TestEdgeCases(t *testing.T) {
	t.Parallel()
	c, err := SampledGaussian(0.5, 0, 10, nil)
	if err != nil {
		t.Fatal(err)
	}
	if e, _, _ := c.Epsilon(1e-5); !math.IsInf(e, 1) {
		t.Errorf("no noise gives ε = %v, want +Inf", e)
	}
	// q = 0: no record is ever used; only the conversion's own term remains,
	// log(1/δ)/(α−1) at the largest order.
	orders := DefaultOrders()
	if e, want := epsilon(t, 0, 1, 10, 1e-5), math.Log(1e5)/(orders[len(orders)-1]-1); math.Abs(e-want) > 1e-12 {
		t.Errorf("q = 0 gives ε = %v, want %v", e, want)
	}
	c, _ = SampledGaussian(0.5, 1, 0, nil)
	if e, _, _ := c.Epsilon(1e-5); e > 0.03 {
		t.Errorf("no step gives ε = %v", e)
	}
	// Extreme but legal parameters stay finite and positive.
	for _, p := range []struct{ q, sigma float64 }{{1e-9, 0.5}, {1e-6, 50}, {0.999999, 0.3}, {0.5, 1000}} {
		for _, a := range DefaultOrders() {
			if r := Step(p.q, p.sigma, a); math.IsNaN(r) || r < 0 {
				t.Fatalf("Step(%v, %v, %v) = %v", p.q, p.sigma, a, r)
			}
		}
	}
	for _, bad := range []struct {
		q, sigma float64
		steps    int64
	}{{-0.1, 1, 1}, {1.1, 1, 1}, {math.NaN(), 1, 1}, {0.1, -1, 1}, {0.1, math.Inf(1), 1}, {0.1, 1, -1}} {
		if _, err := SampledGaussian(bad.q, bad.sigma, bad.steps, nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("SampledGaussian(%v, %v, %d): %v, want ErrInvalid", bad.q, bad.sigma, bad.steps, err)
		}
	}
	for _, d := range []float64{0, 1, -1, math.NaN()} {
		if _, _, err := c.Epsilon(d); !errors.Is(err, ErrInvalid) {
			t.Errorf("Epsilon(%v): %v, want ErrInvalid", d, err)
		}
	}
	if _, err := SampledGaussian(0.1, 1, 1, []float64{2, 1.5}); !errors.Is(err, ErrInvalid) {
		t.Errorf("decreasing orders accepted: %v", err)
	}
}
