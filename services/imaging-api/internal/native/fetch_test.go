package native

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/dicomgen"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanctest"
)

func TestLayout(t *testing.T) {
	ids := func(n int, p string) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s%02d", p, i))
		}
		return out
	}
	scans := layout([]orthanc.Series{
		{ID: "b", Modality: "MR", SeriesDescription: "T1 axial", Instances: ids(2, "b")},
		{ID: "a", Modality: "MR", SeriesDescription: "T1 axial", Instances: ids(1, "a")},
		{ID: "c", Modality: "CT", SeriesDescription: "Têt/e ", Instances: ids(1, "c")},
		{ID: "d", Instances: ids(1, "d")},
		{ID: "e", Modality: "m", SeriesDescription: "..", Instances: ids(1, "e")},
	})
	var got []string
	for _, sc := range scans {
		for _, f := range sc.files {
			got = append(got, f.id+" "+f.scan+"/"+f.name)
		}
	}
	want := []string{
		"c00 CT_Tt_e/CT000000.dcm",        // non-ASCII dropped, other characters replaced
		"a00 MR_T1_axial/MR000000.dcm",    // same folder name: ordered by series ID ...
		"b00 MR_T1_axial-3/MR000000.dcm",  // ... and the second one made unique
		"b01 MR_T1_axial-3/MR000001.dcm",  //
		"d00 Unknown_Series/00000000.dcm", // neither modality nor description
		"e00 m_/M0000000.dcm",             // a one-letter modality; dots trimmed
	}
	if !slices.Equal(got, want) {
		t.Errorf("layout:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// Fetch lays a staged study out with the same scan and file names, and the
// same bytes, as when it was derived from Orthanc's archive of the study.
func TestFetchMatchesArchive(t *testing.T) {
	ctx := t.Context()
	pair, err := orthanctest.StartPair(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(pair.Close)
	study := dicomgen.Study{PatientID: "PF1", AccessionNumber: "ACCFETCH1", Modality: "MR", Series: 3, PerSeries: 4}
	up := &dicomgen.Uploader{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password}
	if _, err := up.UploadStudies(ctx, slices.Values([]dicomgen.Study{study}), 2, nil); err != nil {
		t.Fatal(err)
	}
	oc, err := orthanc.New(orthanc.Config{URL: pair.Staging.URL, User: pair.Staging.User, Password: pair.Staging.Password})
	if err != nil {
		t.Fatal(err)
	}
	uid := dicomgen.StudyUIDFor(study.PatientID, study.AccessionNumber)
	var buf bytes.Buffer
	if err := Fetch(ctx, oc, uid, "ACCFETCH1", ResourceDICOM, t.TempDir(), "", &buf); err != nil {
		t.Fatal(err)
	}
	got := entries(t, buf.Bytes(), func(name string) string { return name })

	local, err := oc.LocalStudy(ctx, uid)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := oc.StudyArchive(ctx, local.ID)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(rc)
	_ = rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	// The names the archive gave: each series folder reduced to a scan
	// name, each file keeping its name.
	want := entries(t, raw, func(name string) string {
		return path.Join("ACCFETCH1", "scans", sanitize(path.Base(path.Dir(name))), "resources", "DICOM", "files", path.Base(name))
	})
	if len(got) != 12 || !maps.Equal(got, want) {
		t.Errorf("fetched %v,\nthe archive gives %v", slices.Sorted(maps.Keys(got)), slices.Sorted(maps.Keys(want)))
	}

	// ALL: the same DICOM files, and one NIfTI volume per series.
	if _, err := exec.LookPath("dcm2niix"); err != nil {
		t.Skip("dcm2niix is not installed")
	}
	buf.Reset()
	if err := Fetch(ctx, oc, uid, "ACCFETCH1", ResourceALL, t.TempDir(), "", &buf); err != nil {
		t.Fatal(err)
	}
	all := entries(t, buf.Bytes(), func(name string) string { return name })
	volumes := 0
	for name, data := range all {
		switch {
		case strings.Contains(name, "/resources/NIFTI/files/") && strings.HasSuffix(name, ".nii.gz"):
			volumes++
		case strings.Contains(name, "/resources/DICOM/files/"):
			if want[name] != data {
				t.Errorf("ALL: %s differs from the DICOM download", name)
			}
			delete(want, name)
		}
	}
	if volumes != 3 || len(want) != 0 {
		t.Errorf("ALL: %d NIfTI volumes, want 3; DICOM files missing: %v", volumes, slices.Sorted(maps.Keys(want)))
	}
}

// entries reads a zip's regular files, by name as rename gives it.
func entries(t *testing.T, data []byte, rename func(string) string) map[string]string {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range zr.File {
		if f.FileInfo().IsDir() {
			continue
		}
		r, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(r)
		_ = r.Close()
		if err != nil {
			t.Fatal(err)
		}
		out[rename(f.Name)] = string(b)
	}
	return out
}

// A file staging cannot serve fails the whole fetch promptly, with no more
// than FetchWindow downloads open at any time.
func TestFetchFailsOnAMissingInstance(t *testing.T) {
	const n = 40
	var (
		mu          sync.Mutex
		open, peak  int
		instanceIDs []string
	)
	for i := range n {
		instanceIDs = append(instanceIDs, fmt.Sprintf("%08x-0000", i))
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/tools/find":
			_ = json.NewEncoder(w).Encode([]map[string]any{{"ID": "aaaa", "MainDicomTags": map[string]string{"StudyInstanceUID": "1.2.3"}}})
		case r.URL.Path == "/studies/aaaa/series":
			_ = json.NewEncoder(w).Encode([]map[string]any{{"ID": "bbbb", "MainDicomTags": map[string]string{"Modality": "CT"},
				"Instances": instanceIDs}})
		case strings.HasPrefix(r.URL.Path, "/instances/"):
			mu.Lock()
			open++
			peak = max(peak, open)
			mu.Unlock()
			defer func() {
				mu.Lock()
				open--
				mu.Unlock()
			}()
			time.Sleep(2 * time.Millisecond)
			if r.URL.Path == "/instances/"+instanceIDs[25]+"/file" {
				http.Error(w, "{}", http.StatusNotFound)
				return
			}
			_, _ = w.Write(bytes.Repeat([]byte{1}, 1000))
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	oc, err := orthanc.New(orthanc.Config{URL: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	err = Fetch(ctx, oc, "1.2.3", "ACC", ResourceDICOM, t.TempDir(), "", io.Discard)
	if !errors.Is(err, orthanc.ErrNotFound) {
		t.Fatalf("Fetch = %v, want the missing instance's ErrNotFound", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if peak > FetchWindow {
		t.Errorf("%d downloads open at once, want at most %d", peak, FetchWindow)
	}
}
