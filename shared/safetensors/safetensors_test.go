package safetensors

import (
	"bytes"
	"encoding/binary"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// build assembles a file by hand from a header text and data bytes, the way
// the format's description lays it out.
func build(header string, data []byte) []byte {
	var b bytes.Buffer
	_ = binary.Write(&b, binary.LittleEndian, uint64(len(header)))
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func writeFile(t *testing.T, b []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "w.safetensors")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestReadHandBuiltFile(t *testing.T) {
	t.Parallel()
	data := make([]byte, 8+2)
	binary.LittleEndian.PutUint32(data[0:], math.Float32bits(1.5))
	binary.LittleEndian.PutUint32(data[4:], math.Float32bits(-2))
	binary.LittleEndian.PutUint16(data[8:], 0x3c00) // F16 1.0
	hdr := `{"__metadata__":{"format":"pt"},"w":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F16","shape":[1],"data_offsets":[8,10]}}`
	f, err := Open(writeFile(t, build(hdr, data)))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.Metadata["format"] != "pt" {
		t.Errorf("metadata = %v", f.Metadata)
	}
	if len(f.Tensors) != 2 || f.Tensors[0].Name != "w" || f.Tensors[1].Name != "b" {
		t.Fatalf("tensors not in data order: %+v", f.Tensors)
	}
	w, err := f.Floats("w")
	if err != nil || len(w) != 2 || w[0] != 1.5 || w[1] != -2 {
		t.Errorf("w = %v, %v", w, err)
	}
	b, err := f.Floats("b")
	if err != nil || b[0] != 1 {
		t.Errorf("b = %v, %v", b, err)
	}
	if _, err := f.Floats("missing"); err == nil {
		t.Error("a missing tensor was read")
	}
}

func TestRejectsInvalidHeaders(t *testing.T) {
	t.Parallel()
	eight := make([]byte, 8)
	cases := map[string][]byte{
		"gap":           build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight),
		"overlap":       build(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight),
		"shape":         build(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight),
		"dtype":         build(`{"a":{"dtype":"F128","shape":[1],"data_offsets":[0,8]}}`, eight),
		"trailing data": build(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, eight),
		"not json":      build(`{"a":`, eight),
		"metadata":      build(`{"__metadata__":{"n":1},"a":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}}`, eight),
		"negative dim":  build(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight),
		"short":         {1, 2, 3},
		"header length": append([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0}, eight...),
	}
	for name, b := range cases {
		t.Run(name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(b), int64(len(b)))
			if !errors.Is(err, ErrFormat) {
				t.Fatalf("err = %v, want ErrFormat", err)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	t.Parallel()
	values := []float64{0, 1, -1, 0.5, 3.140625, -65504, 1e-3}
	var tensors []Tensor
	for _, dt := range []DType{F64, F32, BF16, F16} {
		tt, err := FloatTensor("t_"+string(dt), dt, []int64{7}, values)
		if err != nil {
			t.Fatal(err)
		}
		tensors = append(tensors, tt)
	}
	var buf bytes.Buffer
	if err := Encode(&buf, tensors, map[string]string{"flip.kind": "delta"}); err != nil {
		t.Fatal(err)
	}
	f, err := Open(writeFile(t, buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if f.DataStart%8 != 0 {
		t.Errorf("data starts at %d, not 8-byte aligned", f.DataStart)
	}
	if f.Metadata["flip.kind"] != "delta" {
		t.Errorf("metadata = %v", f.Metadata)
	}
	tol := map[DType]float64{F64: 0, F32: 1e-7, BF16: 1e-2, F16: 1e-3}
	for _, dt := range []DType{F64, F32, BF16, F16} {
		got, err := f.Floats("t_" + string(dt))
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range values {
			if math.Abs(got[i]-v) > tol[dt]*math.Max(1, math.Abs(v)) {
				t.Errorf("%s[%d] = %v, want %v", dt, i, got[i], v)
			}
		}
	}
}

func TestHalfPrecisionBits(t *testing.T) {
	t.Parallel()
	cases := []struct {
		v    float32
		half uint16
		bf   uint16
	}{
		{1, 0x3c00, 0x3f80},
		{-2, 0xc000, 0xc000},
		{65504, 0x7bff, 0x4780},
		{1e6, 0x7c00, 0x4974},                               // half overflows to +Inf
		{float32(math.Ldexp(1, -24)), 0x0001, 0x3380},       // smallest half subnormal
		{float32(math.Ldexp(1, -25)), 0x0000, 0x3300},       // ties to even: zero
		{float32(1 + math.Ldexp(1, -11)), 0x3c00, 0x3f80},   // tie rounds to even
		{float32(1 + 3*math.Ldexp(1, -11)), 0x3c02, 0x3f80}, // tie rounds up to even
	}
	for _, c := range cases {
		if got := float32ToHalf(c.v); got != c.half {
			t.Errorf("half(%g) = %#04x, want %#04x", c.v, got, c.half)
		}
		if got := float32ToBF16(c.v); got != c.bf {
			t.Errorf("bf16(%g) = %#04x, want %#04x", c.v, got, c.bf)
		}
	}
	for _, h := range []uint16{0x3c00, 0xc000, 0x7bff, 0x0001, 0x03ff, 0x0400, 0x3555} {
		if back := float32ToHalf(halfToFloat32(h)); back != h {
			t.Errorf("half %#04x does not round-trip: %#04x", h, back)
		}
	}
	if !math.IsNaN(float64(halfToFloat32(float32ToHalf(float32(math.NaN()))))) {
		t.Error("NaN lost in half")
	}
}

func TestWriterChecksLength(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	w, err := NewWriter(&buf, []TensorInfo{{Name: "a", DType: F32, Shape: []int64{2}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(make([]byte, 4)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err == nil || !strings.Contains(err.Error(), "announced 8") {
		t.Errorf("short write not reported: %v", err)
	}
	if _, err := w.Write(make([]byte, 8)); err == nil {
		t.Error("write past the announced size accepted")
	}
	if _, err := NewWriter(&buf, []TensorInfo{{Name: "a", DType: F32}, {Name: "a", DType: F32}}, nil); err == nil {
		t.Error("duplicate names accepted")
	}
}
