package native

import (
	"archive/zip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"sync"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
)

// Resource types an FL job may ask for.
const (
	ResourceDICOM = api.ResourceDICOM
	ResourceNIFTI = api.ResourceNIFTI
	ResourceSEG   = api.ResourceSEG
	ResourceALL   = api.ResourceALL
)

// ErrNoConverter is returned for a NIfTI request when dcm2niix is not installed.
var ErrNoConverter = errors.New("NIfTI conversion needs dcm2niix, which is not installed on this trust node")

// ErrNoResource is returned for a resource the staged study cannot provide.
var ErrNoResource = errors.New("resource not available for this study")

// FetchWindow is how many instance downloads from staging Fetch keeps in
// flight, so that staging looks the next files up while one is streamed.
const FetchWindow = 4

// Fetch writes the staged study studyUID as a zip in FLIP's layout for an
// FL job: every series becomes a scan; DICOM files go under resources/DICOM,
// NIfTI files converted by dcm2niix under resources/NIFTI (ALL gives both).
// The DICOM files are taken from staging as stored, instance by instance
// (several at once), and streamed into the zip without being compressed
// again. Files uploaded for the accession (uploads holds
// scans/<scan>/resources/<R>/files/<name>; it may be empty or missing) are
// added under their resource when it is the one asked for, or ALL. tmpDir
// holds intermediate files for the NIfTI conversion, removed before
// returning.
func Fetch(ctx context.Context, oc *orthanc.Client, studyUID, accession, resource, tmpDir, uploads string, w io.Writer) error {
	extra, err := uploadedFiles(uploads, resource)
	if err != nil {
		return err
	}
	if resource == ResourceSEG {
		if len(extra) == 0 {
			return fmt.Errorf("%w: segmentations are not held in Orthanc staging", ErrNoResource)
		}
		zw := zip.NewWriter(w)
		if err := addUploads(zw, accession, uploads, extra); err != nil {
			return err
		}
		return zw.Close()
	}
	var dcm2niix string
	if resource == ResourceNIFTI || resource == ResourceALL {
		p, err := exec.LookPath("dcm2niix")
		if err != nil {
			return ErrNoConverter
		}
		dcm2niix = p
	}
	local, err := oc.LocalStudy(ctx, studyUID)
	if err != nil {
		return err
	}
	series, err := oc.StudySeries(ctx, local.ID)
	if err != nil {
		return err
	}
	scans := layout(series)
	var files []file
	for _, sc := range scans {
		files = append(files, sc.files...)
	}
	dicomName := func(f file) string {
		return path.Join(accession, "scans", f.scan, "resources", ResourceDICOM, "files", f.name)
	}
	zw := zip.NewWriter(w)
	if dcm2niix == "" {
		err := fetchInstances(ctx, oc, files, func(f file, r io.Reader) error {
			return addEntry(zw, dicomName(f), r)
		})
		if err != nil {
			return err
		}
		if err := addUploads(zw, accession, uploads, extra); err != nil {
			return err
		}
		return zw.Close()
	}

	work, err := os.MkdirTemp(tmpDir, ".flip-fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	onDisk := func(f file) string { return filepath.Join(work, "dicom", f.scan, f.name) }
	for _, sc := range scans {
		if err := os.MkdirAll(filepath.Join(work, "dicom", sc.name), 0o700); err != nil {
			return err
		}
	}
	err = fetchInstances(ctx, oc, files, func(f file, r io.Reader) error {
		return writeFile(onDisk(f), r)
	})
	if err != nil {
		return err
	}
	if resource == ResourceALL {
		for _, f := range files {
			if err := addFile(zw, onDisk(f), dicomName(f)); err != nil {
				return err
			}
		}
	}
	for _, sc := range scans {
		if len(sc.files) == 0 {
			continue
		}
		if err := convert(ctx, dcm2niix, filepath.Join(work, "dicom", sc.name), filepath.Join(work, "nifti", sc.name),
			path.Join(accession, "scans", sc.name, "resources", ResourceNIFTI, "files"), zw); err != nil {
			return err
		}
	}
	if err := addUploads(zw, accession, uploads, extra); err != nil {
		return err
	}
	return zw.Close()
}

// uploadedFiles lists the uploaded files of resource (every resource for
// ALL) under dir, as slash-separated paths relative to it.
func uploadedFiles(dir, resource string) ([]string, error) {
	if dir == "" {
		return nil, nil
	}
	var out []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, os.ErrNotExist) && p == dir {
				return filepath.SkipAll
			}
			return err
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		parts := strings.Split(filepath.ToSlash(rel), "/")
		// scans/<scan>/resources/<R>/files/<name>
		if len(parts) != 6 || parts[0] != "scans" || parts[2] != "resources" || parts[4] != "files" || strings.HasPrefix(parts[5], ".") {
			return nil
		}
		if resource == ResourceALL || strings.EqualFold(parts[3], resource) {
			out = append(out, filepath.ToSlash(rel))
		}
		return nil
	})
	slices.Sort(out)
	return out, err
}

func addUploads(zw *zip.Writer, accession, dir string, files []string) error {
	for _, rel := range files {
		if err := addFile(zw, filepath.Join(dir, filepath.FromSlash(rel)), path.Join(accession, rel)); err != nil {
			return err
		}
	}
	return nil
}

// scan is one series laid out as a scan.
type scan struct {
	name  string
	files []file
}

// file is one instance of a scan.
type file struct {
	id         string // Orthanc's instance ID
	scan, name string
}

// layout names each series as a scan and each of its instances as a file,
// as Orthanc's own archives name their folders and files: the series'
// "Modality SeriesDescription" (in ASCII, "Unknown Series" when both are
// empty) reduced to [A-Za-z0-9._~-] and made unique, and the first two
// letters of the modality followed by the instance's index in the series.
func layout(series []orthanc.Series) []scan {
	type named struct {
		folder string
		s      orthanc.Series
	}
	all := make([]named, 0, len(series))
	for _, s := range series {
		folder := strings.TrimSpace(ascii(s.Modality + " " + s.SeriesDescription))
		if folder == "" {
			folder = "Unknown Series"
		}
		all = append(all, named{folder, s})
	}
	slices.SortFunc(all, func(a, b named) int {
		return strings.Compare(a.folder+"\x00"+a.s.ID, b.folder+"\x00"+b.s.ID)
	})
	out := make([]scan, 0, len(all))
	used := map[string]bool{}
	for i, n := range all {
		name := sanitize(n.folder)
		if name == "" || used[name] {
			name = strings.TrimPrefix(fmt.Sprintf("%s-%d", name, i+1), "-")
		}
		used[name] = true
		sc := scan{name: name}
		prefix := filePrefix(n.s.Modality)
		for j, id := range n.s.Instances {
			sc.files = append(sc.files, file{id: id, scan: name, name: fmt.Sprintf("%s%0*d.dcm", prefix, 8-len(prefix), j)})
		}
		out = append(out, sc)
	}
	return out
}

// ascii keeps the printable ASCII characters of s.
func ascii(s string) string {
	var b strings.Builder
	for _, r := range s {
		if r >= 0x20 && r < 0x7f {
			b.WriteRune(r)
		}
	}
	return b.String()
}

// filePrefix is the first two letters or digits of the modality, in upper
// case.
func filePrefix(modality string) string {
	var b strings.Builder
	for _, r := range strings.ToUpper(modality) {
		if b.Len() == 2 {
			break
		}
		if r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			b.WriteRune(r)
		}
	}
	return b.String()
}

func sanitize(s string) string {
	var b strings.Builder
	for _, r := range s {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '.', r == '_', r == '~', r == '-':
			b.WriteRune(r)
		default:
			b.WriteByte('_')
		}
	}
	return strings.Trim(b.String(), ".")
}

// fetchInstances downloads the files' instances from staging, FetchWindow
// at a time, and hands each body to use in the order of files, one after
// the other. It stops at the first error.
func fetchInstances(ctx context.Context, oc *orthanc.Client, files []file, use func(file, io.Reader) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type result struct {
		body io.ReadCloser
		err  error
	}
	slots := make([]chan result, len(files))
	for i := range slots {
		slots[i] = make(chan result)
	}
	// Downloaders take the files in order; each holds at most one answer
	// until it is used, so at most FetchWindow are open at once.
	next := make(chan int)
	var wg sync.WaitGroup
	wg.Go(func() {
		defer close(next)
		for i := range files {
			select {
			case next <- i:
			case <-ctx.Done():
				return
			}
		}
	})
	for range min(FetchWindow, len(files)) {
		wg.Go(func() {
			for i := range next {
				body, err := oc.InstanceFile(ctx, files[i].id)
				select {
				case slots[i] <- result{body, err}:
				case <-ctx.Done():
					if body != nil {
						_ = body.Close()
					}
				}
			}
		})
	}
	var err error
	for i, f := range files {
		var r result
		select {
		case r = <-slots[i]:
		case <-ctx.Done():
			r.err = ctx.Err()
		}
		if err = r.err; err == nil {
			err = use(f, r.body)
			if cerr := r.body.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			break
		}
	}
	cancel()
	wg.Wait()
	return err
}

// addEntry adds r as the stored (uncompressed) file name.
func addEntry(zw *zip.Writer, name string, r io.Reader) error {
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	if err != nil {
		return err
	}
	_, err = io.Copy(w, r)
	return err
}

func addFile(zw *zip.Writer, src, name string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	return addEntry(zw, name, in)
}

func writeFile(dst string, r io.Reader) error {
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, r); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

// convert runs dcm2niix on one series' DICOM files in dir and adds the
// .nii.gz (and .json sidecar) files it writes under prefix.
func convert(ctx context.Context, bin, dir, out, prefix string, zw *zip.Writer) error {
	if err := os.MkdirAll(out, 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, bin, "-z", "y", "-b", "y", "-f", "input_%s", "-o", out, dir)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("dcm2niix failed on a series: %w (%s)", err, lastLine(string(msg)))
	}
	entries, err := os.ReadDir(out)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		if err := addFile(zw, filepath.Join(out, e.Name()), path.Join(prefix, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
