package dicomgen_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
)

var (
	pairOnce sync.Once
	pair     *orthanctest.Pair
	pairErr  error
)

// orthanc returns the PACS of the package's shared Orthanc pair, emptied.
func orthanc(t *testing.T) *orthanctest.Server {
	t.Helper()
	pairOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		pair, pairErr = orthanctest.StartPair(ctx)
	})
	if pairErr != nil {
		t.Fatal(pairErr)
	}
	if err := pair.PACS.Clear(t.Context()); err != nil {
		t.Fatal(err)
	}
	return pair.PACS
}

func TestMain(m *testing.M) {
	code := m.Run()
	if pair != nil {
		pair.Close()
	}
	os.Exit(code)
}

// dcmdump parses the file without errors or warnings and returns its dump.
func dcmdump(t *testing.T, data []byte) string {
	t.Helper()
	bin, err := exec.LookPath("dcmdump")
	if err != nil {
		t.Fatalf("dcmdump not found (install dcmtk: make deps): %v", err)
	}
	path := filepath.Join(t.TempDir(), "f.dcm")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(t.Context(), bin, "-M", "+L", path)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || stderr.Len() > 0 {
		t.Fatalf("dcmdump: %v: %s", err, stderr.String())
	}
	return stdout.String()
}

// Each modality yields a file dcmdump reads cleanly with the expected
// attributes, which Parse reads back too.
func TestEncodeModalities(t *testing.T) {
	cases := []struct {
		modality, code, sopClass string
		rows, cols               int
	}{
		{"CT", "CT", dicomgen.CTImageStorage, 0, 0},
		{"MR", "MR", dicomgen.MRImageStorage, 64, 64},
		{"CR", "CR", dicomgen.CRImageStorage, 16, 32},
		{"DX", "DX", dicomgen.DXImageStorage, 0, 0},
		{"xr", "DX", dicomgen.DXImageStorage, 0, 0},
		{"US", "US", dicomgen.USImageStorage, 31, 17},
	}
	for _, c := range cases {
		t.Run(c.modality, func(t *testing.T) {
			s := dicomgen.Study{PatientID: "PAT-7", AccessionNumber: "ACC0000000042", Modality: c.modality,
				Sex: "F", BirthDate: "19561231", StudyDate: "20230415", Series: 2, PerSeries: 3, Rows: c.rows, Cols: c.cols}
			insts, err := s.Instances()
			if err != nil {
				t.Fatal(err)
			}
			if len(insts) != 6 || s.Count() != 6 {
				t.Fatalf("%d instances, Count %d; want 6", len(insts), s.Count())
			}
			last := insts[len(insts)-1]
			data, err := dicomgen.Encode(last)
			if err != nil {
				t.Fatal(err)
			}
			rows, cols := max(c.rows, 16), max(c.cols, 16)
			dump := dcmdump(t, data)
			for _, want := range []string{
				"(0002,0010) UI =LittleEndianExplicit",
				"(0008,0016) UI =" + map[string]string{"CT": "CTImageStorage", "MR": "MRImageStorage",
					"CR": "ComputedRadiographyImageStorage", "DX": "DigitalXRayImageStorageForPresentation",
					"US": "UltrasoundImageStorage"}[c.code],
				"(0008,0050) SH [ACC0000000042]",
				"(0008,0060) CS [" + c.code + "]",
				"(0010,0010) PN [SYNTH^PAT-7]",
				"(0010,0020) LO [PAT-7]",
				"(0010,0030) DA [19561231]",
				"(0010,0040) CS [F]",
				"(0008,0020) DA [20230415]",
				"(0020,000d) UI [" + last.StudyUID + "]",
				"(0020,0011) IS [2]",
				"(0020,0013) IS [3]",
				"(0028,0004) CS [MONOCHROME2]",
				fmt.Sprintf("(0028,0010) US %d", rows),
				fmt.Sprintf("(0028,0011) US %d", cols),
				"(0028,0100) US 16",
				fmt.Sprintf("# %d, 1 PixelData", rows*cols*2),
			} {
				if !strings.Contains(dump, want) {
					t.Errorf("dump lacks %q", want)
				}
			}
			ds, err := dicomgen.Parse(data)
			if err != nil {
				t.Fatal(err)
			}
			checks := map[dicomgen.Tag]string{
				dicomgen.TagSOPClassUID: c.sopClass, dicomgen.TagSOPInstanceUID: last.SOPInstanceUID,
				dicomgen.TagModality: c.code, dicomgen.TagAccessionNumber: "ACC0000000042",
				dicomgen.TagSeriesInstanceUID: last.SeriesUID, dicomgen.TagRows: fmt.Sprint(rows),
				dicomgen.TagColumns: fmt.Sprint(cols), dicomgen.TagBitsAllocated: "16",
				dicomgen.NewTag(2, 3): last.SOPInstanceUID, dicomgen.NewTag(2, 2): c.sopClass,
			}
			for tag, want := range checks {
				if got := ds.String(tag); got != want {
					t.Errorf("%v = %q, want %q", tag, got, want)
				}
			}
			if px := ds[dicomgen.TagPixelData]; px.VR != "OW" || len(px.Value) != rows*cols*2 {
				t.Errorf("pixel data %s of %d bytes, want OW of %d", px.VR, len(px.Value), rows*cols*2)
			} else if max16(px.Value) >= 1<<12 || max16(px.Value) == 0 {
				t.Errorf("pixel maximum %d, want 1..4095", max16(px.Value))
			}
		})
	}
}

func max16(b []byte) uint16 {
	var m uint16
	for i := 0; i+1 < len(b); i += 2 {
		m = max(m, binary.LittleEndian.Uint16(b[i:]))
	}
	return m
}

// UIDs are valid, unique within and across studies, stable across runs, and
// explicit study and series UIDs are kept.
func TestUIDs(t *testing.T) {
	a := dicomgen.Study{PatientID: "1", AccessionNumber: "A1", Modality: "MR", Series: 3, PerSeries: 4}
	b := dicomgen.Study{PatientID: "1", AccessionNumber: "A2", Modality: "MR", Series: 3, PerSeries: 4}
	seen := map[string]string{}
	for _, s := range []dicomgen.Study{a, b} {
		insts, err := s.Instances()
		if err != nil {
			t.Fatal(err)
		}
		again, _ := s.Instances()
		if !slices.Equal(insts, again) {
			t.Fatal("Instances is not deterministic")
		}
		for i, in := range insts {
			for _, u := range []string{in.SOPInstanceUID, in.SeriesUID, in.StudyUID} {
				if err := dicomgen.CheckUID(u); err != nil || !strings.HasPrefix(u, dicomgen.UIDRoot+".") {
					t.Errorf("UID %q: %v", u, err)
				}
			}
			if prev, dup := seen[in.SOPInstanceUID]; dup {
				t.Errorf("SOP instance UID %s repeats (%s)", in.SOPInstanceUID, prev)
			}
			seen[in.SOPInstanceUID] = fmt.Sprintf("%s/%d", s.AccessionNumber, i)
			if want := (i / 4) + 1; in.SeriesNumber != want || in.InstanceNumber != i%4+1 {
				t.Errorf("instance %d numbered %d/%d", i, in.SeriesNumber, in.InstanceNumber)
			}
		}
		if insts[0].SeriesUID == insts[4].SeriesUID || insts[0].StudyUID != insts[11].StudyUID {
			t.Error("series UIDs repeat across series or study UID varies")
		}
		x, _ := dicomgen.Encode(insts[5])
		y, _ := dicomgen.Encode(again[5])
		if !bytes.Equal(x, y) {
			t.Error("Encode is not deterministic")
		}
	}
	ia, _ := a.Instances()
	ib, _ := b.Instances()
	if ia[0].StudyUID == ib[0].StudyUID {
		t.Error("two accessions share a study UID")
	}
	fixed := dicomgen.Study{PatientID: "9", AccessionNumber: "A9", Modality: "CT", Series: 2,
		StudyUID: dicomgen.UIDRoot + ".77", SeriesUIDs: []string{dicomgen.UIDRoot + ".77.1"}}
	insts, err := fixed.Instances()
	if err != nil {
		t.Fatal(err)
	}
	if insts[0].StudyUID != dicomgen.UIDRoot+".77" || insts[0].SeriesUID != dicomgen.UIDRoot+".77.1" ||
		insts[1].SeriesUID == insts[0].SeriesUID || dicomgen.CheckUID(insts[1].SeriesUID) != nil {
		t.Errorf("explicit UIDs not honoured: %+v", insts)
	}
}

func TestStudyValidation(t *testing.T) {
	ok := dicomgen.Study{PatientID: "P", AccessionNumber: "A", Modality: "CT"}
	cases := []struct {
		name string
		edit func(*dicomgen.Study)
		want string
	}{
		{"no patient", func(s *dicomgen.Study) { s.PatientID = "" }, "patient ID is required"},
		{"no accession", func(s *dicomgen.Study) { s.AccessionNumber = "" }, "accession number is required"},
		{"long accession", func(s *dicomgen.Study) { s.AccessionNumber = strings.Repeat("9", 17) }, "accession number"},
		{"backslash", func(s *dicomgen.Study) { s.PatientID = `a\b` }, "patient ID"},
		{"non-ASCII name", func(s *dicomgen.Study) { s.PatientName = "Zoë" }, "patient name"},
		{"modality", func(s *dicomgen.Study) { s.Modality = "PET" }, "modality"},
		{"sex", func(s *dicomgen.Study) { s.Sex = "X" }, "sex"},
		{"date", func(s *dicomgen.Study) { s.StudyDate = "2024-01-01" }, "study date"},
		{"study UID", func(s *dicomgen.Study) { s.StudyUID = "1.02.3" }, "study UID"},
		{"long study UID", func(s *dicomgen.Study) { s.StudyUID = "1." + strings.Repeat("2", 63) }, "study UID"},
		{"series UID", func(s *dicomgen.Study) { s.SeriesUIDs = []string{"1.2.x"} }, "series UID 1"},
		{"negative series", func(s *dicomgen.Study) { s.Series = -1 }, "series"},
		{"huge image", func(s *dicomgen.Study) { s.Rows = 4096 }, "image size"},
	}
	if _, err := ok.Instances(); err != nil {
		t.Fatalf("valid study rejected: %v", err)
	}
	for _, c := range cases {
		s := ok
		c.edit(&s)
		_, err := s.Instances()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
	insts, _ := ok.Instances()
	bad := insts[0]
	bad.SOPInstanceUID = ""
	if _, err := dicomgen.Encode(bad); err == nil {
		t.Error("Encode accepted an instance without SOP instance UID")
	}
}

func TestParseRejectsMalformed(t *testing.T) {
	insts, _ := dicomgen.Study{PatientID: "P", AccessionNumber: "A", Modality: "US"}.Instances()
	good, err := dicomgen.Encode(insts[0])
	if err != nil {
		t.Fatal(err)
	}
	swapped := slices.Clone(good)
	// Give the first data set element (after the meta group) the tag of the
	// pixel data, so that the next tag no longer ascends.
	metaLen := int(binary.LittleEndian.Uint32(good[140:]))
	first := 144 + metaLen
	binary.LittleEndian.PutUint16(swapped[first:], 0x7FE0)
	cases := map[string][]byte{
		"empty":            nil,
		"no DICM":          append(make([]byte, 128), []byte("DICX")...),
		"truncated":        good[:len(good)-10],
		"descending tags":  swapped,
		"header cut short": good[:first+3],
	}
	for name, data := range cases {
		if _, err := dicomgen.Parse(data); err == nil {
			t.Errorf("%s: parsed without error", name)
		}
	}
}

// Uploaded instances read back from Orthanc with the written attributes and
// decodable pixels; a repeated upload is recognised as already stored.
func TestUploadToOrthanc(t *testing.T) {
	srv := orthanc(t)
	ctx := t.Context()
	s := dicomgen.Study{PatientID: "UP1", AccessionNumber: "ACCUP1", Modality: "CT", Series: 1, PerSeries: 2, Rows: 64, Cols: 64}
	insts, err := s.Instances()
	if err != nil {
		t.Fatal(err)
	}
	data, err := dicomgen.Encode(insts[1])
	if err != nil {
		t.Fatal(err)
	}
	up := &dicomgen.Uploader{URL: srv.URL, User: srv.User, Password: srv.Password}
	st, err := up.Upload(ctx, data)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != "Success" || st.ID == "" || st.ParentStudy == "" {
		t.Fatalf("upload answer %+v", st)
	}
	var tags map[string]any
	if err := srv.Do(ctx, http.MethodGet, "/instances/"+st.ID+"/simplified-tags", nil, &tags); err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"PatientID": "UP1", "PatientName": "SYNTH^UP1", "AccessionNumber": "ACCUP1",
		"Modality": "CT", "SOPClassUID": dicomgen.CTImageStorage, "SOPInstanceUID": insts[1].SOPInstanceUID,
		"StudyInstanceUID": insts[1].StudyUID, "SeriesInstanceUID": insts[1].SeriesUID, "InstanceNumber": "2",
		"Rows": "64", "Columns": "64", "PatientSex": "O", "PatientBirthDate": "19700101"}
	for k, v := range want {
		if tags[k] != v {
			t.Errorf("%s = %v, want %q", k, tags[k], v)
		}
	}
	// The preview renders only when Orthanc can decode the pixel data.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/instances/"+st.ID+"/preview", nil)
	req.SetBasicAuth(srv.User, srv.Password)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != "image/png" {
		t.Errorf("preview: %s %s", resp.Status, resp.Header.Get("Content-Type"))
	}
	if again, err := up.Upload(ctx, data); err != nil || again.Status != "AlreadyStored" || again.ID != st.ID {
		t.Errorf("second upload: %+v, %v", again, err)
	}
	if err := dicomgen.Upload(ctx, srv.URL, srv.User, "wrong", data); err == nil || !strings.Contains(err.Error(), "401") {
		t.Errorf("upload with a wrong password: %v", err)
	}
	if _, err := up.Upload(ctx, []byte("not dicom")); err == nil {
		t.Error("Orthanc accepted a non-DICOM upload")
	}
}

// The bulk helper uploads every instance of every study, reports progress
// and stops at the first invalid study.
func TestUploadStudies(t *testing.T) {
	srv := orthanc(t)
	ctx := t.Context()
	var studies []dicomgen.Study
	for i := range 4 {
		studies = append(studies, dicomgen.Study{PatientID: fmt.Sprintf("BULK%d", i), AccessionNumber: fmt.Sprintf("ACCB%d", i),
			Modality: []string{"CT", "MR", "XR", "US"}[i], Series: 2, PerSeries: 3})
	}
	up := &dicomgen.Uploader{URL: srv.URL, User: srv.User, Password: srv.Password}
	var calls int
	var last dicomgen.Progress
	got, err := up.UploadStudies(ctx, slices.Values(studies), 3, func(p dicomgen.Progress) { calls++; last = p })
	if err != nil {
		t.Fatal(err)
	}
	if got.Studies != 4 || got.Instances != 24 || got.AlreadyStored != 0 || got.Bytes < 24*512 || calls != 24 || last != got {
		t.Errorf("progress %+v after %d calls (last %+v)", got, calls, last)
	}
	for _, s := range studies {
		var found []string
		if err := srv.Do(ctx, http.MethodPost, "/tools/find", map[string]any{"Level": "Instance",
			"Query": map[string]string{"AccessionNumber": s.AccessionNumber}}, &found); err != nil {
			t.Fatal(err)
		}
		if len(found) != 6 {
			t.Errorf("%s: %d instances in Orthanc, want 6", s.AccessionNumber, len(found))
		}
	}
	again, err := up.UploadStudies(ctx, slices.Values(studies[:1]), 2, nil)
	if err != nil || again.AlreadyStored != 6 || again.Studies != 1 {
		t.Errorf("re-upload: %+v, %v", again, err)
	}
	bad := append([]dicomgen.Study{studies[0]}, dicomgen.Study{PatientID: "X", Modality: "CT"})
	if _, err := up.UploadStudies(ctx, slices.Values(bad), 2, nil); err == nil || !strings.Contains(err.Error(), "accession") {
		t.Errorf("invalid study: %v", err)
	}
	wrong := &dicomgen.Uploader{URL: srv.URL, User: srv.User, Password: "wrong"}
	if p, err := wrong.UploadStudies(ctx, slices.Values(studies), 4, nil); err == nil || p.Instances != 0 {
		t.Errorf("wrong password: %+v, %v", p, err)
	}
}
