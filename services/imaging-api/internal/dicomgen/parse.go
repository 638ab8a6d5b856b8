package dicomgen

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Element is one parsed attribute: its value representation and raw value.
type Element struct {
	VR    string
	Value []byte
}

// String renders the value: text trimmed of padding, US/UL/SS/SL as
// decimal numbers (several joined with a backslash), binary VRs as
// "<n bytes>".
func (e Element) String() string {
	switch e.VR {
	case "US", "SS":
		return joinInts(e.Value, 2, e.VR == "SS")
	case "UL", "SL":
		return joinInts(e.Value, 4, e.VR == "SL")
	}
	if longVRs[e.VR] && e.VR != "UC" && e.VR != "UR" && e.VR != "UT" {
		return fmt.Sprintf("<%d bytes>", len(e.Value))
	}
	return strings.TrimRight(string(e.Value), " \x00")
}

func joinInts(b []byte, size int, signed bool) string {
	var parts []string
	for i := 0; i+size <= len(b); i += size {
		var v int64
		if size == 2 {
			u := binary.LittleEndian.Uint16(b[i:])
			v = int64(u)
			if signed {
				v = int64(int16(u))
			}
		} else {
			u := binary.LittleEndian.Uint32(b[i:])
			v = int64(u)
			if signed {
				v = int64(int32(u))
			}
		}
		parts = append(parts, strconv.FormatInt(v, 10))
	}
	return strings.Join(parts, `\`)
}

// Dataset maps tags to elements, file meta information included.
type Dataset map[Tag]Element

// String is the rendered value of tag t, or "" when absent.
func (d Dataset) String(t Tag) string {
	e, ok := d[t]
	if !ok {
		return ""
	}
	return e.String()
}

// Parse reads a DICOM Part 10 file whose data set is in Explicit VR Little
// Endian without sequences or undefined lengths, as Encode writes them. It
// checks the preamble, the "DICM" prefix, the meta group length, that tags
// ascend and that every length fits the file.
func Parse(data []byte) (Dataset, error) {
	if len(data) < preambleLength+4 || !bytes.Equal(data[preambleLength:preambleLength+4], []byte("DICM")) {
		return nil, errors.New("dicomgen: parse: no DICM prefix after a 128-byte preamble")
	}
	ds := Dataset{}
	pos := preambleLength + 4
	metaEnd := -1
	var last Tag
	first := true
	for pos < len(data) {
		if len(data)-pos < 8 {
			return nil, fmt.Errorf("dicomgen: parse: truncated element header at offset %d", pos)
		}
		t := NewTag(binary.LittleEndian.Uint16(data[pos:]), binary.LittleEndian.Uint16(data[pos+2:]))
		vr := string(data[pos+4 : pos+6])
		if vr[0] < 'A' || vr[0] > 'Z' || vr[1] < 'A' || vr[1] > 'Z' {
			return nil, fmt.Errorf("dicomgen: parse: %v at offset %d has no explicit VR", t, pos)
		}
		var n uint32
		if longVRs[vr] {
			if len(data)-pos < 12 {
				return nil, fmt.Errorf("dicomgen: parse: truncated element header at offset %d", pos)
			}
			n = binary.LittleEndian.Uint32(data[pos+8:])
			pos += 12
		} else {
			n = uint32(binary.LittleEndian.Uint16(data[pos+6:]))
			pos += 8
		}
		if n == undefinedLength || vr == "SQ" {
			return nil, fmt.Errorf("dicomgen: parse: %v: sequences and undefined lengths are not supported", t)
		}
		if uint64(n) > uint64(len(data)-pos) {
			return nil, fmt.Errorf("dicomgen: parse: %v: length %d runs past the end of the file", t, n)
		}
		if !first && t <= last {
			return nil, fmt.Errorf("dicomgen: parse: %v follows %v: tags must ascend", t, last)
		}
		if metaEnd >= 0 && pos > metaEnd && t.Group() == 2 {
			return nil, fmt.Errorf("dicomgen: parse: %v lies outside the meta group length", t)
		}
		first, last = false, t
		ds[t] = Element{VR: vr, Value: data[pos : pos+int(n)]}
		if t == NewTag(2, 0) {
			if vr != "UL" || n != 4 {
				return nil, errors.New("dicomgen: parse: meta group length is not a UL")
			}
			metaEnd = pos + 4 + int(binary.LittleEndian.Uint32(data[pos:]))
			if metaEnd > len(data) {
				return nil, errors.New("dicomgen: parse: meta group length runs past the end of the file")
			}
		}
		pos += int(n)
		if metaEnd >= 0 && pos > metaEnd && t.Group() == 2 {
			return nil, fmt.Errorf("dicomgen: parse: %v ends past the meta group length", t)
		}
	}
	if metaEnd < 0 {
		return nil, errors.New("dicomgen: parse: no file meta group length")
	}
	if ts := ds.String(TagTransferSyntaxUID); ts != ExplicitVRLittleEndian {
		return nil, fmt.Errorf("dicomgen: parse: transfer syntax %q is not Explicit VR Little Endian", ts)
	}
	return ds, nil
}
