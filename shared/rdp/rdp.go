// Package rdp is a Rényi differential privacy (RDP) accountant for the
// sampled Gaussian mechanism: each step adds Gaussian noise with standard
// deviation σ × sensitivity to a sum over a Poisson sample of the records,
// each record taken with probability q.
//
// The RDP of one step at order α is computed in log space (Mironov, Talwar
// & Zhang 2019, "Rényi Differential Privacy of the Sampled Gaussian
// Mechanism", section 3.3): for integer α by the binomial expansion of
// A_α = E[(p₁/p₀)^α], for fractional α by the paper's two-sided series with
// complementary error functions. q = 1 is the plain Gaussian mechanism,
// α/(2σ²) exactly. RDP composes by addition at each order, across steps and
// across jobs (Mironov 2017, proposition 1), so a Curve is the complete
// state of an accountant.
//
// A Curve converts to (ε, δ)-DP at any δ with Epsilon, the standard
// conversion ε = min_α RDP(α) + log(1/δ)/(α−1) (Mironov 2017, proposition
// 3), which is what TensorFlow Privacy's RDP accountant reported when its
// published figures were made. EpsilonTight gives the tighter conversion of
// Balle et al. 2020 ("Hypothesis testing interpretations and Rényi
// differential privacy", theorem 21; also Canonne, Kamath & Steinke 2020).
//
// Everything here is a pure function of its arguments and safe for
// concurrent use.
package rdp

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// ErrInvalid wraps every rejected parameter.
var ErrInvalid = errors.New("invalid privacy parameter")

// DefaultOrders returns the orders the accountant evaluates by default: a
// fine grid of fractional orders 1.1…10.9 (where small budgets find their
// best order), every integer 11…64, and a few large orders for very noisy,
// long-running mechanisms.
func DefaultOrders() []float64 {
	out := make([]float64, 0, 99+54+8)
	for x := 1; x < 100; x++ {
		out = append(out, 1+float64(x)/10)
	}
	for a := 11; a <= 64; a++ {
		out = append(out, float64(a))
	}
	return append(out, 72, 80, 96, 128, 192, 256, 384, 512)
}

// Curve is an RDP guarantee: RDP[i] is the Rényi divergence bound at
// Orders[i]. A value may be +Inf (no guarantee at that order). The zero
// Curve is "nothing spent" and composes with anything.
type Curve struct {
	Orders []float64 `json:"orders"`
	RDP    []float64 `json:"rdp"`
}

// Validate reports a Curve whose slices differ in length, whose orders are
// not > 1 and strictly increasing, or whose values are negative or NaN.
func (c Curve) Validate() error {
	if len(c.Orders) != len(c.RDP) {
		return fmt.Errorf("%w: %d orders but %d values", ErrInvalid, len(c.Orders), len(c.RDP))
	}
	for i, a := range c.Orders {
		if !(a > 1) || math.IsInf(a, 0) || (i > 0 && a <= c.Orders[i-1]) {
			return fmt.Errorf("%w: orders must be finite, > 1 and increasing (order %d is %v)", ErrInvalid, i, a)
		}
		if v := c.RDP[i]; math.IsNaN(v) || v < 0 {
			return fmt.Errorf("%w: rdp at order %v is %v", ErrInvalid, a, v)
		}
	}
	return nil
}

// Empty reports whether c holds no order (nothing spent).
func (c Curve) Empty() bool { return len(c.Orders) == 0 }

// Compose returns the RDP of running c's mechanism and then d's: the sum at
// every order both evaluate. An empty curve is the identity. Orders only
// one of them has are dropped, which keeps the result a valid (if possibly
// looser) guarantee.
func (c Curve) Compose(d Curve) Curve {
	switch {
	case c.Empty():
		return d.clone()
	case d.Empty():
		return c.clone()
	}
	var out Curve
	i, j := 0, 0
	for i < len(c.Orders) && j < len(d.Orders) {
		switch a, b := c.Orders[i], d.Orders[j]; {
		case a < b:
			i++
		case a > b:
			j++
		default:
			out.Orders = append(out.Orders, a)
			out.RDP = append(out.RDP, c.RDP[i]+d.RDP[j])
			i++
			j++
		}
	}
	return out
}

func (c Curve) clone() Curve {
	return Curve{Orders: slices.Clone(c.Orders), RDP: slices.Clone(c.RDP)}
}

// Epsilon converts c to (ε, δ)-DP with the standard conversion
// ε = min over α of RDP(α) + log(1/δ)/(α−1), returning ε and the order that
// attains it. An empty curve is ε = 0; a curve with no finite value is
// ε = +Inf. δ must lie in (0, 1).
func (c Curve) Epsilon(delta float64) (eps, order float64, err error) {
	return c.convert(delta, func(a, r float64) float64 {
		return r - math.Log(delta)/(a-1)
	})
}

// EpsilonTight converts c to (ε, δ)-DP with the conversion of Balle et al.
// 2020, theorem 21: ε = min over α of RDP(α) + log((α−1)/α) −
// (log δ + log α)/(α−1), never larger than Epsilon's.
func (c Curve) EpsilonTight(delta float64) (eps, order float64, err error) {
	return c.convert(delta, func(a, r float64) float64 {
		return r + math.Log1p(-1/a) - (math.Log(delta)+math.Log(a))/(a-1)
	})
}

func (c Curve) convert(delta float64, at func(a, r float64) float64) (float64, float64, error) {
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("%w: delta %v must lie in (0, 1)", ErrInvalid, delta)
	}
	if err := c.Validate(); err != nil {
		return 0, 0, err
	}
	if c.Empty() {
		return 0, 0, nil
	}
	best, order := math.Inf(1), math.NaN()
	for i, a := range c.Orders {
		if e := at(a, c.RDP[i]); e < best {
			best, order = e, a
		}
	}
	return max(best, 0), order, nil
}

// SampledGaussian returns the RDP at orders (DefaultOrders when nil) of
// steps runs of the sampled Gaussian mechanism with sampling rate q in
// [0, 1] and noise multiplier sigma ≥ 0 (σ = 0 means no noise: +Inf at every
// order). steps = 0 spends nothing.
func SampledGaussian(q, sigma float64, steps int64, orders []float64) (Curve, error) {
	var errs []error
	if !(q >= 0 && q <= 1) {
		errs = append(errs, fmt.Errorf("%w: sample rate %v must lie in [0, 1]", ErrInvalid, q))
	}
	if !(sigma >= 0) || math.IsInf(sigma, 0) {
		errs = append(errs, fmt.Errorf("%w: noise multiplier %v must be a finite number >= 0", ErrInvalid, sigma))
	}
	if steps < 0 {
		errs = append(errs, fmt.Errorf("%w: steps %d must be >= 0", ErrInvalid, steps))
	}
	if orders == nil {
		orders = DefaultOrders()
	}
	c := Curve{Orders: slices.Clone(orders), RDP: make([]float64, len(orders))}
	if err := c.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return Curve{}, err
	}
	for i, a := range c.Orders {
		if steps > 0 { // 0 × Inf would be NaN: no step spends nothing
			c.RDP[i] = Step(q, sigma, a) * float64(steps)
		}
	}
	return c, nil
}

// Step is the RDP at order alpha (> 1) of one step of the sampled Gaussian
// mechanism with sampling rate q and noise multiplier sigma. It is +Inf where
// there is no finite guarantee (σ = 0 with q > 0, or a series that does not
// settle), which a conversion to (ε, δ) then skips.
func Step(q, sigma, alpha float64) float64 {
	switch {
	case q == 0:
		return 0
	case sigma == 0:
		return math.Inf(1)
	case q == 1:
		return alpha / (2 * sigma * sigma)
	}
	var logA float64
	if alpha == math.Trunc(alpha) && alpha <= 1<<20 {
		logA = logAInt(q, sigma, int(alpha))
	} else {
		logA = logAFrac(q, sigma, alpha)
	}
	if math.IsNaN(logA) {
		return math.Inf(1)
	}
	return max(logA, 0) / (alpha - 1)
}

// logAInt is log A_α for integer α by the binomial expansion
// A_α = Σᵢ C(α,i) qⁱ (1−q)^(α−i) exp((i²−i)/(2σ²)).
func logAInt(q, sigma float64, alpha int) float64 {
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	terms := make([]float64, 0, alpha+1)
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		terms = append(terms, logBinomInt(alpha, i)+fi*lq+float64(alpha-i)*l1q+(fi*fi-fi)/s2)
	}
	return logSumExp(terms)
}

// logAFrac is log A_α for fractional α by the series of Mironov, Talwar &
// Zhang 2019 (section 3.3): A_α = A₀ + A₁ with, for z₀ = σ² log(1/q − 1) + ½,
//
//	A₀ = Σᵢ C(α,i) qⁱ (1−q)^(α−i) exp((i²−i)/(2σ²)) · ½ erfc((i−z₀)/(√2σ))
//	A₁ = Σᵢ C(α,i) q^(α−i) (1−q)ⁱ exp(((α−i)²−(α−i))/(2σ²)) · ½ erfc((z₀−(α−i))/(√2σ))
//
// summed over i = 0, 1, … until the terms are negligible. C(α,i) changes
// sign for i > α, so positive and negative terms are summed apart. It
// returns NaN when the series does not settle or cancels to nothing.
//
// Past i = α the terms shrink only polynomially when q is large (like
// i^−(α+2)), but they alternate in sign, so the error of stopping is about
// one term: stopping below exp(seriesCutoff) leaves an absolute error near
// 1e-16 in A_α ≥ 1, negligible beside log(1/δ)/(α−1) in any ε. A series that
// needs more than maxSeriesTerms terms (orders just above 1 with q near ½)
// gives no guarantee at that order rather than a slow answer.
func logAFrac(q, sigma, alpha float64) float64 {
	lq, l1q := math.Log(q), math.Log1p(-q)
	s2 := 2 * sigma * sigma
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	rs := math.Sqrt2 * sigma
	lgA1, _ := math.Lgamma(alpha + 1)
	var pos, neg []float64
	for i := 0; i < maxSeriesTerms; i++ {
		fi := float64(i)
		j := alpha - fi
		lgI, _ := math.Lgamma(fi + 1)
		lgJ, signJ := math.Lgamma(j + 1)
		logCoef := lgA1 - lgI - lgJ // Γ(α+1) > 0 for α > 1
		t0 := logCoef + fi*lq + j*l1q + (fi*fi-fi)/s2 + math.Log(0.5) + logErfc((fi-z0)/rs)
		t1 := logCoef + j*lq + fi*l1q + (j*j-j)/s2 + math.Log(0.5) + logErfc((z0-j)/rs)
		if signJ > 0 {
			pos = append(pos, t0, t1)
		} else {
			neg = append(neg, t0, t1)
		}
		if fi > alpha+1 && max(t0, t1) < seriesCutoff {
			p, n := logSumExp(pos), logSumExp(neg)
			if n >= p {
				return math.NaN()
			}
			return p + math.Log1p(-math.Exp(n-p))
		}
	}
	return math.NaN()
}

const (
	seriesCutoff   = -36.0
	maxSeriesTerms = 200_000
)

// logBinomInt is log C(n, k).
func logBinomInt(n, k int) float64 {
	a, _ := math.Lgamma(float64(n + 1))
	b, _ := math.Lgamma(float64(k + 1))
	c, _ := math.Lgamma(float64(n - k + 1))
	return a - b - c
}

// logErfc is log erfc(x), finite for every finite x: for large x, where
// erfc underflows, by its asymptotic series
// erfc(x) ≈ exp(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶) + 105/(16x⁸)).
func logErfc(x float64) float64 {
	if x < 20 {
		return math.Log(math.Erfc(x))
	}
	u := 1 / (x * x)
	series := 1 + u*(-0.5+u*(0.75+u*(-1.875+u*6.5625)))
	return -x*x - math.Log(x) - 0.5*math.Log(math.Pi) + math.Log(series)
}

// logSumExp is log Σ exp(v), −Inf for no terms.
func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = max(m, x)
	}
	if math.IsInf(m, 0) {
		return m
	}
	s := 0.0
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}
