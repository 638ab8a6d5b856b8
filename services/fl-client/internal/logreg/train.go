package logreg

import (
	"context"
	"math"
	"runtime"
	"sync"
	"sync/atomic"
)

// chunkRows is the block of rows one worker takes at a time. Partial sums are
// kept per block and added in block order, so results do not depend on the
// number of workers.
const chunkRows = 1 << 15

// model is a logistic regression over standardised features:
// p = σ(b + w·x).
type model struct {
	w []float64
	b float64
}

// pass asks passOver what to compute besides the loss.
type pass struct {
	grad      bool      // the gradient of the mean log loss
	confusion bool      // the confusion matrix at p ≥ 0.5
	scores    []float64 // when non-nil, receives every row's log-odds
}

// sums are the totals of one pass over (part of) the data.
type sums struct {
	loss           float64   // Σ log loss
	grad           []float64 // Σ (p - y)·x, then Σ (p - y) for the bias
	tp, fp, tn, fn int64
}

func (s *sums) add(o *sums) {
	s.loss += o.loss
	for i := range o.grad {
		s.grad[i] += o.grad[i]
	}
	s.tp += o.tp
	s.fp += o.fp
	s.tn += o.tn
	s.fn += o.fn
}

// passOver computes sums over every row of d under m, splitting the rows
// across up to workers goroutines (all of which have returned when it
// returns). It stops early with ctx's error when ctx ends.
func passOver(ctx context.Context, d *dataset, m model, what pass, workers int) (sums, error) {
	n := d.rows()
	chunks := (n + chunkRows - 1) / chunkRows
	parts := make([]sums, chunks)
	for i := range parts {
		if what.grad {
			parts[i].grad = make([]float64, d.f+1)
		}
	}
	workers = max(1, min(workers, chunks))
	if workers == 1 {
		for c := range chunks {
			if err := ctx.Err(); err != nil {
				return sums{}, err
			}
			chunkSums(d, m, what, c, &parts[c])
		}
	} else {
		var next atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for {
					c := int(next.Add(1) - 1)
					if c >= chunks || ctx.Err() != nil {
						return
					}
					chunkSums(d, m, what, c, &parts[c])
				}
			})
		}
		wg.Wait()
		if err := ctx.Err(); err != nil {
			return sums{}, err
		}
	}
	total := sums{}
	if what.grad {
		total.grad = make([]float64, d.f+1)
	}
	for i := range parts {
		total.add(&parts[i])
	}
	return total, nil
}

// chunkSums fills out with the sums over chunk c.
func chunkSums(d *dataset, m model, what pass, c int, out *sums) {
	f := d.f
	lo, hi := c*chunkRows, min((c+1)*chunkRows, d.rows())
	w := m.w
	for i := lo; i < hi; i++ {
		x := d.x[i*f : (i+1)*f]
		z := m.b
		for j, v := range x {
			z += w[j] * float64(v)
		}
		y := d.y[i]
		out.loss += logLoss(z, y)
		if what.scores != nil {
			what.scores[i] = z
		}
		if what.grad {
			r := sigmoid(z) - float64(y)
			for j, v := range x {
				out.grad[j] += r * float64(v)
			}
			out.grad[f] += r
		}
		if what.confusion {
			switch pos := z >= 0; {
			case pos && y == 1:
				out.tp++
			case pos:
				out.fp++
			case y == 1:
				out.fn++
			default:
				out.tn++
			}
		}
	}
}

// logLoss is -log p(y | z) for log-odds z, computed without overflow or
// log(0): softplus(z) - y·z.
func logLoss(z float64, y uint8) float64 {
	if y == 1 {
		return softplus(-z)
	}
	return softplus(z)
}

// softplus is log(1 + e^t), stable for any t.
func softplus(t float64) float64 {
	if t > 0 {
		return t + math.Log1p(math.Exp(-t))
	}
	return math.Log1p(math.Exp(t))
}

// sigmoid is 1 / (1 + e^-z), stable for any z.
func sigmoid(z float64) float64 {
	if z >= 0 {
		return 1 / (1 + math.Exp(-z))
	}
	e := math.Exp(z)
	return e / (1 + e)
}

// train runs epochs steps of full-batch gradient descent on the mean log
// loss plus l2/2·‖w‖² (the bias is not penalised) and returns the trained
// model; m is not changed.
func train(ctx context.Context, d *dataset, m model, p Params, workers int) (model, error) {
	out := model{w: append([]float64(nil), m.w...), b: m.b}
	n := float64(d.rows())
	for range p.Epochs {
		s, err := passOver(ctx, d, out, pass{grad: true}, workers)
		if err != nil {
			return model{}, err
		}
		for j := range out.w {
			out.w[j] -= p.LearningRate * (s.grad[j]/n + p.L2*out.w[j])
		}
		out.b -= p.LearningRate * s.grad[d.f] / n
	}
	return out, nil
}

// defaultWorkers is the number of goroutines a pass uses.
func defaultWorkers() int { return runtime.GOMAXPROCS(0) }
