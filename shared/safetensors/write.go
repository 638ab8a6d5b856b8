package safetensors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
)

// Tensor is a tensor held in memory: its description and raw bytes.
type Tensor struct {
	Name  string
	DType DType
	Shape []int64
	Data  []byte
}

// Writer writes a safetensors file whose layout is fixed up front: the header
// is written by NewWriter, then the tensors' bytes are streamed in the order
// given, and Close checks that exactly the announced bytes were written.
type Writer struct {
	w       io.Writer
	want    int64
	written int64
	tensors []TensorInfo
}

// NewWriter writes the header for tensors (Begin and End are computed, in the
// order given) and metadata, and returns a Writer for their data.
func NewWriter(w io.Writer, tensors []TensorInfo, metadata map[string]string) (*Writer, error) {
	hdr := make(map[string]any, len(tensors)+1)
	if len(metadata) > 0 {
		hdr[metaKey] = metadata
	}
	laid := make([]TensorInfo, len(tensors))
	var off int64
	for i, t := range tensors {
		if t.Name == "" || t.Name == metaKey {
			return nil, fmt.Errorf("tensor name %q is not allowed", t.Name)
		}
		if _, dup := hdr[t.Name]; dup {
			return nil, fmt.Errorf("tensor %q appears twice", t.Name)
		}
		es, err := t.DType.Size()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		shape := t.Shape
		if shape == nil {
			shape = []int64{}
		}
		n := int64(1)
		for _, d := range shape {
			if d < 0 {
				return nil, fmt.Errorf("tensor %q has a negative dimension", t.Name)
			}
			n *= d
		}
		t.Shape, t.Begin, t.End = shape, off, off+n*int64(es)
		off = t.End
		laid[i] = t
		hdr[t.Name] = rawTensor{DType: t.DType, Shape: shape, DataOffsets: [2]int64{t.Begin, t.End}}
	}
	js, err := json.Marshal(hdr)
	if err != nil {
		return nil, fmt.Errorf("encode header: %w", err)
	}
	// Pad with spaces so the data starts 8-byte aligned.
	if pad := (8 - len(js)%8) % 8; pad > 0 {
		js = append(js, bytes.Repeat([]byte{' '}, pad)...)
	}
	var lenBuf [8]byte
	binary.LittleEndian.PutUint64(lenBuf[:], uint64(len(js)))
	if _, err := w.Write(lenBuf[:]); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	if _, err := w.Write(js); err != nil {
		return nil, fmt.Errorf("write header: %w", err)
	}
	return &Writer{w: w, want: off, tensors: laid}, nil
}

// Tensors returns the tensors with their computed offsets, in data order.
func (w *Writer) Tensors() []TensorInfo { return w.tensors }

// Write writes the next data bytes; it refuses bytes past the announced size.
func (w *Writer) Write(p []byte) (int, error) {
	if w.written+int64(len(p)) > w.want {
		return 0, fmt.Errorf("tensor data exceeds the %d bytes the header announced", w.want)
	}
	n, err := w.w.Write(p)
	w.written += int64(n)
	return n, err
}

// Close reports whether every announced byte was written. It does not close
// the underlying writer.
func (w *Writer) Close() error {
	if w.written != w.want {
		return fmt.Errorf("wrote %d tensor data bytes, the header announced %d", w.written, w.want)
	}
	return nil
}

// Encode writes tensors (sorted by name) and metadata to w.
func Encode(w io.Writer, tensors []Tensor, metadata map[string]string) error {
	sorted := append([]Tensor(nil), tensors...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].Name < sorted[j].Name })
	infos := make([]TensorInfo, len(sorted))
	for i, t := range sorted {
		infos[i] = TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	sw, err := NewWriter(w, infos, metadata)
	if err != nil {
		return err
	}
	for i, t := range sorted {
		if int64(len(t.Data)) != sw.tensors[i].End-sw.tensors[i].Begin {
			return fmt.Errorf("tensor %q: %d bytes for a %s shape %v", t.Name, len(t.Data), t.DType, t.Shape)
		}
		if _, err := sw.Write(t.Data); err != nil {
			return fmt.Errorf("write tensor %q: %w", t.Name, err)
		}
	}
	return sw.Close()
}

// FloatTensor builds a tensor of dtype (a float type) from values.
func FloatTensor(name string, dtype DType, shape []int64, values []float64) (Tensor, error) {
	es, err := dtype.Size()
	if err != nil {
		return Tensor{}, err
	}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if n != int64(len(values)) {
		return Tensor{}, fmt.Errorf("tensor %q: %d values for shape %v", name, len(values), shape)
	}
	data := make([]byte, len(values)*es)
	if err := EncodeFloats(dtype, values, data); err != nil {
		return Tensor{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	return Tensor{Name: name, DType: dtype, Shape: shape, Data: data}, nil
}

var errNotFloat = errors.New("dtype is not a float type")
