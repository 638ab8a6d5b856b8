package logreg

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/safetensors"
)

// BenchmarkTrain1M measures the job on a million rows of five features and
// one epoch: "job" is the whole Run (reading the CSV, evaluating, one
// training step, writing the model), "epoch" one gradient pass over the
// rows in memory, with its speed-up over one goroutine measured in the same
// run. Both report rows/s; "job" also reports the dataset's bytes per row.
func BenchmarkTrain1M(b *testing.B) {
	const rows = 1_000_000
	b.Run("job", func(b *testing.B) {
		ws := newWorkspace(b)
		writeTask(b, ws, flproto.KindTrain, testParams(map[string]any{"epochs": 1.0}))
		writeLogReg(b, ws, safetensors.F32, make([]float64, 5), 0)
		writeDataframe(b, ws, population(9, rows))
		b.ResetTimer()
		for b.Loop() {
			if err := Run(b.Context(), ws); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportMetric(float64(rows)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
		b.ReportMetric(float64(5*4+1), "dataset_bytes/row")
	})
	b.Run("epoch", func(b *testing.B) {
		d := randomDataset(10, rows, 5)
		m := model{w: make([]float64, 5)}
		p := Params{Epochs: 1, LearningRate: 0.5}
		// Baseline: the same epoch on one goroutine.
		start := time.Now()
		const baseRuns = 3
		for range baseRuns {
			if _, err := train(b.Context(), d, m, p, 1); err != nil {
				b.Fatal(err)
			}
		}
		base := time.Since(start) / baseRuns
		workers := runtime.GOMAXPROCS(0)
		b.ResetTimer()
		for b.Loop() {
			if _, err := train(b.Context(), d, m, p, workers); err != nil {
				b.Fatal(err)
			}
		}
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(rows)/per.Seconds(), "rows/s")
		b.ReportMetric(float64(base)/float64(per), fmt.Sprintf("x_vs_1_of_%d_workers", workers))
	})
}
