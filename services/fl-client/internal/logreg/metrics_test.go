package logreg

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"testing"
)

func TestAUC(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		scores []float64
		labels []uint8
		want   float64
		ok     bool
	}{
		// Positives 0.35, 0.8 against negatives 0.1, 0.4: 3 of 4 pairs
		// ordered.
		{"no ties", []float64{0.1, 0.4, 0.35, 0.8}, []uint8{0, 0, 1, 1}, 0.75, true},
		{"perfect", []float64{-2, -1, 1, 2}, []uint8{0, 0, 1, 1}, 1, true},
		{"reversed", []float64{-2, -1, 1, 2}, []uint8{1, 1, 0, 0}, 0, true},
		{"all equal", []float64{3, 3, 3, 3, 3}, []uint8{0, 1, 1, 0, 1}, 0.5, true},
		// Positives 1, 2, 3 against negatives 1, 2: pairs (1,1) ½, (1,2) 0,
		// (2,1) 1, (2,2) ½, (3,1) 1, (3,2) 1 → 4 of 6.
		{"ties", []float64{1, 1, 2, 2, 3}, []uint8{0, 1, 0, 1, 1}, 4.0 / 6, true},
		// Positives 5, 5 against negatives 5, 1, 1: (5,5) ½ twice, (5,1) 1
		// four times → 5 of 6.
		{"tie at the top", []float64{5, 5, 5, 1, 1}, []uint8{1, 1, 0, 0, 0}, 5.0 / 6, true},
		{"one class", []float64{1, 2, 3}, []uint8{1, 1, 1}, 0, false},
		{"no rows", nil, nil, 0, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			got, ok := auc(c.scores, c.labels)
			if ok != c.ok || math.Abs(got-c.want) > 1e-12 {
				t.Errorf("auc = %v, %v; want %v, %v", got, ok, c.want, c.ok)
			}
		})
	}
}

// The rank-based AUC equals the pairwise definition on data full of ties.
func TestAUCMatchesPairwiseCount(t *testing.T) {
	t.Parallel()
	rng := rand.New(rand.NewPCG(11, 12))
	for range 20 {
		n := 2 + rng.IntN(200)
		scores := make([]float64, n)
		labels := make([]uint8, n)
		for i := range scores {
			scores[i] = float64(rng.IntN(8))
			labels[i] = uint8(rng.IntN(2))
		}
		labels[0], labels[1] = 0, 1
		var pairs, wins float64
		for i := range n {
			for j := range n {
				if labels[i] == 1 && labels[j] == 0 {
					pairs++
					switch {
					case scores[i] > scores[j]:
						wins++
					case scores[i] == scores[j]:
						wins += 0.5
					}
				}
			}
		}
		got, ok := auc(scores, labels)
		if !ok || math.Abs(got-wins/pairs) > 1e-12 {
			t.Fatalf("auc = %v, pairwise %v", got, wins/pairs)
		}
	}
}

// randomDataset is n rows of f standard normal features with labels drawn
// from a logistic model.
func randomDataset(seed uint64, n, f int) *dataset {
	rng := rand.New(rand.NewPCG(seed, 1))
	d := &dataset{f: f, x: make([]float32, n*f), y: make([]uint8, n)}
	for i := range n {
		z := -1.0
		for j := range f {
			v := rng.NormFloat64()
			d.x[i*f+j] = float32(v)
			z += v * float64(j+1) / float64(f)
		}
		if rng.Float64() < sigmoid(z) {
			d.y[i] = 1
		}
	}
	return d
}

// The sums of a pass do not depend on how many goroutines share it, and
// match a direct computation.
func TestPassIsTheSameOnAnyNumberOfWorkers(t *testing.T) {
	t.Parallel()
	d := randomDataset(3, 3*chunkRows+123, 4)
	m := model{w: []float64{0.3, -0.2, 0.5, 0.1}, b: -0.7}
	what := pass{grad: true, confusion: true}
	one, err := passOver(t.Context(), d, m, what, 1)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{2, 3, 8} {
		many, err := passOver(t.Context(), d, m, what, workers)
		if err != nil {
			t.Fatal(err)
		}
		if many.loss != one.loss || many.tp != one.tp || many.fn != one.fn {
			t.Errorf("%d workers: loss %v tp %d fn %d; 1 worker: %v %d %d", workers, many.loss, many.tp, many.fn, one.loss, one.tp, one.fn)
		}
		for j := range one.grad {
			if many.grad[j] != one.grad[j] {
				t.Errorf("%d workers: grad[%d] %v, 1 worker %v", workers, j, many.grad[j], one.grad[j])
			}
		}
	}
	var loss, gradBias float64
	for i := range d.rows() {
		z := m.b
		for j := range d.f {
			z += m.w[j] * float64(d.x[i*d.f+j])
		}
		p := 1 / (1 + math.Exp(-z))
		if d.y[i] == 1 {
			loss -= math.Log(p)
		} else {
			loss -= math.Log(1 - p)
		}
		gradBias += p - float64(d.y[i])
	}
	if math.Abs(loss-one.loss) > 1e-9*loss || math.Abs(gradBias-one.grad[d.f]) > 1e-6 {
		t.Errorf("pass: loss %v, bias gradient %v; direct: %v, %v", one.loss, one.grad[d.f], loss, gradBias)
	}
	if one.tp+one.fp+one.tn+one.fn != int64(d.rows()) {
		t.Errorf("confusion matrix counts %d rows of %d", one.tp+one.fp+one.tn+one.fn, d.rows())
	}
}

// The log loss stays finite and exact far into the tails.
func TestLogLossIsStable(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		z    float64
		y    uint8
		want float64
	}{
		{0, 1, math.Ln2}, {0, 0, math.Ln2},
		{800, 0, 800}, {-800, 1, 800},
		{800, 1, 0}, {-800, 0, 0},
		{40, 1, math.Exp(-40)},
	} {
		if got := logLoss(c.z, c.y); math.Abs(got-c.want) > 1e-12*math.Max(1, c.want) {
			t.Errorf("logLoss(%v, %d) = %v, want %v", c.z, c.y, got, c.want)
		}
	}
	if s := sigmoid(-800); s != 0 || math.IsNaN(s) {
		t.Errorf("sigmoid(-800) = %v", s)
	}
	if s := sigmoid(800); s != 1 {
		t.Errorf("sigmoid(800) = %v", s)
	}
}

// A pass on a cancelled context returns its error.
func TestPassHonoursCancellation(t *testing.T) {
	t.Parallel()
	d := randomDataset(4, 4*chunkRows, 2)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for _, workers := range []int{1, 2} {
		if _, err := passOver(ctx, d, model{w: []float64{1, 1}}, pass{grad: true}, workers); !errors.Is(err, context.Canceled) {
			t.Errorf("%d workers: %v, want context.Canceled", workers, err)
		}
	}
}
