package synth

import (
	"math"
	"math/rand/v2"
)

// rng is a person's random stream. Only the PCG generator's raw output is
// used; the transforms below are this package's own, so a person's data
// depends on the seed and the person id alone.
type rng struct{ pcg rand.PCG }

// splitmix64 is the SplitMix64 finaliser, used to turn (seed, person id)
// into well-mixed PCG state.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// reset seeds the stream for one person.
func (r *rng) reset(seed uint64, personID int64) {
	a := splitmix64(seed ^ splitmix64(uint64(personID)))
	b := splitmix64(a ^ 0x6a09e667f3bcc909)
	r.pcg.Seed(a, b)
}

// float returns a uniform value in [0, 1).
func (r *rng) float() float64 { return float64(r.pcg.Uint64()>>11) * (1.0 / (1 << 53)) }

// intn returns a uniform value in [0, n) for 0 < n < 2^31.
func (r *rng) intn(n int) int { return int(((r.pcg.Uint64() >> 32) * uint64(n)) >> 32) }

// between returns a uniform integer in [lo, hi].
func (r *rng) between(lo, hi int) int {
	if hi <= lo {
		return lo
	}
	return lo + r.intn(hi-lo+1)
}

// chance reports true with probability p.
func (r *rng) chance(p float64) bool { return r.float() < p }

// normal returns a standard normal deviate (Box-Muller).
func (r *rng) normal() float64 {
	u1 := 1 - r.float() // (0, 1]
	u2 := r.float()
	return math.Sqrt(-2*math.Log(u1)) * math.Cos(2*math.Pi*u2)
}

// pick returns an index drawn with the given (not necessarily normalised)
// weights.
func (r *rng) pick(weights []float64) int {
	total := 0.0
	for _, w := range weights {
		total += w
	}
	x := r.float() * total
	for i, w := range weights {
		if x < w {
			return i
		}
		x -= w
	}
	return len(weights) - 1
}

func sigmoid(x float64) float64 { return 1 / (1 + math.Exp(-x)) }

func clamp(x, lo, hi float64) float64 { return math.Max(lo, math.Min(hi, x)) }
