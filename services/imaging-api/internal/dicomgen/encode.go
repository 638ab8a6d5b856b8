package dicomgen

import (
	"encoding/binary"
	"fmt"
	"strconv"
)

// Tag is a DICOM attribute tag: group in the high 16 bits, element in the
// low 16 bits.
type Tag uint32

// NewTag builds a tag from its group and element numbers.
func NewTag(group, element uint16) Tag { return Tag(uint32(group)<<16 | uint32(element)) }

// Group is the tag's group number.
func (t Tag) Group() uint16 { return uint16(t >> 16) }

// Element is the tag's element number.
func (t Tag) Element() uint16 { return uint16(t) }

// String formats the tag as (gggg,eeee).
func (t Tag) String() string { return fmt.Sprintf("(%04X,%04X)", t.Group(), t.Element()) }

// Tags of the attributes the generator writes that callers commonly read back.
const (
	TagTransferSyntaxUID Tag = 0x00020010
	TagSOPClassUID       Tag = 0x00080016
	TagSOPInstanceUID    Tag = 0x00080018
	TagStudyDate         Tag = 0x00080020
	TagAccessionNumber   Tag = 0x00080050
	TagModality          Tag = 0x00080060
	TagPatientName       Tag = 0x00100010
	TagPatientID         Tag = 0x00100020
	TagPatientBirthDate  Tag = 0x00100030
	TagPatientSex        Tag = 0x00100040
	TagStudyInstanceUID  Tag = 0x0020000D
	TagSeriesInstanceUID Tag = 0x0020000E
	TagSeriesNumber      Tag = 0x00200011
	TagInstanceNumber    Tag = 0x00200013
	TagRows              Tag = 0x00280010
	TagColumns           Tag = 0x00280011
	TagBitsAllocated     Tag = 0x00280100
	TagPhotometric       Tag = 0x00280004
	TagPixelData         Tag = 0x7FE00010
)

const (
	arcFrameOfReference        = "5"
	bitsStored                 = 12
	manufacturer               = "FLIP synthetic"
	fileMetaInformationVersion = "\x00\x01"
	preambleLength             = 128
	undefinedLength            = 0xFFFFFFFF
)

// longVRs use the 4-byte length form in explicit VR encoding.
var longVRs = map[string]bool{"OB": true, "OD": true, "OF": true, "OL": true, "OV": true, "OW": true,
	"SQ": true, "SV": true, "UC": true, "UN": true, "UR": true, "UT": true, "UV": true}

// encoder appends explicit VR little endian elements; callers add them in
// ascending tag order.
type encoder struct{ b []byte }

func (e *encoder) header(t Tag, vr string, n int) {
	e.b = binary.LittleEndian.AppendUint16(e.b, t.Group())
	e.b = binary.LittleEndian.AppendUint16(e.b, t.Element())
	e.b = append(e.b, vr...)
	if longVRs[vr] {
		e.b = append(e.b, 0, 0)
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(n))
	} else {
		e.b = binary.LittleEndian.AppendUint16(e.b, uint16(n))
	}
}

// str writes a text element padded to even length (UIDs with NUL, other
// VRs with a space).
func (e *encoder) str(t Tag, vr, v string) {
	n := len(v)
	pad := n%2 == 1
	if pad {
		n++
	}
	e.header(t, vr, n)
	e.b = append(e.b, v...)
	if pad {
		if vr == "UI" {
			e.b = append(e.b, 0)
		} else {
			e.b = append(e.b, ' ')
		}
	}
}

func (e *encoder) us(t Tag, v uint16) {
	e.header(t, "US", 2)
	e.b = binary.LittleEndian.AppendUint16(e.b, v)
}

func (e *encoder) raw(t Tag, vr string, v []byte) {
	e.header(t, vr, len(v))
	e.b = append(e.b, v...)
}

// Encode returns inst as a DICOM Part 10 file. Instances from
// Study.Instances are valid; others are checked for the attributes the
// writer needs.
func Encode(inst Instance) ([]byte, error) {
	if err := inst.check(); err != nil {
		return nil, err
	}
	volume := inst.Modality == "CT" || inst.Modality == "MR"

	var meta encoder
	meta.raw(NewTag(2, 1), "OB", []byte(fileMetaInformationVersion))
	meta.str(NewTag(2, 2), "UI", inst.SOPClassUID)
	meta.str(NewTag(2, 3), "UI", inst.SOPInstanceUID)
	meta.str(TagTransferSyntaxUID, "UI", ExplicitVRLittleEndian)
	meta.str(NewTag(2, 0x12), "UI", ImplementationClassUID)
	meta.str(NewTag(2, 0x13), "SH", ImplementationVersionName)

	pixels := pixelData(inst)
	e := encoder{b: make([]byte, 0, preambleLength+4+12+len(meta.b)+1024+len(pixels))}
	e.b = append(e.b, make([]byte, preambleLength)...)
	e.b = append(e.b, "DICM"...)
	e.header(NewTag(2, 0), "UL", 4)
	e.b = binary.LittleEndian.AppendUint32(e.b, uint32(len(meta.b)))
	e.b = append(e.b, meta.b...)

	if volume {
		e.str(NewTag(8, 8), "CS", `ORIGINAL\PRIMARY\AXIAL`)
	} else {
		e.str(NewTag(8, 8), "CS", `ORIGINAL\PRIMARY`)
	}
	e.str(TagSOPClassUID, "UI", inst.SOPClassUID)
	e.str(TagSOPInstanceUID, "UI", inst.SOPInstanceUID)
	e.str(TagStudyDate, "DA", inst.StudyDate)
	e.str(NewTag(8, 0x21), "DA", inst.StudyDate)
	e.str(NewTag(8, 0x30), "TM", inst.StudyTime)
	e.str(TagAccessionNumber, "SH", inst.AccessionNumber)
	e.str(TagModality, "CS", inst.Modality)
	e.str(NewTag(8, 0x70), "LO", manufacturer)
	e.str(NewTag(8, 0x90), "PN", "")
	e.str(NewTag(8, 0x1030), "LO", inst.StudyDescription)
	e.str(NewTag(8, 0x103E), "LO", inst.SeriesDescription)
	e.str(TagPatientName, "PN", inst.PatientName)
	e.str(TagPatientID, "LO", inst.PatientID)
	e.str(TagPatientBirthDate, "DA", inst.BirthDate)
	e.str(TagPatientSex, "CS", inst.Sex)
	if volume {
		e.str(NewTag(0x18, 0x50), "DS", "1")
	}
	if inst.Modality == "CT" {
		e.str(NewTag(0x18, 0x60), "DS", "120")
	}
	e.str(TagStudyInstanceUID, "UI", inst.StudyUID)
	e.str(TagSeriesInstanceUID, "UI", inst.SeriesUID)
	e.str(NewTag(0x20, 0x10), "SH", "1")
	e.str(TagSeriesNumber, "IS", strconv.Itoa(inst.SeriesNumber))
	e.str(TagInstanceNumber, "IS", strconv.Itoa(inst.InstanceNumber))
	z := strconv.Itoa(inst.InstanceNumber - 1)
	if volume {
		e.str(NewTag(0x20, 0x32), "DS", `0\0\`+z)
		e.str(NewTag(0x20, 0x37), "DS", `1\0\0\0\1\0`)
		e.str(NewTag(0x20, 0x52), "UI", DeriveUID(arcFrameOfReference, inst.SeriesUID))
		e.str(NewTag(0x20, 0x1041), "DS", z)
	} else {
		e.str(NewTag(0x20, 0x20), "CS", "")
	}
	e.us(NewTag(0x28, 2), 1)
	e.str(TagPhotometric, "CS", "MONOCHROME2")
	e.us(TagRows, uint16(inst.Rows))
	e.us(TagColumns, uint16(inst.Cols))
	if volume {
		e.str(NewTag(0x28, 0x30), "DS", `1\1`)
	}
	e.us(TagBitsAllocated, 16)
	e.us(NewTag(0x28, 0x101), bitsStored)
	e.us(NewTag(0x28, 0x102), bitsStored-1)
	e.us(NewTag(0x28, 0x103), 0)
	if inst.Modality == "CT" {
		e.str(NewTag(0x28, 0x1050), "DS", "40")
		e.str(NewTag(0x28, 0x1051), "DS", "400")
		e.str(NewTag(0x28, 0x1052), "DS", "-1024")
		e.str(NewTag(0x28, 0x1053), "DS", "1")
	} else {
		e.str(NewTag(0x28, 0x1050), "DS", "2048")
		e.str(NewTag(0x28, 0x1051), "DS", "4096")
	}
	e.raw(TagPixelData, "OW", pixels)
	return e.b, nil
}

// check validates the attributes Encode relies on.
func (inst Instance) check() error {
	for _, u := range []string{inst.SOPClassUID, inst.SOPInstanceUID, inst.StudyUID, inst.SeriesUID} {
		if err := CheckUID(u); err != nil {
			return fmt.Errorf("dicomgen: encode: %w", err)
		}
	}
	fields := []struct {
		name, v string
		max     int
	}{
		{"patient ID", inst.PatientID, 64}, {"patient name", inst.PatientName, 64},
		{"accession number", inst.AccessionNumber, 16}, {"modality", inst.Modality, 16},
		{"sex", inst.Sex, 16}, {"study description", inst.StudyDescription, 64},
		{"series description", inst.SeriesDescription, 64}, {"study time", inst.StudyTime, 16},
	}
	for _, f := range fields {
		if err := checkText(f.v, f.max); err != nil {
			return fmt.Errorf("dicomgen: encode: %s: %w", f.name, err)
		}
	}
	for _, d := range []string{inst.StudyDate, inst.BirthDate} {
		if err := checkDate(d); err != nil {
			return fmt.Errorf("dicomgen: encode: %w", err)
		}
	}
	if inst.Rows < 1 || inst.Cols < 1 || inst.Rows > maxImageSide || inst.Cols > maxImageSide {
		return fmt.Errorf("dicomgen: encode: image size %dx%d: want 1..%d on each side", inst.Rows, inst.Cols, maxImageSide)
	}
	if inst.SeriesNumber < 0 || inst.InstanceNumber < 0 {
		return fmt.Errorf("dicomgen: encode: negative series or instance number")
	}
	return nil
}

// pixelData draws a disc whose radius changes with the instance number on a
// textured background: 16-bit little endian words, 12 bits used.
func pixelData(inst Instance) []byte {
	rows, cols, n := inst.Rows, inst.Cols, inst.InstanceNumber
	out := make([]byte, 0, rows*cols*2)
	cx, cy := cols/2, rows/2
	r := min(rows, cols) / 2 * (40 + (n*7)%50) / 100
	for y := range rows {
		for x := range cols {
			v := 24 + ((x+y+n)%8)*4
			if dx, dy := x-cx, y-cy; dx*dx+dy*dy <= r*r {
				v = 1064 + (x*y+inst.SeriesNumber*97)%64
			}
			out = binary.LittleEndian.AppendUint16(out, uint16(v))
		}
	}
	return out
}
