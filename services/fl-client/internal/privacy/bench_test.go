package privacy

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkUpdate filters a 256 MiB F32 model with clipping and noise and
// reports GB/s of model bytes, and the ratio to copying the model file once
// (the floor any filter that reads its input must pay), measured in the same
// run.
func BenchmarkUpdate(b *testing.B) {
	const size = 256 << 20
	dir := b.TempDir()
	global, local := filepath.Join(dir, "global"), filepath.Join(dir, "local")
	if err := writeSyntheticModels(global, local, size, 1); err != nil {
		b.Fatal(err)
	}
	copyStart := time.Now()
	if err := copyFile(global, filepath.Join(dir, "copy")); err != nil {
		b.Fatal(err)
	}
	copyGBs := float64(size) / time.Since(copyStart).Seconds() / 1e9
	cfg := Config{ClipNorm: 1, NoiseMultiplier: 1.1}
	out := filepath.Join(dir, "update")
	b.SetBytes(size)
	b.ResetTimer()
	start := time.Now()
	for b.Loop() {
		if _, err := Update(context.Background(), cfg, global, local, out); err != nil {
			b.Fatal(err)
		}
	}
	gbs := float64(size) * float64(b.N) / time.Since(start).Seconds() / 1e9
	b.ReportMetric(gbs, "GB/s")
	b.ReportMetric(gbs/copyGBs, "x_copy")
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func TestMeasureThroughput(t *testing.T) {
	t.Parallel()
	gbs, err := MeasureThroughput(context.Background(), 4<<20, Config{ClipNorm: 1, NoiseMultiplier: 1})
	if err != nil {
		t.Fatal(err)
	}
	if gbs <= 0 {
		t.Errorf("throughput = %v GB/s", gbs)
	}
	if _, err := MeasureThroughput(context.Background(), 2, Config{}); err == nil {
		t.Error("a model smaller than one value was measured")
	}
}
