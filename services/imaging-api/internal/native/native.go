// Package native is imaging-api's Orthanc backend: the staging Orthanc
// C-FINDs each accession on the PACS and C-MOVEs the study into itself; the
// importer drives it through Backend, and Fetch lays a staged study out for
// FL jobs the way FLIP's jobs expect it:
// <accession>/scans/<scan>/resources/<RESOURCE>/files/<file>.
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
	"sort"
	"strings"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
)

// Backend adapts the staging Orthanc to importer.Backend.
type Backend struct {
	Orthanc *orthanc.Client
	// PACS is the PACS's name in staging's DicomModalities.
	PACS string
	// StagingAET is staging's own AE title, the C-MOVE destination.
	StagingAET string
	// SharedBy reports whether another project than project still holds the
	// study, so that deleting one project keeps a study another one uses.
	SharedBy func(project, studyUID string) bool
}

// Find C-FINDs accession on the PACS.
func (b *Backend) Find(ctx context.Context, accession string) ([]importer.Match, error) {
	found, err := b.Orthanc.FindStudies(ctx, b.PACS, accession)
	if err != nil {
		return nil, permanentIf(err)
	}
	out := make([]importer.Match, 0, len(found))
	for _, f := range found {
		out = append(out, importer.Match{StudyUID: f.StudyInstanceUID, AccessionNumber: f.AccessionNumber, Instances: f.Instances})
	}
	return out, nil
}

// Move C-MOVEs the study into staging. Orthanc answers once the C-MOVE
// has completed, and reports a failed or partial one as an error; a restart
// re-checks presence before moving again.
func (b *Backend) Move(ctx context.Context, m importer.Match, progress func(int)) error {
	if err := b.Orthanc.MoveStudy(ctx, b.PACS, m.StudyUID, b.StagingAET); err != nil {
		return permanentIf(err)
	}
	if progress != nil {
		progress(max(m.Instances, 1))
	}
	return nil
}

// Present reports whether staging holds the whole study; without the
// PACS's instance count it cannot know, and reports false.
func (b *Backend) Present(ctx context.Context, m importer.Match) (bool, error) {
	local, err := b.Orthanc.LocalStudy(ctx, m.StudyUID)
	if errors.Is(err, orthanc.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	n, err := b.Orthanc.StudyInstanceCount(ctx, local.ID)
	if err != nil {
		return false, err
	}
	if m.Instances > 0 {
		return n >= m.Instances, nil
	}
	// The PACS did not say how many instances the study has, so a partial
	// copy (a move cut short) cannot be told from a whole one: move again,
	// which staging makes harmless by ignoring instances it already holds.
	return false, nil
}

// Remove deletes the staged study unless another project still holds it.
func (b *Backend) Remove(ctx context.Context, m importer.Match) error {
	if b.SharedBy != nil && b.SharedBy(m.Project, m.StudyUID) {
		return nil
	}
	local, err := b.Orthanc.LocalStudy(ctx, m.StudyUID)
	if errors.Is(err, orthanc.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	err = b.Orthanc.DeleteStudy(ctx, local.ID)
	if errors.Is(err, orthanc.ErrNotFound) {
		return nil
	}
	return err
}

// permanentIf marks errors a retry cannot fix (bad input, unknown study or
// target, refused credentials).
func permanentIf(err error) error {
	if errors.Is(err, orthanc.ErrInvalid) || errors.Is(err, orthanc.ErrUnauthorized) {
		return fmt.Errorf("%w: %w", importer.ErrPermanent, err)
	}
	return err
}

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

// Fetch writes the staged study studyUID as a zip in FLIP's layout for an
// FL job: every series becomes a scan; DICOM files go under resources/DICOM,
// NIfTI files converted by dcm2niix under resources/NIFTI (ALL gives both).
// Files uploaded for the accession (uploads holds
// scans/<scan>/resources/<R>/files/<name>; it may be empty or missing) are
// added under their resource when it is the one asked for, or ALL. tmpDir
// holds intermediate files, removed before returning.
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
	work, err := os.MkdirTemp(tmpDir, ".flip-fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	archive := filepath.Join(work, "study.zip")
	if err := download(ctx, oc, local.ID, archive); err != nil {
		return err
	}
	zr, err := zip.OpenReader(archive)
	if err != nil {
		return fmt.Errorf("staging archive: %w", err)
	}
	defer zr.Close()

	scans := scanNames(zr.File)
	zw := zip.NewWriter(w)
	if resource == ResourceDICOM || resource == ResourceALL {
		for _, f := range zr.File {
			if f.FileInfo().IsDir() {
				continue
			}
			name := path.Join(accession, "scans", scans[path.Dir(f.Name)], "resources", ResourceDICOM, "files", path.Base(f.Name))
			if err := copyEntry(zw, f, name); err != nil {
				return err
			}
		}
	}
	if dcm2niix != "" {
		if err := convert(ctx, dcm2niix, zr.File, scans, accession, work, zw); err != nil {
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
	sort.Strings(out)
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

func download(ctx context.Context, oc *orthanc.Client, id, dst string) error {
	rc, err := oc.StudyArchive(ctx, id)
	if err != nil {
		return err
	}
	defer rc.Close()
	f, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, rc); err != nil {
		_ = f.Close()
		return fmt.Errorf("staging archive: %w", err)
	}
	return f.Close()
}

// scanNames names each series folder of Orthanc's archive as a scan: its
// folder name reduced to [A-Za-z0-9._~-], made unique.
func scanNames(files []*zip.File) map[string]string {
	var dirs []string
	seen := map[string]bool{}
	for _, f := range files {
		if f.FileInfo().IsDir() {
			continue
		}
		d := path.Dir(f.Name)
		if !seen[d] {
			seen[d] = true
			dirs = append(dirs, d)
		}
	}
	sort.Strings(dirs)
	out := make(map[string]string, len(dirs))
	used := map[string]bool{}
	for i, d := range dirs {
		name := sanitize(path.Base(d))
		if name == "" || used[name] {
			name = fmt.Sprintf("%s-%d", name, i+1)
			name = strings.TrimPrefix(name, "-")
		}
		used[name] = true
		out[d] = name
	}
	return out
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

func copyEntry(zw *zip.Writer, f *zip.File, name string) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	if err != nil {
		return err
	}
	_, err = io.Copy(w, rc)
	return err
}

// convert runs dcm2niix on every series and adds the .nii.gz (and .json
// sidecar) files under resources/NIFTI.
func convert(ctx context.Context, bin string, files []*zip.File, scans map[string]string, accession, work string, zw *zip.Writer) error {
	bySeries := map[string][]*zip.File{}
	for _, f := range files {
		if !f.FileInfo().IsDir() {
			bySeries[path.Dir(f.Name)] = append(bySeries[path.Dir(f.Name)], f)
		}
	}
	keys := make([]string, 0, len(bySeries))
	for k := range bySeries {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, dir := range keys {
		scan := scans[dir]
		in := filepath.Join(work, "dicom", scan)
		out := filepath.Join(work, "nifti", scan)
		if err := os.MkdirAll(in, 0o700); err != nil {
			return err
		}
		if err := os.MkdirAll(out, 0o700); err != nil {
			return err
		}
		for i, f := range bySeries[dir] {
			if err := extractTo(f, filepath.Join(in, fmt.Sprintf("%06d.dcm", i))); err != nil {
				return err
			}
		}
		cmd := exec.CommandContext(ctx, bin, "-z", "y", "-b", "y", "-f", "input_%s", "-o", out, in)
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
			name := path.Join(accession, "scans", scan, "resources", ResourceNIFTI, "files", e.Name())
			if err := addFile(zw, filepath.Join(out, e.Name()), name); err != nil {
				return err
			}
		}
	}
	return nil
}

func extractTo(f *zip.File, dst string) error {
	rc, err := f.Open()
	if err != nil {
		return err
	}
	defer rc.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, rc); err != nil {
		_ = out.Close()
		return err
	}
	return out.Close()
}

func addFile(zw *zip.Writer, src, name string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
	if err != nil {
		return err
	}
	_, err = io.Copy(w, in)
	return err
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
