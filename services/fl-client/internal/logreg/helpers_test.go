package logreg

import (
	"bufio"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/flip-trust/node/services/fl-client/internal/contract"
	"github.com/flip-trust/node/shared/safetensors"
)

// patient is one synthetic row with the features of the known model.
type patient struct {
	age, male, t2d, bmi, sbp float64
	outcome                  int
}

// trueLogit is the log-odds of the model the test data is drawn from.
func trueLogit(p patient) float64 {
	return -13 + 0.06*p.age + 0.5*p.male + 0.9*p.t2d + 0.08*p.bmi + 0.025*p.sbp
}

// trueCoef are the coefficients of trueLogit in the order of testFeatures.
var trueCoef = []float64{0.06, 0.5, 0.9, 0.08, 0.025}

// testFeatures standardises the synthetic columns.
var testFeatures = []any{
	map[string]any{"column": "age", "center": 55.0, "scale": 20.0},
	map[string]any{"column": "male", "center": 0.5, "scale": 0.5},
	map[string]any{"column": "t2d", "center": 0.2, "scale": 0.4},
	map[string]any{"column": "bmi", "center": 27.0, "scale": 5.0},
	map[string]any{"column": "sbp", "center": 130.0, "scale": 18.0},
}

// testParams returns params over testFeatures with the given extra fields.
func testParams(extra map[string]any) map[string]any {
	p := map[string]any{"features": testFeatures, "label": "outcome"}
	for k, v := range extra {
		p[k] = v
	}
	return p
}

// population draws n patients: age uniform 20-90, BMI about 27±5, systolic
// about 130±18, male and type 2 diabetes Bernoulli, outcome from trueLogit.
func population(seed uint64, n int) []patient {
	rng := rand.New(rand.NewPCG(seed, 0x5eed))
	out := make([]patient, n)
	for i := range out {
		p := patient{
			age: float64(20 + rng.IntN(71)),
			bmi: math.Round((27+5*rng.NormFloat64())*10) / 10,
			sbp: math.Round(130 + 18*rng.NormFloat64()),
		}
		if rng.Float64() < 0.49 {
			p.male = 1
		}
		if rng.Float64() < 0.1+0.2*(p.age-20)/70 {
			p.t2d = 1
		}
		if rng.Float64() < 1/(1+math.Exp(-trueLogit(p))) {
			p.outcome = 1
		}
		out[i] = p
	}
	return out
}

// writeDataframe writes patients as the dataframe of ws, with a person_id
// column the job ignores.
func writeDataframe(t testing.TB, ws contract.Workspace, pts []patient) {
	t.Helper()
	f, err := os.Create(filepath.Join(ws.Input, contract.DataframeFile))
	if err != nil {
		t.Fatal(err)
	}
	w := bufio.NewWriter(f)
	fmt.Fprintln(w, "person_id,age,male,t2d,bmi,sbp,outcome")
	for i, p := range pts {
		fmt.Fprintf(w, "%d,%s,%s,%s,%s,%s,%d\n", i+1, num(p.age), num(p.male), num(p.t2d), num(p.bmi), num(p.sbp), p.outcome)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

func num(v float64) string { return strconv.FormatFloat(v, 'f', -1, 64) }

// writeRaw writes text as the file name of ws's input directory.
func writeRaw(t testing.TB, ws contract.Workspace, name, text string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(ws.Input, name), []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
}

// writeTask writes task.json.
func writeTask(t testing.TB, ws contract.Workspace, kind string, params map[string]any) {
	t.Helper()
	b, err := json.Marshal(contract.TaskFileBody{Kind: kind, Round: 1, Rounds: 1, Params: params})
	if err != nil {
		t.Fatal(err)
	}
	writeRaw(t, ws, contract.TaskFile, string(b))
}

// writeWeights writes a model of the given tensors as ws's input model.
func writeWeights(t testing.TB, ws contract.Workspace, tensors ...safetensors.Tensor) {
	t.Helper()
	f, err := os.Create(filepath.Join(ws.Input, contract.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	if err := safetensors.Encode(f, tensors, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
}

// tensor builds a float tensor or fails the test.
func tensor(t testing.TB, name string, dtype safetensors.DType, values ...float64) safetensors.Tensor {
	t.Helper()
	ts, err := safetensors.FloatTensor(name, dtype, []int64{int64(len(values))}, values)
	if err != nil {
		t.Fatal(err)
	}
	return ts
}

// writeLogReg writes weight and bias of dtype as ws's input model.
func writeLogReg(t testing.TB, ws contract.Workspace, dtype safetensors.DType, w []float64, b float64) {
	t.Helper()
	writeWeights(t, ws, tensor(t, TensorWeight, dtype, w...), tensor(t, TensorBias, dtype, b))
}

// newWorkspace returns a fresh workspace under a test directory.
func newWorkspace(t testing.TB) contract.Workspace {
	t.Helper()
	ws, err := contract.NewWorkspace(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ws
}

// readMetrics reads ws's metrics.json.
func readMetrics(t testing.TB, ws contract.Workspace) map[string]float64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ws.Output, contract.MetricsFile))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]float64
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatalf("metrics.json is not a flat object of numbers: %v", err)
	}
	return m
}

// readOutputModel reads ws's output model, checking its dtypes.
func readOutputModel(t testing.TB, ws contract.Workspace, dtype safetensors.DType) (w []float64, b float64) {
	t.Helper()
	f, err := safetensors.Open(filepath.Join(ws.Output, contract.ModelFile))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Tensors) != 2 {
		t.Fatalf("output model has %d tensors, want 2", len(f.Tensors))
	}
	for _, ti := range f.Tensors {
		if ti.DType != dtype {
			t.Errorf("output tensor %q is %s, want %s", ti.Name, ti.DType, dtype)
		}
	}
	if f.Metadata["format"] != "pt" {
		t.Errorf("output metadata %v, want the input's", f.Metadata)
	}
	if w, err = f.Floats(TensorWeight); err != nil {
		t.Fatal(err)
	}
	bs, err := f.Floats(TensorBias)
	if err != nil {
		t.Fatal(err)
	}
	return w, bs[0]
}
