package logreg

import (
	"context"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/flproto"
	"github.com/flip-trust/node/shared/safetensors"
)

// site is one simulated trust: its data and sample count.
type site struct {
	name string
	data []patient
}

// roundResult is what the server sees of one site in one round.
type roundResult struct {
	metrics map[string]float64
	w       []float64
	b       float64
}

// runSite runs one task of kind at s from the global model (F32) in a fresh
// workspace.
func runSite(t *testing.T, s site, kind string, round int, w []float64, b float64) roundResult {
	t.Helper()
	ws := newWorkspace(t)
	writeTask(t, ws, kind, testParams(nil))
	writeLogReg(t, ws, safetensors.F32, w, b)
	writeDataframe(t, ws, s.data)
	if err := Run(t.Context(), ws); err != nil {
		t.Fatalf("round %d at %s: %v", round, s.name, err)
	}
	r := roundResult{metrics: readMetrics(t, ws)}
	if kind == flproto.KindTrain {
		r.w, r.b = readOutputModel(t, ws, safetensors.F32)
	}
	return r
}

// Three federated rounds by hand: each site trains from the global model,
// the server averages the updates weighted by sample count. The global
// model's loss, as the sites report it at the start of the next round, falls
// every round, and its AUC rises from 0.5 for the zero model.
func TestFederatedRoundsImproveTheGlobalModel(t *testing.T) {
	t.Parallel()
	sites := []site{{"Trust_1", population(1, 6000)}, {"Trust_2", population(2, 4000)}}
	w, b := make([]float64, len(testFeatures)), 0.0

	var losses, aucs []float64
	for round := 1; round <= 4; round++ {
		kind := flproto.KindTrain
		if round == 4 {
			kind = flproto.KindEvaluate // the final model's figures
		}
		var n, loss, auc float64
		delta, deltaB := make([]float64, len(w)), 0.0
		for _, s := range sites {
			r := runSite(t, s, kind, round, w, b)
			ni := r.metrics[contract.SampleCount]
			if ni != float64(len(s.data)) {
				t.Fatalf("round %d at %s: sample_count %v, want %d", round, s.name, ni, len(s.data))
			}
			n += ni
			loss += ni * r.metrics[MetricLoss]
			auc += ni * r.metrics[MetricAUC]
			if kind != flproto.KindTrain {
				continue
			}
			if r.metrics[MetricTrainLoss] >= r.metrics[MetricLoss] {
				t.Errorf("round %d at %s: local training did not lower the loss (%v → %v)", round, s.name, r.metrics[MetricLoss], r.metrics[MetricTrainLoss])
			}
			for j := range delta {
				delta[j] += ni * (r.w[j] - w[j])
			}
			deltaB += ni * (r.b - b)
		}
		losses = append(losses, loss/n)
		aucs = append(aucs, auc/n)
		for j := range w {
			w[j] += delta[j] / n
		}
		b += deltaB / n
	}
	t.Logf("global loss by round %.4f, AUC %.4f", losses, aucs)
	for r := 1; r < len(losses); r++ {
		if !(losses[r] < losses[r-1]) {
			t.Errorf("global loss did not fall from round %d to %d: %v", r, r+1, losses)
		}
	}
	if aucs[0] != 0.5 {
		t.Errorf("AUC of the zero model %v, want 0.5", aucs[0])
	}
	if aucs[len(aucs)-1] <= 0.7 {
		t.Errorf("AUC after three rounds %v, want > 0.7", aucs[len(aucs)-1])
	}
}

// One site training long enough recovers the planted model: every
// coefficient has the right sign, and the coefficients, brought back to the
// columns' units, are close to the true ones.
func TestLongTrainingRecoversTheModel(t *testing.T) {
	t.Parallel()
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, testParams(map[string]any{"epochs": 150.0, "learning_rate": 3.0}))
	writeLogReg(t, ws, safetensors.F32, make([]float64, 5), 0)
	writeDataframe(t, ws, population(3, 8000))
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	w, _ := readOutputModel(t, ws, safetensors.F32)
	for j, f := range testFeatures {
		fm := f.(map[string]any)
		coef := w[j] / fm["scale"].(float64)
		t.Logf("%s: fitted %.4f, true %.4f", fm["column"], coef, trueCoef[j])
		if math.Signbit(coef) != math.Signbit(trueCoef[j]) || coef == 0 {
			t.Errorf("%s: fitted coefficient %v has the wrong sign (true %v)", fm["column"], coef, trueCoef[j])
		}
		if math.Abs(coef-trueCoef[j]) > 0.4*trueCoef[j] {
			t.Errorf("%s: fitted coefficient %v, true %v", fm["column"], coef, trueCoef[j])
		}
	}
	m := readMetrics(t, ws)
	if m[MetricTrainLoss] >= m[MetricLoss] {
		t.Errorf("train_loss %v not below the zero model's loss %v", m[MetricTrainLoss], m[MetricLoss])
	}
}

// An F64 model is trained and written back as F64; the trained model's
// loss, evaluated afresh, is the train_loss the job reported.
func TestF64ModelRoundTrips(t *testing.T) {
	t.Parallel()
	data := population(4, 2000)
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, testParams(nil))
	writeLogReg(t, ws, safetensors.F64, []float64{0.1, 0, 0, 0, 0}, -1)
	writeDataframe(t, ws, data)
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	trained := readMetrics(t, ws)
	w, b := readOutputModel(t, ws, safetensors.F64)

	eval := newWorkspace(t)
	writeTask(t, eval, flproto.KindEvaluate, testParams(nil))
	writeLogReg(t, eval, safetensors.F64, w, b)
	writeDataframe(t, eval, data)
	if err := Run(t.Context(), eval); err != nil {
		t.Fatal(err)
	}
	if got := readMetrics(t, eval)[MetricLoss]; math.Abs(got-trained[MetricTrainLoss]) > 1e-12 {
		t.Errorf("the trained model evaluates to loss %v, the job reported train_loss %v", got, trained[MetricTrainLoss])
	}
}

// Evaluate writes metrics only: no model, no temporary files.
func TestEvaluateWritesNoModel(t *testing.T) {
	t.Parallel()
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindEvaluate, testParams(nil))
	writeLogReg(t, ws, safetensors.F32, []float64{1, 0.2, 0.3, 0.4, 0.5}, -3)
	writeDataframe(t, ws, population(5, 500))
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	entries, err := os.ReadDir(ws.Output)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Name() != contract.MetricsFile {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("output holds %v, want only %s", names, contract.MetricsFile)
	}
	m := readMetrics(t, ws)
	for _, name := range []string{MetricLoss, MetricAUC, MetricAccuracy, MetricTP, MetricFP, MetricTN, MetricFN, contract.SampleCount, MetricRowsSkipped} {
		if _, ok := m[name]; !ok {
			t.Errorf("metric %s missing from %v", name, m)
		}
	}
	if _, ok := m[MetricTrainLoss]; ok {
		t.Errorf("evaluate reported %s", MetricTrainLoss)
	}
	if got := m[MetricTP] + m[MetricFP] + m[MetricTN] + m[MetricFN]; got != 500 {
		t.Errorf("confusion matrix counts %v rows, want 500", got)
	}
	if acc := (m[MetricTP] + m[MetricTN]) / 500; math.Abs(acc-m[MetricAccuracy]) > 1e-12 {
		t.Errorf("accuracy %v, confusion matrix gives %v", m[MetricAccuracy], acc)
	}
}

// Rows with an empty or unparsable feature or label are skipped and
// counted; true/false labels and boolean features are read.
func TestSkippedRowsAreCounted(t *testing.T) {
	t.Parallel()
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, map[string]any{
		"features": []any{map[string]any{"column": "x", "center": 1.0, "scale": 2.0}, map[string]any{"column": "flag"}},
		"label":    "y",
	})
	writeLogReg(t, ws, safetensors.F32, []float64{0, 0}, 0)
	writeRaw(t, ws, contract.DataframeFile, strings.Join([]string{
		"id,x,flag,y",
		"1,1.5,1,1",
		"2,3,0,0",
		"3,-2,true,true",
		"4,0.25,F,f",
		"5, 7 ,t,T",
		"6,,1,1",       // empty feature
		"7,abc,1,0",    // unparsable feature
		"8,2,1,",       // empty label
		"9,2,1,2",      // label neither 0 nor 1
		"10,NaN,1,1",   // not a finite number
		"11,2",         // short row
		"12,1e400,1,1", // overflows
		"13,4,0,0.0",
	}, "\n")+"\n")
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	m := readMetrics(t, ws)
	if m[contract.SampleCount] != 6 || m[MetricRowsSkipped] != 7 {
		t.Errorf("sample_count %v, rows_skipped %v; want 6 and 7", m[contract.SampleCount], m[MetricRowsSkipped])
	}
	// The zero model predicts 0.5 for every row: 3 positives, 3 negatives.
	if m[MetricTP] != 3 || m[MetricFP] != 3 || m[MetricLoss] != math.Ln2 {
		t.Errorf("zero model: tp %v, fp %v, loss %v; want 3, 3, ln 2", m[MetricTP], m[MetricFP], m[MetricLoss])
	}
}

// A dataframe with one class has no AUC; the other metrics are there.
func TestOneClassOmitsAUC(t *testing.T) {
	t.Parallel()
	data := population(6, 300)
	for i := range data {
		data[i].outcome = 0
	}
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, testParams(nil))
	writeLogReg(t, ws, safetensors.F32, make([]float64, 5), 0)
	writeDataframe(t, ws, data)
	if err := Run(t.Context(), ws); err != nil {
		t.Fatal(err)
	}
	m := readMetrics(t, ws)
	if _, ok := m[MetricAUC]; ok {
		t.Errorf("auc %v reported for a dataframe with one class", m[MetricAUC])
	}
	if m[contract.SampleCount] != 300 || m[MetricTN] != 0 || m[MetricFP] != 300 {
		t.Errorf("metrics %v", m)
	}
}

func TestRunRefusesWhatDoesNotFit(t *testing.T) {
	t.Parallel()
	f32, f64, f16 := safetensors.F32, safetensors.F64, safetensors.F16
	cases := []struct {
		name    string
		kind    string
		params  map[string]any
		model   func(t *testing.T) []safetensors.Tensor
		csv     string
		wantErr error
		want    []string
	}{
		{
			name:    "bad scale",
			params:  map[string]any{"features": []any{map[string]any{"column": "age"}, map[string]any{"column": "bmi"}, map[string]any{"column": "sbp", "scale": 0.0}}, "label": "outcome"},
			wantErr: ErrInvalidParams,
			want:    []string{"params.features[2].scale: must be > 0"},
		},
		{
			name: "weight shape",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f32, 1, 2, 3, 4), tensor(t, "bias", f32, 0)}
			},
			wantErr: ErrModel,
			want:    []string{`tensor "weight" has shape [4], want [5]`},
		},
		{
			name: "bias shape",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f32, 1, 2, 3, 4, 5), tensor(t, "bias", f32, 0, 0)}
			},
			wantErr: ErrModel,
			want:    []string{`tensor "bias" has shape [2], want [1]`},
		},
		{
			name: "dtype",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f16, 1, 2, 3, 4, 5), tensor(t, "bias", f64, 0)}
			},
			wantErr: ErrModel,
			want:    []string{`tensor "weight" is F16, want F32 or F64`},
		},
		{
			name: "extra tensor",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f32, 1, 2, 3, 4, 5), tensor(t, "bias", f32, 0), tensor(t, "scale", f32, 1)}
			},
			wantErr: ErrModel,
			want:    []string{`unexpected tensor "scale"`},
		},
		{
			name: "no bias",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f32, 1, 2, 3, 4, 5)}
			},
			wantErr: ErrModel,
			want:    []string{`no tensor "bias"`},
		},
		{
			name: "not finite",
			model: func(t *testing.T) []safetensors.Tensor {
				return []safetensors.Tensor{tensor(t, "weight", f32, 1, math.NaN(), 3, 4, 5), tensor(t, "bias", f32, 0)}
			},
			wantErr: ErrModel,
			want:    []string{"NaN or infinite"},
		},
		{
			name:    "missing column",
			csv:     "person_id,age,male,t2d,bmi,outcome\n1,50,1,0,27,0\n",
			wantErr: ErrData,
			want:    []string{`no column "sbp"`},
		},
		{
			name:    "no usable rows",
			csv:     "person_id,age,male,t2d,bmi,sbp,outcome\n1,50,1,0,27,,0\n2,50,1,0,27,secret,0\n",
			wantErr: ErrData,
			want:    []string{"no usable rows (2 skipped)"},
		},
		{
			name:    "kind",
			kind:    "predict",
			wantErr: ErrTask,
			want:    []string{`kind "predict"`},
		},
		{
			name:    "diverges",
			params:  testParams(map[string]any{"learning_rate": 1e308, "epochs": 3.0}),
			wantErr: nil,
			want:    []string{"diverged", "params.learning_rate"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			ws := newWorkspace(t)
			if c.kind == "" {
				c.kind = flproto.KindTrain
			}
			if c.params == nil {
				c.params = testParams(nil)
			}
			writeTask(t, ws, c.kind, c.params)
			if c.model != nil {
				writeWeights(t, ws, c.model(t)...)
			} else {
				writeLogReg(t, ws, f32, make([]float64, 5), 0)
			}
			if c.csv != "" {
				writeRaw(t, ws, contract.DataframeFile, c.csv)
			} else {
				writeDataframe(t, ws, population(7, 50))
			}
			err := Run(t.Context(), ws)
			if err == nil {
				t.Fatal("Run succeeded")
			}
			if c.wantErr != nil && !errors.Is(err, c.wantErr) {
				t.Errorf("error %q is not %v", err, c.wantErr)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "secret") {
				t.Errorf("error %q carries a value from the data", err)
			}
			if _, statErr := os.Stat(filepath.Join(ws.Output, contract.ModelFile)); statErr == nil {
				t.Error("a failed run wrote a model")
			}
		})
	}
}

// Errors name workspace files relative to the workspace, never by host path.
func TestErrorsCarryNoHostPath(t *testing.T) {
	t.Parallel()
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, testParams(nil))
	writeLogReg(t, ws, safetensors.F32, make([]float64, 5), 0)
	err := Run(t.Context(), ws)
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("Run without a dataframe: %v, want a not-exist error", err)
	}
	if strings.Contains(err.Error(), ws.Root) || !strings.Contains(err.Error(), "input/"+contract.DataframeFile) {
		t.Errorf("error %q names a host path", err)
	}
}

// A cancelled run stops, says so, and writes nothing.
func TestCancelledRunStops(t *testing.T) {
	t.Parallel()
	ws := newWorkspace(t)
	writeTask(t, ws, flproto.KindTrain, testParams(map[string]any{"epochs": float64(MaxEpochs)}))
	writeLogReg(t, ws, safetensors.F32, make([]float64, 5), 0)
	writeDataframe(t, ws, population(8, 2000))
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	time.AfterFunc(30*time.Millisecond, cancel)
	if err := Run(ctx, ws); !errors.Is(err, context.Canceled) {
		t.Fatalf("Run with a cancelled context: %v", err)
	}
	entries, err := os.ReadDir(ws.Output)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 0 {
		t.Errorf("a cancelled run left %d files in the output", len(entries))
	}
}
