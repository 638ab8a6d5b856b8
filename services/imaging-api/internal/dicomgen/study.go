// Package dicomgen writes small synthetic DICOM Part 10 files (CT, MR, CR,
// DX and US images with 16-bit MONOCHROME2 pixels) and uploads them to an
// Orthanc server. The files are deterministic: the same Study description
// always yields byte-identical instances with the same UIDs, so a loader can
// be re-run without creating duplicates.
//
// Files use the Explicit VR Little Endian transfer syntax for both the file
// meta information and the data set. ParseTags reads such files back.
package dicomgen

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// UIDRoot is the root under which every generated UID is built.
const UIDRoot = "1.2.826.0.1.3680043.8.498"

// UID arcs under UIDRoot keep the generated kinds of UID apart from each
// other (and from UIDs made of UIDRoot plus a single number).
const (
	arcStudy    = "1"
	arcSeries   = "2"
	arcInstance = "3"
	arcImpl     = "4"
)

// ImplementationClassUID identifies this writer in the file meta information.
const ImplementationClassUID = UIDRoot + "." + arcImpl + ".1"

// ImplementationVersionName is written to the file meta information.
const ImplementationVersionName = "FLIP_DICOMGEN_1"

// Storage SOP class UIDs of the generated images.
const (
	CTImageStorage = "1.2.840.10008.5.1.4.1.1.2"
	MRImageStorage = "1.2.840.10008.5.1.4.1.1.4"
	CRImageStorage = "1.2.840.10008.5.1.4.1.1.1"
	DXImageStorage = "1.2.840.10008.5.1.4.1.1.1.1"
	USImageStorage = "1.2.840.10008.5.1.4.1.1.6.1"
)

// ExplicitVRLittleEndian is the transfer syntax of the generated files.
const ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"

const (
	defaultRows      = 16
	defaultStudyDate = "20240101"
	defaultStudyTime = "101500"
	defaultBirthDate = "19700101"
	maxImageSide     = 2048
	maxSeries        = 1000
	maxPerSeries     = 10000
)

// Modalities are the modality codes Study accepts, mapped to the Modality
// attribute written and its storage SOP class. "XR" (the OMOP vocabulary's
// plain X-ray code, not a DICOM defined term) is written as DX.
var Modalities = map[string]struct{ Code, SOPClass string }{
	"CT": {"CT", CTImageStorage},
	"MR": {"MR", MRImageStorage},
	"CR": {"CR", CRImageStorage},
	"DX": {"DX", DXImageStorage},
	"XR": {"DX", DXImageStorage},
	"US": {"US", USImageStorage},
}

// Study describes a synthetic study. Zero fields take defaults.
type Study struct {
	// PatientID is required (DICOM LO: up to 64 characters).
	PatientID string
	// PatientName defaults to "SYNTH^" + PatientID.
	PatientName string
	// BirthDate is YYYYMMDD; default 19700101.
	BirthDate string
	// Sex is M, F or O; default O.
	Sex string
	// AccessionNumber is required (DICOM SH: up to 16 characters).
	AccessionNumber string
	// Modality is one of the keys of Modalities (case-insensitive); required.
	Modality string
	// StudyUID defaults to a UID derived from PatientID and AccessionNumber.
	StudyUID string
	// SeriesUIDs optionally fixes the UIDs of the first series; the others
	// are derived from the study UID and the series number.
	SeriesUIDs []string
	// StudyDate is YYYYMMDD; default 20240101.
	StudyDate string
	// Description is the study description; default "Synthetic <modality>".
	Description string
	// Series is the number of series; default 1.
	Series int
	// PerSeries is the number of instances per series; default 1.
	PerSeries int
	// Rows and Cols are the image size; default 16 each, at most 2048.
	Rows, Cols int
}

// Instance is one image of a study with every attribute resolved.
type Instance struct {
	PatientID, PatientName, BirthDate, Sex                            string
	AccessionNumber, StudyUID, StudyDate, StudyTime, StudyDescription string
	// Modality is the DICOM Modality attribute (XR already mapped to DX).
	Modality, SOPClassUID                        string
	SeriesUID, SeriesDescription, SOPInstanceUID string
	SeriesNumber, InstanceNumber, Rows, Cols     int
}

// DeriveUID returns a deterministic UID under UIDRoot for kind (a numeric
// arc) and the given parts: UIDRoot.kind.<decimal of 64 bits of SHA-256>.
func DeriveUID(kind string, parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		_, _ = h.Write([]byte(p))
		_, _ = h.Write([]byte{0})
	}
	n := binary.BigEndian.Uint64(h.Sum(nil)[:8])
	return UIDRoot + "." + kind + "." + strconv.FormatUint(n, 10)
}

// StudyUIDFor returns the default Study Instance UID of a patient's study.
func StudyUIDFor(patientID, accession string) string {
	return DeriveUID(arcStudy, patientID, accession)
}

// Count is the number of instances the study has once defaults apply.
func (s Study) Count() int {
	return orDefault(s.Series, 1) * orDefault(s.PerSeries, 1)
}

// Instances validates the study and returns its instances, series by
// series, in instance-number order.
func (s Study) Instances() ([]Instance, error) {
	base, err := s.resolve()
	if err != nil {
		return nil, err
	}
	series, per := orDefault(s.Series, 1), orDefault(s.PerSeries, 1)
	out := make([]Instance, 0, series*per)
	for se := 1; se <= series; se++ {
		seriesUID := DeriveUID(arcSeries, base.StudyUID, strconv.Itoa(se))
		if se <= len(s.SeriesUIDs) {
			seriesUID = s.SeriesUIDs[se-1]
		}
		for in := 1; in <= per; in++ {
			inst := base
			inst.SeriesNumber, inst.InstanceNumber = se, in
			inst.SeriesUID = seriesUID
			inst.SeriesDescription = fmt.Sprintf("%s series %d", inst.Modality, se)
			inst.SOPInstanceUID = DeriveUID(arcInstance, seriesUID, strconv.Itoa(in))
			out = append(out, inst)
		}
	}
	return out, nil
}

// resolve applies defaults and validates the study-level attributes.
func (s Study) resolve() (Instance, error) {
	var errs []error
	check := func(field string, err error) {
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", field, err))
		}
	}
	m, ok := Modalities[strings.ToUpper(s.Modality)]
	if !ok {
		errs = append(errs, fmt.Errorf("modality %q is not one of CT, MR, CR, DX, XR, US", s.Modality))
	}
	inst := Instance{
		PatientID:        s.PatientID,
		PatientName:      orString(s.PatientName, "SYNTH^"+s.PatientID),
		BirthDate:        orString(s.BirthDate, defaultBirthDate),
		Sex:              orString(s.Sex, "O"),
		AccessionNumber:  s.AccessionNumber,
		StudyUID:         orString(s.StudyUID, StudyUIDFor(s.PatientID, s.AccessionNumber)),
		StudyDate:        orString(s.StudyDate, defaultStudyDate),
		StudyTime:        defaultStudyTime,
		Modality:         m.Code,
		SOPClassUID:      m.SOPClass,
		StudyDescription: orString(s.Description, "Synthetic "+m.Code),
		Rows:             orDefault(s.Rows, defaultRows),
		Cols:             orDefault(s.Cols, defaultRows),
	}
	if s.PatientID == "" {
		errs = append(errs, errors.New("patient ID is required"))
	}
	if s.AccessionNumber == "" {
		errs = append(errs, errors.New("accession number is required"))
	}
	check("patient ID", checkText(inst.PatientID, 64))
	check("patient name", checkText(inst.PatientName, 64))
	check("accession number", checkText(inst.AccessionNumber, 16))
	check("study description", checkText(inst.StudyDescription, 64))
	check("birth date", checkDate(inst.BirthDate))
	check("study date", checkDate(inst.StudyDate))
	check("study UID", CheckUID(inst.StudyUID))
	for i, u := range s.SeriesUIDs {
		check(fmt.Sprintf("series UID %d", i+1), CheckUID(u))
	}
	if inst.Sex != "M" && inst.Sex != "F" && inst.Sex != "O" {
		errs = append(errs, fmt.Errorf("sex %q is not M, F or O", inst.Sex))
	}
	if s.Series < 0 || s.Series > maxSeries || s.PerSeries < 0 || s.PerSeries > maxPerSeries {
		errs = append(errs, fmt.Errorf("%d series of %d instances: want 1..%d series of 1..%d", s.Series, s.PerSeries, maxSeries, maxPerSeries))
	}
	if s.Rows < 0 || s.Cols < 0 || inst.Rows > maxImageSide || inst.Cols > maxImageSide {
		errs = append(errs, fmt.Errorf("image size %dx%d: want 1..%d on each side", s.Rows, s.Cols, maxImageSide))
	}
	if len(errs) > 0 {
		return Instance{}, fmt.Errorf("dicomgen: invalid study: %w", errors.Join(errs...))
	}
	return inst, nil
}

// CheckUID reports whether u is a well-formed DICOM UID: at most 64
// characters, dot-separated numeric components without leading zeros.
func CheckUID(u string) error {
	if u == "" || len(u) > 64 {
		return fmt.Errorf("UID of length %d: want 1..64", len(u))
	}
	for comp := range strings.SplitSeq(u, ".") {
		if comp == "" || (len(comp) > 1 && comp[0] == '0') {
			return errors.New("UID has an empty or zero-padded component")
		}
		for _, c := range comp {
			if c < '0' || c > '9' {
				return errors.New("UID has a character other than digits and dots")
			}
		}
	}
	return nil
}

// checkText accepts printable ASCII without backslashes (the value
// separator) up to max characters.
func checkText(v string, max int) error {
	if len(v) > max {
		return fmt.Errorf("%d characters, at most %d allowed", len(v), max)
	}
	for _, c := range []byte(v) {
		if c < 0x20 || c > 0x7e || c == '\\' {
			return fmt.Errorf("character %q not allowed", c)
		}
	}
	return nil
}

func checkDate(v string) error {
	if len(v) != 8 {
		return fmt.Errorf("%q is not YYYYMMDD", v)
	}
	for _, c := range []byte(v) {
		if c < '0' || c > '9' {
			return fmt.Errorf("%q is not YYYYMMDD", v)
		}
	}
	return nil
}

func orDefault(v, d int) int {
	if v == 0 {
		return d
	}
	return v
}

func orString(v, d string) string {
	if v == "" {
		return d
	}
	return v
}
