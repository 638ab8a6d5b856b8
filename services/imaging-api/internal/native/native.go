// Package native is imaging-api's Orthanc backend: the staging Orthanc
// C-FINDs each accession on the PACS and C-MOVEs the study into itself; the
// importer drives it through Backend, and Fetch lays a staged study out for
// FL jobs the way FLIP's jobs expect it:
// <accession>/scans/<scan>/resources/<RESOURCE>/files/<file>.
package native

import (
	"context"
	"errors"
	"fmt"

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
