package privacy

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/flip-trust/node/shared/safetensors"
)

// tensor builds a float tensor for a test model.
func tensor(t *testing.T, name string, dtype safetensors.DType, shape []int64, values []float64) safetensors.Tensor {
	t.Helper()
	tt, err := safetensors.FloatTensor(name, dtype, shape, values)
	if err != nil {
		t.Fatal(err)
	}
	return tt
}

// writeModel writes tensors to a new file in dir.
func writeModel(t *testing.T, dir, name string, meta map[string]string, tensors ...safetensors.Tensor) string {
	t.Helper()
	p := filepath.Join(dir, name)
	var b bytes.Buffer
	if err := safetensors.Encode(&b, tensors, meta); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// readModel reads every tensor of the file at p (which must be valid
// safetensors) as float64 values.
func readModel(t *testing.T, p string) (*safetensors.Header, map[string][]float64) {
	t.Helper()
	f, err := safetensors.Open(p)
	if err != nil {
		t.Fatalf("output is not valid safetensors: %v", err)
	}
	defer f.Close()
	out := make(map[string][]float64)
	for _, ti := range f.Tensors {
		v, err := f.Floats(ti.Name)
		if err != nil {
			t.Fatal(err)
		}
		out[ti.Name] = v
	}
	h := f.Header
	return &h, out
}

func zeros(n int) []float64 { return make([]float64, n) }

func seed(b byte) *[32]byte {
	var s [32]byte
	s[0] = b
	return &s
}

func TestUpdateClipsToTheNorm(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// The update is (3, 0) in one tensor and (4) in another: norm 5 across
	// both, so clipping to 1 scales everything by 0.2.
	global := writeModel(t, dir, "global", map[string]string{"format": "pt"},
		tensor(t, "a", safetensors.F32, []int64{2}, []float64{1, 2}),
		tensor(t, "b", safetensors.F64, []int64{1, 1}, []float64{-1}))
	local := writeModel(t, dir, "local", nil,
		tensor(t, "a", safetensors.F32, []int64{2}, []float64{4, 2}),
		tensor(t, "b", safetensors.F64, []int64{1, 1}, []float64{3}))
	out := filepath.Join(dir, "update")
	st, err := Update(context.Background(), Config{ClipNorm: 1}, global, local, out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Norm != 5 || st.Scale != 0.2 || !st.Clipped || st.Elements != 3 || st.Bytes != 16 {
		t.Errorf("stats = %+v, want norm 5, scale 0.2, clipped, 3 elements, 16 bytes", st)
	}
	h, got := readModel(t, out)
	if d := math.Abs(got["a"][0] - 0.6); d > 1e-7 || got["a"][1] != 0 {
		t.Errorf("a = %v, want [0.6 0]", got["a"])
	}
	if got["b"][0] != 0.8000000000000002 && math.Abs(got["b"][0]-0.8) > 1e-15 {
		t.Errorf("b = %v, want [0.8]", got["b"])
	}
	ta, _ := h.Tensor("a")
	tb, _ := h.Tensor("b")
	if ta.DType != safetensors.F32 || tb.DType != safetensors.F64 || len(tb.Shape) != 2 {
		t.Errorf("dtypes or shapes changed: %+v %+v", ta, tb)
	}
	for k, v := range map[string]string{MetaUpdate: "delta", MetaClipNorm: "1", MetaNoiseMultiplier: "0", "format": "pt"} {
		if h.Metadata[k] != v {
			t.Errorf("metadata[%q] = %q, want %q", k, h.Metadata[k], v)
		}
	}
	var norm float64
	for _, vs := range got {
		for _, v := range vs {
			norm += v * v
		}
	}
	if math.Abs(math.Sqrt(norm)-1) > 1e-6 {
		t.Errorf("output norm = %v, want 1", math.Sqrt(norm))
	}
}

func TestUpdateUnderTheNormIsUnchanged(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	global := writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F64, []int64{3}, []float64{1, 1, 1}))
	local := writeModel(t, dir, "local", nil, tensor(t, "w", safetensors.F64, []int64{3}, []float64{1.5, 0.5, 1.25}))
	for _, clip := range []float64{0, 1, 10} {
		out := filepath.Join(dir, "update")
		st, err := Update(context.Background(), Config{ClipNorm: clip}, global, local, out)
		if err != nil {
			t.Fatal(err)
		}
		if st.Clipped || st.Scale != 1 || st.Norm != 0.75 {
			t.Errorf("clip %v: stats = %+v, want norm 0.75 unclipped", clip, st)
		}
		_, got := readModel(t, out)
		want := []float64{0.5, -0.5, 0.25}
		for i := range want {
			if got["w"][i] != want[i] {
				t.Errorf("clip %v: w = %v, want %v", clip, got["w"], want)
				break
			}
		}
	}
}

// noiseModel writes a model of n zeros in F64 twice, so the update is the
// noise alone.
func noiseModel(t *testing.T, dir string, n int) (global, local string) {
	t.Helper()
	global = writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F64, []int64{int64(n)}, zeros(n)))
	local = writeModel(t, dir, "local", nil, tensor(t, "w", safetensors.F64, []int64{int64(n)}, zeros(n)))
	return global, local
}

func TestNoiseStatistics(t *testing.T) {
	t.Parallel()
	const n = 1 << 20
	dir := t.TempDir()
	global, local := noiseModel(t, dir, n)
	cfg := Config{ClipNorm: 2, NoiseMultiplier: 1.5} // σ = 3
	out := filepath.Join(dir, "update")
	if _, err := update(context.Background(), cfg, global, local, out, options{seed: seed(1), workers: 2, blockElems: 4096}); err != nil {
		t.Fatal(err)
	}
	_, got := readModel(t, out)
	var sum, sumsq float64
	for _, v := range got["w"] {
		sum += v
		sumsq += v * v
	}
	mean := sum / n
	std := math.Sqrt(sumsq/n - mean*mean)
	// The mean's standard error is σ/√n = 0.003; the std's is σ/√(2n) ≈ 0.002.
	if math.Abs(mean) > 0.015 {
		t.Errorf("mean = %v, want ≈ 0", mean)
	}
	if math.Abs(std-3) > 0.015 {
		t.Errorf("std = %v, want ≈ 3", std)
	}
}

func TestNoiseIsAddedToTheClippedUpdate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 1 << 16
	gv, lv := zeros(n), zeros(n)
	lv[0] = 1000 // norm 1000, clipped to 10: the first coordinate becomes 10
	global := writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F64, []int64{n}, gv))
	local := writeModel(t, dir, "local", nil, tensor(t, "w", safetensors.F64, []int64{n}, lv))
	out := filepath.Join(dir, "update")
	st, err := update(context.Background(), Config{ClipNorm: 10, NoiseMultiplier: 0.01}, global, local, out, options{seed: seed(2)})
	if err != nil {
		t.Fatal(err)
	}
	if !st.Clipped || st.Scale != 0.01 {
		t.Fatalf("stats = %+v", st)
	}
	_, got := readModel(t, out)
	// σ = 0.1: the first coordinate is 10 give or take a few σ, the rest
	// are pure noise.
	if d := math.Abs(got["w"][0] - 10); d > 0.6 {
		t.Errorf("w[0] = %v, want 10 ± noise", got["w"][0])
	}
	var sumsq float64
	for _, v := range got["w"][1:] {
		sumsq += v * v
	}
	if std := math.Sqrt(sumsq / (n - 1)); math.Abs(std-0.1) > 0.003 {
		t.Errorf("noise std = %v, want 0.1", std)
	}
}

func TestNoiseStreams(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	const n = 1 << 14
	global, local := noiseModel(t, dir, n)
	cfg := Config{ClipNorm: 1, NoiseMultiplier: 1}
	run := func(name string, opts options) []float64 {
		t.Helper()
		out := filepath.Join(dir, name)
		if _, err := update(context.Background(), cfg, global, local, out, opts); err != nil {
			t.Fatal(err)
		}
		_, got := readModel(t, out)
		return got["w"]
	}
	equal := func(a, b []float64) bool {
		for i := range a {
			if a[i] != b[i] {
				return false
			}
		}
		return true
	}
	t.Run("without a fixed seed two runs differ", func(t *testing.T) {
		a, b := run("a", options{}), run("b", options{})
		if equal(a, b) {
			t.Error("two production runs drew the same noise")
		}
	})
	t.Run("a fixed seed repeats", func(t *testing.T) {
		opts := options{seed: seed(7), workers: 2, blockElems: 1024}
		if !equal(run("c", opts), run("d", opts)) {
			t.Error("the same seed gave different noise")
		}
		if equal(run("e", opts), run("f", options{seed: seed(8), workers: 2, blockElems: 1024})) {
			t.Error("different seeds gave the same noise")
		}
	})
	t.Run("each worker has its own stream", func(t *testing.T) {
		// Blocks 0 and 1 go to workers 0 and 1; the same stream would give
		// them the same values.
		v := run("g", options{seed: seed(9), workers: 2, blockElems: 1024})
		if equal(v[:1024], v[1024:2048]) {
			t.Error("two workers drew the same noise")
		}
	})
}

func TestUpdateDTypesRoundTrip(t *testing.T) {
	t.Parallel()
	cases := []struct {
		dtype safetensors.DType
		tol   float64 // relative precision of the dtype
	}{
		{safetensors.F16, 1.0 / 1024},
		{safetensors.BF16, 1.0 / 128},
		{safetensors.F32, 1e-7},
		{safetensors.F64, 1e-15},
	}
	gv := []float64{0.5, -1.25, 2, 0, 100, -3}
	lv := []float64{0.75, -1, 1, 0.125, 96, -3}
	for _, tc := range cases {
		t.Run(string(tc.dtype), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			global := writeModel(t, dir, "global", nil, tensor(t, "layer.weight", tc.dtype, []int64{2, 3}, gv))
			local := writeModel(t, dir, "local", nil, tensor(t, "layer.weight", tc.dtype, []int64{2, 3}, lv))
			out := filepath.Join(dir, "update")
			if _, err := Update(context.Background(), Config{}, global, local, out); err != nil {
				t.Fatal(err)
			}
			h, got := readModel(t, out)
			ti, _ := h.Tensor("layer.weight")
			if ti.DType != tc.dtype || ti.Shape[0] != 2 || ti.Shape[1] != 3 {
				t.Fatalf("tensor = %+v, want %s [2 3]", ti, tc.dtype)
			}
			for i := range gv {
				want := lv[i] - gv[i]
				if d := math.Abs(got["layer.weight"][i] - want); d > tc.tol*math.Max(1, math.Abs(want)) {
					t.Errorf("[%d] = %v, want %v", i, got["layer.weight"][i], want)
				}
			}
		})
	}
}

// A counter such as BatchNorm's num_batches_tracked (I64) is not trained:
// its update is zero, its local value never leaves, it takes no part in the
// norm, and noise touches only the float tensors.
func TestUpdateIntegerTensorsCarryNoUpdate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	i64 := func(v uint64) safetensors.Tensor {
		b := make([]byte, 8)
		binary.LittleEndian.PutUint64(b, v)
		return safetensors.Tensor{Name: "bn.num_batches_tracked", DType: safetensors.I64, Shape: []int64{}, Data: b}
	}
	global := writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F32, []int64{2}, []float64{1, 2}), i64(5))
	local := writeModel(t, dir, "local", nil, tensor(t, "w", safetensors.F32, []int64{2}, []float64{4, 6}), i64(1005))
	out := filepath.Join(dir, "update")
	st, err := Update(context.Background(), Config{ClipNorm: 100, NoiseMultiplier: 0.01}, global, local, out)
	if err != nil {
		t.Fatal(err)
	}
	if st.Norm != 5 {
		t.Errorf("norm = %v, want 5 (the integer tensor takes no part)", st.Norm)
	}
	f, err := safetensors.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ti, ok := f.Header.Tensor("bn.num_batches_tracked")
	if !ok || ti.DType != safetensors.I64 {
		t.Fatalf("integer tensor in the update: %+v, %v", ti, ok)
	}
	raw, err := io.ReadAll(f.Section(ti))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(raw, make([]byte, 8)) {
		t.Errorf("integer tensor update = %x, want zero", raw)
	}
	w, err := f.Floats("w")
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(w[0]-3) > 5 || math.Abs(w[1]-4) > 5 || (w[0] == 3 && w[1] == 4) {
		t.Errorf("float update = %v, want (3, 4) plus noise", w)
	}
}

func TestUpdateRefusesMismatches(t *testing.T) {
	t.Parallel()
	f32 := func(name string, shape ...int64) safetensors.Tensor {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		return tensor(t, name, safetensors.F32, shape, zeros(int(n)))
	}
	cases := []struct {
		name          string
		global, local []safetensors.Tensor
		want          error
		wantText      []string
	}{
		{"missing tensor", []safetensors.Tensor{f32("a", 2), f32("b", 2)}, []safetensors.Tensor{f32("a", 2)}, ErrMismatch,
			[]string{`tensor "b" is in the global model but not in the trained weights`}},
		{"extra tensor", []safetensors.Tensor{f32("a", 2)}, []safetensors.Tensor{f32("a", 2), f32("z", 1)}, ErrMismatch,
			[]string{`tensor "z" is in the trained weights but not in the global model`}},
		{"shape", []safetensors.Tensor{f32("a", 2, 3)}, []safetensors.Tensor{f32("a", 3, 2)}, ErrMismatch,
			[]string{`tensor "a" has shape [3 2] in the trained weights, [2 3] in the global model`}},
		{"dtype", []safetensors.Tensor{f32("a", 2)}, []safetensors.Tensor{tensor(t, "a", safetensors.F64, []int64{2}, zeros(2))}, ErrMismatch,
			[]string{`tensor "a" is F64 in the trained weights, F32 in the global model`}},
		{"every problem named", []safetensors.Tensor{f32("a", 2), f32("b", 1)}, []safetensors.Tensor{f32("a", 1), f32("c", 1)}, ErrMismatch,
			[]string{`"a" has shape`, `"b" is in the global model`, `"c" is in the trained weights`}},
		{"integer dtype", []safetensors.Tensor{{Name: "steps", DType: safetensors.I64, Shape: []int64{}, Data: make([]byte, 8)}},
			[]safetensors.Tensor{{Name: "steps", DType: safetensors.I32, Shape: []int64{}, Data: make([]byte, 4)}}, ErrMismatch,
			[]string{`tensor "steps" is I32 in the trained weights, I64 in the global model`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			global := writeModel(t, dir, "global", nil, tc.global...)
			local := writeModel(t, dir, "local", nil, tc.local...)
			out := filepath.Join(dir, "update")
			_, err := Update(context.Background(), Config{}, global, local, out)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			for _, w := range tc.wantText {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("err = %q, missing %q", err, w)
				}
			}
			assertNoOutput(t, dir, out)
		})
	}
}

// assertNoOutput checks that neither the update nor a temporary file was
// left behind.
func assertNoOutput(t *testing.T, dir, out string) {
	t.Helper()
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("an update file exists after a failure: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasSuffix(e.Name(), ".tmp") {
			t.Errorf("temporary file %s left behind", e.Name())
		}
	}
}

func TestUpdateRefusesNonFinite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	global := writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F32, []int64{3}, zeros(3)))
	local := writeModel(t, dir, "local", nil, tensor(t, "w", safetensors.F32, []int64{3}, []float64{1, math.NaN(), 0}))
	out := filepath.Join(dir, "update")
	_, err := Update(context.Background(), Config{ClipNorm: 1}, global, local, out)
	if !errors.Is(err, ErrNotFinite) || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("err = %v, want ErrNotFinite naming w", err)
	}
	assertNoOutput(t, dir, out)
}

func TestUpdateRefusesInvalidInput(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	global := writeModel(t, dir, "global", nil, tensor(t, "w", safetensors.F32, []int64{1}, zeros(1)))
	junk := filepath.Join(dir, "junk")
	if err := os.WriteFile(junk, []byte("not a model at all"), 0o600); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "update")
	if _, err := Update(context.Background(), Config{}, global, junk, out); !errors.Is(err, safetensors.ErrFormat) {
		t.Errorf("junk weights: err = %v, want ErrFormat", err)
	}
	if _, err := Update(context.Background(), Config{NoiseMultiplier: 1}, global, global, out); err == nil || !strings.Contains(err.Error(), "FL_DP_CLIP_NORM") {
		t.Errorf("invalid config: err = %v", err)
	}
	assertNoOutput(t, dir, out)
}

func TestUpdateStopsWhenCanceled(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	global, local := noiseModel(t, dir, 1<<16)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	out := filepath.Join(dir, "update")
	_, err := update(ctx, Config{ClipNorm: 1, NoiseMultiplier: 1}, global, local, out, options{blockElems: 1024, workers: 2})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	assertNoOutput(t, dir, out)
}

// TestUpdateMemoryIsConstant filters a 256 MiB model while sampling the
// heap: the heap must stay under a quarter of the model's size. With the
// race detector, which makes every coordinate ten times dearer, the model is
// 32 MiB (and the bound 8 MiB).
func TestUpdateMemoryIsConstant(t *testing.T) {
	if testing.Short() {
		t.Skip("writes two large models")
	}
	var size int64 = 256 << 20
	if raceEnabled {
		size = 32 << 20
	}
	limit := uint64(size / 4)
	dir := t.TempDir()
	global, local := filepath.Join(dir, "global"), filepath.Join(dir, "local")
	if err := writeSyntheticModels(global, local, size, 3); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	done := make(chan struct{})
	peak := make(chan uint64)
	go func() {
		var ms runtime.MemStats
		var highest uint64
		tick := time.NewTicker(5 * time.Millisecond)
		defer tick.Stop()
		for {
			runtime.ReadMemStats(&ms)
			highest = max(highest, ms.HeapInuse)
			select {
			case <-done:
				peak <- highest
				return
			case <-tick.C:
			}
		}
	}()
	st, err := Update(context.Background(), Config{ClipNorm: 1, NoiseMultiplier: 0.5}, global, local, filepath.Join(dir, "update"))
	close(done)
	p := <-peak
	if err != nil {
		t.Fatal(err)
	}
	if st.Bytes != size {
		t.Fatalf("processed %d bytes, want %d", st.Bytes, size)
	}
	if p > limit {
		t.Errorf("heap in use peaked at %d MiB filtering a %d MiB model, want under %d MiB", p>>20, size>>20, limit>>20)
	}
	t.Logf("heap in use peaked at %.1f MiB for a %d MiB model", float64(p)/(1<<20), size>>20)
}
