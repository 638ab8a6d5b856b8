package safetensors

import (
	"encoding/binary"
	"fmt"
	"math"
)

// DecodeFloats converts the little-endian elements in src to dst; len(dst)
// must be len(src) divided by the element size.
func DecodeFloats(dtype DType, src []byte, dst []float64) error {
	es, err := dtype.Size()
	if err != nil {
		return err
	}
	if !dtype.Float() {
		return fmt.Errorf("%s: %w", dtype, errNotFloat)
	}
	if len(src) != len(dst)*es {
		return fmt.Errorf("%d bytes of %s do not make %d values", len(src), dtype, len(dst))
	}
	switch dtype {
	case F64:
		for i := range dst {
			dst[i] = math.Float64frombits(binary.LittleEndian.Uint64(src[8*i:]))
		}
	case F32:
		for i := range dst {
			dst[i] = float64(math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:])))
		}
	case BF16:
		for i := range dst {
			dst[i] = float64(math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16))
		}
	case F16:
		for i := range dst {
			dst[i] = float64(halfToFloat32(binary.LittleEndian.Uint16(src[2*i:])))
		}
	}
	return nil
}

// EncodeFloats converts src to little-endian elements of dtype in dst,
// rounding to nearest even where dtype is narrower than float64.
func EncodeFloats(dtype DType, src []float64, dst []byte) error {
	es, err := dtype.Size()
	if err != nil {
		return err
	}
	if !dtype.Float() {
		return fmt.Errorf("%s: %w", dtype, errNotFloat)
	}
	if len(dst) != len(src)*es {
		return fmt.Errorf("%d values need %d bytes of %s, got %d", len(src), len(src)*es, dtype, len(dst))
	}
	switch dtype {
	case F64:
		for i, v := range src {
			binary.LittleEndian.PutUint64(dst[8*i:], math.Float64bits(v))
		}
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(float32(v)))
		}
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], float32ToBF16(float32(v)))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(dst[2*i:], float32ToHalf(float32(v)))
		}
	}
	return nil
}

func float32ToBF16(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 { // NaN: keep it a quiet NaN
		return uint16(b>>16) | 0x40
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

func halfToFloat32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f: // Inf or NaN
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp == 0:
		if mant == 0 {
			return math.Float32frombits(sign)
		}
		// Subnormal: value = mant · 2^-24.
		v := float32(mant) * (1.0 / (1 << 24))
		if sign != 0 {
			v = -v
		}
		return v
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
}

func float32ToHalf(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff:
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp-127 > 15:
		return sign | 0x7c00 // overflow to infinity
	case exp-127 >= -14:
		// Normal half: round the 23-bit mantissa to 10 bits, nearest even.
		e := uint32(exp - 127 + 15)
		m := mant
		half := uint32(e<<10) | m>>13
		rem := m & 0x1fff
		if rem > 0x1000 || (rem == 0x1000 && half&1 == 1) {
			half++ // may carry into the exponent, which is still correct
		}
		return sign | uint16(half)
	case exp-127 >= -25:
		// Subnormal half: value/2^-24 rounded to nearest even.
		m := mant | 0x800000
		shift := uint32(-(exp - 127) - 14 + 13)
		half := m >> shift
		rem := m & (1<<shift - 1)
		mid := uint32(1) << (shift - 1)
		if rem > mid || (rem == mid && half&1 == 1) {
			half++
		}
		return sign | uint16(half)
	}
	return sign
}
