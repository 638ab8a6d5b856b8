package privacy

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"time"

	"github.com/flip-trust/node/shared/safetensors"
)

// benchTensorBytes is the size of each tensor of a synthetic model.
const benchTensorBytes = 64 << 20

// MeasureThroughput times Update on a synthetic F32 model of about size
// bytes (global and trained weights written to a temporary directory, which
// is removed afterwards) and returns the model bytes filtered per second, in
// GB/s (10⁹ bytes). Writing the inputs is not timed.
func MeasureThroughput(ctx context.Context, size int64, cfg Config) (gbPerSec float64, err error) {
	if size < 4 {
		return 0, fmt.Errorf("model size %d bytes: need at least one F32 value", size)
	}
	dir, err := os.MkdirTemp("", "flip-update-bench-")
	if err != nil {
		return 0, fmt.Errorf("temporary directory: %w", err)
	}
	defer func() { err = errors.Join(err, os.RemoveAll(dir)) }()
	global, local := filepath.Join(dir, "global.safetensors"), filepath.Join(dir, "local.safetensors")
	if err := writeSyntheticModels(global, local, size, 1); err != nil {
		return 0, err
	}
	start := time.Now()
	st, err := Update(ctx, cfg, global, local, filepath.Join(dir, "update.safetensors"))
	if err != nil {
		return 0, err
	}
	return float64(st.Bytes) / time.Since(start).Seconds() / 1e9, nil
}

// writeSyntheticModels writes a global F32 model of about size bytes (in
// tensors of at most 64 MiB) and trained weights that differ from it by
// small steps, both derived from seed, streaming so that memory stays small.
// It is a workload for benchmarks, not a model.
func writeSyntheticModels(globalPath, localPath string, size int64, seed uint64) error {
	elems := size / 4
	var infos []safetensors.TensorInfo
	for i, left := 0, elems; left > 0; i++ {
		n := min(left, benchTensorBytes/4)
		infos = append(infos, safetensors.TensorInfo{Name: fmt.Sprintf("layer%04d.weight", i), DType: safetensors.F32, Shape: []int64{n}})
		left -= n
	}
	gf, err := os.Create(globalPath)
	if err != nil {
		return fmt.Errorf("synthetic model: %w", err)
	}
	defer gf.Close()
	lf, err := os.Create(localPath)
	if err != nil {
		return fmt.Errorf("synthetic model: %w", err)
	}
	defer lf.Close()
	gw, err := safetensors.NewWriter(gf, infos, map[string]string{"format": "pt"})
	if err != nil {
		return fmt.Errorf("synthetic model: %w", err)
	}
	lw, err := safetensors.NewWriter(lf, infos, map[string]string{"format": "pt"})
	if err != nil {
		return fmt.Errorf("synthetic model: %w", err)
	}
	// One chunk of values is drawn and written again and again: drawing
	// every value would cost more than filtering them.
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	const chunk = 1 << 18
	gb, lb := make([]byte, 4*chunk), make([]byte, 4*chunk)
	for i := range chunk {
		g := float32(rng.NormFloat64() * 0.05)
		l := g + float32(rng.NormFloat64()*0.001)
		binary.LittleEndian.PutUint32(gb[4*i:], math.Float32bits(g))
		binary.LittleEndian.PutUint32(lb[4*i:], math.Float32bits(l))
	}
	for left := elems; left > 0; left -= chunk {
		n := min(left, chunk)
		if _, err := gw.Write(gb[:4*n]); err != nil {
			return fmt.Errorf("synthetic model: %w", err)
		}
		if _, err := lw.Write(lb[:4*n]); err != nil {
			return fmt.Errorf("synthetic model: %w", err)
		}
	}
	for _, c := range []io.Closer{gw, lw, gf, lf} {
		if err := c.Close(); err != nil {
			return fmt.Errorf("synthetic model: %w", err)
		}
	}
	return nil
}
