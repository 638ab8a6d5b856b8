package synth

import "encoding/binary"

// copyHeader starts a PostgreSQL binary COPY stream: signature, flags and
// header-extension length.
var copyHeader = []byte("PGCOPY\n\xff\r\n\x00\x00\x00\x00\x00\x00\x00\x00\x00")

// copyTrailer ends a binary COPY stream.
var copyTrailer = []byte{0xff, 0xff}

const usecPerDay = 86400 * 1_000_000

// enc appends tuples in PostgreSQL's binary COPY format to a buffer.
type enc struct{ b []byte }

func (e *enc) tuple(fields int) { e.b = binary.BigEndian.AppendUint16(e.b, uint16(fields)) }

func (e *enc) null() { e.b = binary.BigEndian.AppendUint32(e.b, 0xffffffff) }

func (e *enc) int4(v int32) {
	e.b = binary.BigEndian.AppendUint32(e.b, 4)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(v))
}

func (e *enc) date(d date) {
	e.b = binary.BigEndian.AppendUint32(e.b, 4)
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(int32(d)))
}

// timestamp writes a timestamp without time zone: d plus minute minutes.
func (e *enc) timestamp(d date, minute int) {
	us := int64(d)*usecPerDay + int64(minute)*60_000_000
	e.b = binary.BigEndian.AppendUint32(e.b, 8)
	e.b = binary.BigEndian.AppendUint64(e.b, uint64(us))
}

func (e *enc) text(s string) {
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(len(s)))
	e.b = append(e.b, s...)
}

// numeric writes the decimal unscaled × 10^-scale (0 ≤ scale ≤ 4) in
// PostgreSQL's binary numeric format: base-10000 digits with a weight,
// sign and display scale.
func (e *enc) numeric(unscaled int64, scale int) {
	var digits [8]uint16
	sign := uint16(0)
	if unscaled < 0 {
		sign = 0x4000
		unscaled = -unscaled
	}
	pow := int64(1)
	for i := 0; i < scale; i++ {
		pow *= 10
	}
	ip, frac := unscaled/pow, unscaled%pow
	for i := scale; i < 4; i++ {
		frac *= 10
	}
	// Integer groups, least significant first, then reversed.
	n := 0
	for v := ip; v > 0; v /= 10000 {
		digits[n] = uint16(v % 10000)
		n++
	}
	for i, j := 0, n-1; i < j; i, j = i+1, j-1 {
		digits[i], digits[j] = digits[j], digits[i]
	}
	weight := n - 1
	if scale > 0 && frac != 0 {
		digits[n] = uint16(frac)
		n++
	}
	if n == 0 {
		weight = 0
	}
	// Leading zero groups (a value below 1) shift the weight down.
	start := 0
	for start < n && digits[start] == 0 {
		start++
		weight--
	}
	end := n
	for end > start && digits[end-1] == 0 {
		end--
	}
	if start == end {
		weight = 0
	}
	nd := end - start
	e.b = binary.BigEndian.AppendUint32(e.b, uint32(8+2*nd))
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(nd))
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(int16(weight)))
	e.b = binary.BigEndian.AppendUint16(e.b, sign)
	e.b = binary.BigEndian.AppendUint16(e.b, uint16(scale))
	for _, d := range digits[start:end] {
		e.b = binary.BigEndian.AppendUint16(e.b, d)
	}
}
