// Package safetensors reads and writes the safetensors weights format: an
// 8-byte little-endian header length, a JSON header naming each tensor's
// dtype, shape and byte range, optional string metadata under
// "__metadata__", then the tensors' raw little-endian bytes.
//
// Reading validates the whole header before any data is trusted: the byte
// ranges must tile the data section exactly, each range must match its
// dtype and shape, and names must be unique. Files are read through an
// io.ReaderAt, so a tensor of any size can be streamed in blocks.
package safetensors

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sort"
)

// MaxHeaderSize bounds the JSON header a reader accepts.
const MaxHeaderSize = 100 << 20

// ErrFormat marks a file that is not valid safetensors.
var ErrFormat = errors.New("not a valid safetensors file")

// DType is a tensor's element type as the format spells it.
type DType string

// The element types of the format.
const (
	BOOL    DType = "BOOL"
	U8      DType = "U8"
	I8      DType = "I8"
	F8E5M2  DType = "F8_E5M2"
	F8E4M3  DType = "F8_E4M3"
	I16     DType = "I16"
	U16     DType = "U16"
	F16     DType = "F16"
	BF16    DType = "BF16"
	I32     DType = "I32"
	U32     DType = "U32"
	F32     DType = "F32"
	I64     DType = "I64"
	U64     DType = "U64"
	F64     DType = "F64"
	metaKey       = "__metadata__"
)

var dtypeSizes = map[DType]int{
	BOOL: 1, U8: 1, I8: 1, F8E5M2: 1, F8E4M3: 1,
	I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4,
	I64: 8, U64: 8, F64: 8,
}

// Size returns the bytes of one element, or an error for an unknown dtype.
func (d DType) Size() (int, error) {
	n, ok := dtypeSizes[d]
	if !ok {
		return 0, fmt.Errorf("%w: unknown dtype %q", ErrFormat, string(d))
	}
	return n, nil
}

// Float reports whether values of d convert to and from float64 with
// DecodeFloats and EncodeFloats.
func (d DType) Float() bool { return d == F16 || d == BF16 || d == F32 || d == F64 }

// TensorInfo describes one tensor. Begin and End are byte offsets into the
// data section (after the header).
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
	Begin int64
	End   int64
}

// Elements returns the product of the shape (1 for a scalar).
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Header is a file's parsed header: tensors in data order.
type Header struct {
	Tensors   []TensorInfo
	Metadata  map[string]string
	DataStart int64
}

// Tensor returns the tensor named name.
func (h *Header) Tensor(name string) (TensorInfo, bool) {
	for _, t := range h.Tensors {
		if t.Name == name {
			return t, true
		}
	}
	return TensorInfo{}, false
}

type rawTensor struct {
	DType       DType    `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets [2]int64 `json:"data_offsets"`
}

// ReadHeader parses and validates the header of a file of size bytes.
func ReadHeader(r io.ReaderAt, size int64) (*Header, error) {
	var lenBuf [8]byte
	if size < 8 {
		return nil, fmt.Errorf("%w: %d bytes is shorter than the header length", ErrFormat, size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("read header length: %w", err)
	}
	hlen := binary.LittleEndian.Uint64(lenBuf[:])
	if hlen > MaxHeaderSize || int64(hlen) > size-8 {
		return nil, fmt.Errorf("%w: header length %d does not fit a %d-byte file", ErrFormat, hlen, size)
	}
	buf := make([]byte, hlen)
	if _, err := r.ReadAt(buf, 8); err != nil {
		return nil, fmt.Errorf("read header: %w", err)
	}
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(buf, &raw); err != nil {
		return nil, fmt.Errorf("%w: header is not a JSON object: %v", ErrFormat, err)
	}
	h := &Header{DataStart: 8 + int64(hlen)}
	for name, msg := range raw {
		if name == metaKey {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("%w: %s must map strings to strings", ErrFormat, metaKey)
			}
			continue
		}
		var rt rawTensor
		if err := json.Unmarshal(msg, &rt); err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrFormat, name, err)
		}
		h.Tensors = append(h.Tensors, TensorInfo{Name: name, DType: rt.DType, Shape: rt.Shape, Begin: rt.DataOffsets[0], End: rt.DataOffsets[1]})
	}
	if err := h.validate(size - h.DataStart); err != nil {
		return nil, err
	}
	return h, nil
}

// validate checks that the tensors tile [0, dataSize) and match their shapes.
func (h *Header) validate(dataSize int64) error {
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var next int64
	for _, t := range h.Tensors {
		es, err := t.DType.Size()
		if err != nil {
			return fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		n := int64(1)
		for _, d := range t.Shape {
			if d < 0 {
				return fmt.Errorf("%w: tensor %q has a negative dimension", ErrFormat, t.Name)
			}
			if d != 0 && n > math.MaxInt64/d {
				return fmt.Errorf("%w: tensor %q shape overflows", ErrFormat, t.Name)
			}
			n *= d
		}
		if n > math.MaxInt64/int64(es) {
			return fmt.Errorf("%w: tensor %q shape overflows", ErrFormat, t.Name)
		}
		if t.Begin != next {
			return fmt.Errorf("%w: tensor %q starts at %d, expected %d (gap or overlap)", ErrFormat, t.Name, t.Begin, next)
		}
		if t.End-t.Begin != n*int64(es) {
			return fmt.Errorf("%w: tensor %q holds %d bytes, its %s shape %v needs %d", ErrFormat, t.Name, t.End-t.Begin, t.DType, t.Shape, n*int64(es))
		}
		next = t.End
	}
	if next != dataSize {
		return fmt.Errorf("%w: tensors cover %d data bytes, the file has %d", ErrFormat, next, dataSize)
	}
	return nil
}

// File is an open safetensors file.
type File struct {
	Header
	f *os.File
}

// Open opens and validates the file at path.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open weights: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("open weights: %w", err)
	}
	h, err := ReadHeader(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &File{Header: *h, f: f}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Section returns a reader over t's bytes.
func (f *File) Section(t TensorInfo) *io.SectionReader {
	return io.NewSectionReader(f.f, f.DataStart+t.Begin, t.End-t.Begin)
}

// Floats reads the whole tensor named name as float64 values.
func (f *File) Floats(name string) ([]float64, error) {
	t, ok := f.Tensor(name)
	if !ok {
		return nil, fmt.Errorf("tensor %q not in the weights", name)
	}
	if !t.DType.Float() {
		return nil, fmt.Errorf("tensor %q is %s, not a float type", name, t.DType)
	}
	buf := make([]byte, t.End-t.Begin)
	if _, err := io.ReadFull(f.Section(t), buf); err != nil {
		return nil, fmt.Errorf("read tensor %q: %w", name, err)
	}
	out := make([]float64, t.Elements())
	if err := DecodeFloats(t.DType, buf, out); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return out, nil
}
