package logreg

import (
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"

	"github.com/flip-trust/node/shared/safetensors"
)

// Tensor names of the model.
const (
	TensorWeight = "weight"
	TensorBias   = "bias"
)

// ErrModel marks a model file that does not fit the job: missing or extra
// tensors, a dtype other than F32 or F64, a shape that does not match the
// number of features, or a non-finite value.
var ErrModel = errors.New("model does not fit the logistic regression")

// weights is a loaded model with what is needed to write it back in kind.
type weights struct {
	model
	weightDType, biasDType safetensors.DType
	metadata               map[string]string
}

// loadModel reads the model at path, which must hold exactly a weight tensor
// of shape [features] and a bias tensor of shape [1], each F32 or F64.
func loadModel(path string, features int) (weights, error) {
	f, err := safetensors.Open(path)
	if err != nil {
		return weights{}, fmt.Errorf("load model: %w", err)
	}
	defer f.Close()
	for _, t := range f.Tensors {
		if t.Name != TensorWeight && t.Name != TensorBias {
			return weights{}, fmt.Errorf("%w: unexpected tensor %q (want only %q and %q)", ErrModel, t.Name, TensorWeight, TensorBias)
		}
	}
	out := weights{metadata: f.Metadata}
	for _, want := range []struct {
		name  string
		size  int64
		dtype *safetensors.DType
	}{
		{TensorWeight, int64(features), &out.weightDType},
		{TensorBias, 1, &out.biasDType},
	} {
		t, ok := f.Tensor(want.name)
		if !ok {
			return weights{}, fmt.Errorf("%w: no tensor %q", ErrModel, want.name)
		}
		if t.DType != safetensors.F32 && t.DType != safetensors.F64 {
			return weights{}, fmt.Errorf("%w: tensor %q is %s, want F32 or F64", ErrModel, want.name, t.DType)
		}
		if len(t.Shape) != 1 || t.Shape[0] != want.size {
			return weights{}, fmt.Errorf("%w: tensor %q has shape %v, want [%d] (one per feature in params)", ErrModel, want.name, t.Shape, want.size)
		}
		*want.dtype = t.DType
	}
	if out.w, err = f.Floats(TensorWeight); err != nil {
		return weights{}, fmt.Errorf("load model: %w", err)
	}
	b, err := f.Floats(TensorBias)
	if err != nil {
		return weights{}, fmt.Errorf("load model: %w", err)
	}
	out.b = b[0]
	if !finite(out.w) || !finite(b) {
		return weights{}, fmt.Errorf("%w: the weights hold a NaN or infinite value", ErrModel)
	}
	return out, nil
}

// writeModel writes m in the dtypes and with the metadata of like to
// dir/name, atomically.
func writeModel(dir, name string, like weights, m model) error {
	w, err := safetensors.FloatTensor(TensorWeight, like.weightDType, []int64{int64(len(m.w))}, m.w)
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	b, err := safetensors.FloatTensor(TensorBias, like.biasDType, []int64{1}, []float64{m.b})
	if err != nil {
		return fmt.Errorf("encode model: %w", err)
	}
	return writeAtomic(dir, name, func(out io.Writer) error {
		return safetensors.Encode(out, []safetensors.Tensor{w, b}, like.metadata)
	})
}

// writeAtomic writes dir/name through a temporary file in dir that is
// synced and renamed into place, so a reader never sees a partial file.
func writeAtomic(dir, name string, write func(io.Writer) error) (err error) {
	tmp, err := os.CreateTemp(dir, "."+name+".*.tmp")
	if err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	defer func() {
		if err != nil {
			_ = tmp.Close()
			_ = os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	return nil
}

func finite(xs []float64) bool {
	for _, x := range xs {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return false
		}
	}
	return true
}
