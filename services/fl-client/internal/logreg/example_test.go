package logreg

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/safetensors"
)

// exampleParams is the params file of examples/logreg.
var exampleParams = filepath.Join("..", "..", "..", "..", "examples", "logreg", "params.json")

// The example params are valid, name the example cohort query's columns,
// and train on a dataframe of that shape.
func TestExampleParams(t *testing.T) {
	t.Parallel()
	b, err := os.ReadFile(exampleParams)
	if err != nil {
		t.Fatal(err)
	}
	var raw map[string]any
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	p, err := ParseParams(raw)
	if err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, f := range p.Features {
		cols = append(cols, f.Column)
	}
	if !slices.Equal(cols, []string{"age", "male", "t2d", "bmi", "sbp"}) || p.Label != "outcome" {
		t.Errorf("example features %v, label %q; want the cohort query's columns", cols, p.Label)
	}

	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, raw)
	writeLogReg(t, ws, safetensors.F32, make([]float64, len(p.Features)), 0)
	writeDataframe(t, ws, population(12, 1000))
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	m := readMetrics(t, ws)
	if m[MetricTrainLoss] >= m[MetricLoss] {
		t.Errorf("train_loss %v not below loss %v", m[MetricTrainLoss], m[MetricLoss])
	}
}
