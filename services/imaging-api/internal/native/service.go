package native

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/projects"
)

// Service is the native backend of the routes (api.Backend): projects and
// users in the project registry, imports through the importer into the
// staging Orthanc, and files uploaded by FL jobs under UploadDir.
type Service struct {
	Projects *projects.Store
	Importer *importer.Importer
	Orthanc  *orthanc.Client
	// PACS is the PACS's name in staging's DicomModalities; StagingAET is
	// staging's own AE title.
	PACS, StagingAET string
	// UploadDir holds uploaded files as
	// <project>/<accession>/scans/<scan>/resources/<R>/files/<name>.
	UploadDir string
}

var _ api.Backend = (*Service)(nil)

func projectOf(p projects.Project) api.Project {
	d := p.Description
	return api.Project{SecondaryID: p.HubProjectID, Name: p.Name, Description: &d, ID: p.ID, URI: "/data/projects/" + p.ID}
}

func registryError(err error) error {
	if errors.Is(err, projects.ErrNotFound) {
		return api.Mark(err, api.ErrNotFound)
	}
	return err
}

// ListProjects lists the registry's projects, oldest first.
func (s *Service) ListProjects(context.Context) ([]api.Project, error) {
	list, err := s.Projects.List()
	if err != nil {
		return nil, err
	}
	out := make([]api.Project, 0, len(list))
	for _, p := range list {
		out = append(out, projectOf(p))
	}
	return out, nil
}

// Project returns one project.
func (s *Service) Project(_ context.Context, id string) (api.Project, error) {
	p, err := s.Projects.Get(id)
	return projectOf(p), registryError(err)
}

// Provision records the hub project's imaging project once and its enabled
// users; the native backend has no accounts to create.
func (s *Service) Provision(_ context.Context, in api.CentralHubProject) (api.Provisioned, error) {
	users := make([]projects.User, 0, len(in.Users))
	for _, u := range in.Users {
		users = append(users, projects.User(u))
	}
	p, created, err := s.Projects.Provision(in.ProjectID, projects.Project{
		Name:          fmt.Sprintf("%s:%s-FL-Project", in.ProjectName, in.ProjectID),
		Description:   "Project corresponding to central hub project " + in.ProjectID,
		Query:         in.Query,
		Users:         users,
		DicomToNifti:  in.ToNifti(),
		CohortPending: true,
	})
	if err != nil {
		return api.Provisioned{}, err
	}
	added := make([]api.User, 0, len(in.Users))
	for _, u := range in.Users {
		if u.IsDisabled {
			continue
		}
		acc, err := s.Projects.RecordUser(u.Email, true)
		if err != nil {
			return api.Provisioned{}, err
		}
		added = append(added, userOf(acc))
	}
	return api.Provisioned{
		Answer:  api.CreatedProject{ID: p.ID, Name: p.Name, CreatedUsers: []api.CreatedUser{}, AddedUsers: added},
		Project: projectOf(p), Created: created,
	}, nil
}

// Import queues the accessions in the importer and records the project's
// cohort as queued.
func (s *Service) Import(_ context.Context, projectID string, accessions []string) error {
	if err := s.Importer.Enqueue(projectID, accessions); err != nil {
		return err
	}
	if err := s.Projects.CohortQueued(projectID); err != nil && !errors.Is(err, projects.ErrNotFound) {
		return fmt.Errorf("cohort queued but not recorded as such (it is queued again at the next start): %w", err)
	}
	return nil
}

// PendingCohorts lists the projects whose cohort is not queued yet.
func (s *Service) PendingCohorts(context.Context) ([]api.PendingCohort, error) {
	list, err := s.Projects.List()
	if err != nil {
		return nil, err
	}
	var out []api.PendingCohort
	for _, p := range list {
		if p.CohortPending {
			out = append(out, api.PendingCohort{ProjectID: p.ID, HubProjectID: p.HubProjectID, Query: p.Query})
		}
	}
	return out, nil
}

// QueueImport queues the studies' accessions for the project. The importer
// finds each study again by its accession number, keeping the exact match.
func (s *Service) QueueImport(_ context.Context, req api.ImportStudyRequest) ([]api.ImportStudyResponse, error) {
	if _, err := s.Projects.Get(req.ProjectID); err != nil {
		return nil, registryError(err)
	}
	accs := make([]string, 0, len(req.Studies))
	for _, st := range req.Studies {
		accs = append(accs, st.AccessionNumber)
	}
	if err := s.Importer.Enqueue(req.ProjectID, accs); err != nil {
		return nil, err
	}
	out := make([]api.ImportStudyResponse, 0, len(accs))
	for _, acc := range accs {
		rec, ok, err := s.Importer.Lookup(req.ProjectID, acc)
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		status := "QUEUED"
		switch rec.State {
		case importer.StateImported:
			status = "COMPLETED"
		case importer.StateMoving:
			status = "ISSUED"
		case importer.StateFailed, importer.StateQueueFailed:
			status = "FAILED"
		}
		out = append(out, api.ImportStudyResponse{ID: int64(rec.Seq), PacsID: 1, Status: status, AccessionNumber: acc,
			QueuedTime: rec.EnqueuedAt.UnixMilli(), Created: rec.EnqueuedAt.UnixMilli()})
	}
	return out, nil
}

// DeleteProject removes the project's staged studies, import records,
// uploads and registry entry.
func (s *Service) DeleteProject(ctx context.Context, id string) (api.Project, error) {
	p, err := s.Projects.Get(id)
	if err != nil {
		return api.Project{}, registryError(err)
	}
	if err := s.Importer.DeleteProject(ctx, p.ID); err != nil {
		return api.Project{}, fmt.Errorf("staged studies not all removed: %w", err)
	}
	if s.UploadDir != "" {
		if err := os.RemoveAll(filepath.Join(s.UploadDir, p.ID)); err != nil {
			return api.Project{}, fmt.Errorf("uploaded files not removed: %w", err)
		}
	}
	if _, err := s.Projects.Delete(p.ID); err != nil && !errors.Is(err, projects.ErrNotFound) {
		return api.Project{}, err
	}
	return projectOf(p), nil
}

// Ping C-ECHOes the PACS. The native backend has one PACS: id 1, or its
// modality name.
func (s *Service) Ping(ctx context.Context, pacsID string) (api.PacsStatus, error) {
	if pacsID != "" && pacsID != "1" && pacsID != s.PACS {
		return api.PacsStatus{}, api.Mark(fmt.Errorf("no PACS %q", pacsID), api.ErrNotFound)
	}
	start := time.Now()
	err := s.Orthanc.Echo(ctx, s.PACS)
	if errors.Is(err, orthanc.ErrUnauthorized) || errors.Is(err, orthanc.ErrUnavailable) {
		return api.PacsStatus{}, api.Mark(err, api.ErrUnavailable)
	}
	now := time.Now().UnixMilli()
	return api.PacsStatus{PacsID: 1, Successful: err == nil, PingTime: time.Since(start).Milliseconds(), Created: now,
		Enabled: true, Timestamp: now, ID: 1}, nil
}

// Query C-FINDs the accession on the PACS, keeping exact matches.
func (s *Service) Query(ctx context.Context, accession string) ([]api.Study, error) {
	if !importer.ValidAccession(accession) {
		return nil, api.Mark(errors.New("accession_number: invalid"), api.ErrInvalid)
	}
	found, err := s.Orthanc.FindStudies(ctx, s.PACS, accession)
	if err != nil {
		return nil, pacsError(err)
	}
	out := make([]api.Study, 0, len(found))
	for _, f := range orthanc.SelectExact(found, accession) {
		mods := []string{}
		if f.ModalitiesInStudy != "" {
			mods = strings.Split(f.ModalitiesInStudy, `\`)
		}
		out = append(out, api.Study{StudyInstanceUID: f.StudyInstanceUID, AccessionNumber: f.AccessionNumber,
			StudyDate: f.StudyDate, ModalitiesInStudy: mods, Patient: api.Patient{ID: f.PatientID}})
	}
	return out, nil
}

func pacsError(err error) error {
	switch {
	case errors.Is(err, orthanc.ErrPACSUnreachable):
		return api.Mark(err, api.ErrPACSUnreachable)
	case errors.Is(err, orthanc.ErrUnavailable):
		return api.Mark(err, api.ErrUnavailable)
	}
	return err
}

// ImportStatus counts the cohort's accessions from the import records.
func (s *Service) ImportStatus(_ context.Context, projectID string, accessions []string) (api.ImportCounts, error) {
	c, err := s.Importer.Status(projectID, accessions)
	return api.ImportCounts(c), err
}

// Reimport queues accessions new to the cohort and retries the failed ones.
func (s *Service) Reimport(_ context.Context, projectID string, accessions []string) (int, error) {
	if err := s.Importer.Enqueue(projectID, accessions); err != nil {
		return 0, err
	}
	return s.Importer.Reimport(projectID)
}

// imported returns the project of a hub project and the record of one of
// its imported accessions.
func (s *Service) imported(hubID, accession string) (projects.Project, importer.Record, error) {
	p, err := s.Projects.ByHub(hubID)
	if err != nil {
		return p, importer.Record{}, registryError(fmt.Errorf("no imaging project for this central hub project: %w", err))
	}
	rec, ok, err := s.Importer.Lookup(p.ID, accession)
	if err != nil {
		return p, rec, err
	}
	if !ok || rec.State != importer.StateImported {
		return p, rec, api.Mark(errors.New("the accession is not imported for this project"), api.ErrNotFound)
	}
	return p, rec, nil
}

// Fetch writes an imported accession in FLIP's layout, with its uploads.
func (s *Service) Fetch(ctx context.Context, req api.FetchRequest, w io.Writer) error {
	p, rec, err := s.imported(req.HubProjectID, req.Accession)
	if err != nil {
		return err
	}
	if req.Assessor == "assessor" {
		//lint:ignore ST1005 the text is the detail callers see, worded as FLIP words it
		return api.Mark(errors.New("Orthanc staging holds no assessors"), api.ErrNotFound)
	}
	uploads := ""
	if s.UploadDir != "" {
		uploads = filepath.Join(s.UploadDir, p.ID, req.Accession)
	}
	err = Fetch(ctx, s.Orthanc, rec.StudyUID, req.Accession, req.Resource, req.TmpDir, uploads, w)
	switch {
	case errors.Is(err, ErrNoConverter):
		return api.Mark(err, api.ErrUnsupported)
	case errors.Is(err, ErrNoResource), errors.Is(err, orthanc.ErrNotFound):
		return api.Mark(err, api.ErrNotFound)
	case errors.Is(err, orthanc.ErrUnavailable):
		return api.Mark(err, api.ErrUnavailable)
	}
	return err
}

// Upload stores the files as resource req.Resource of scan req.Scan of an
// imported accession. Without ExistOK nothing is written if any file is
// already there; each file lands whole (written aside, synced, renamed).
func (s *Service) Upload(_ context.Context, req api.UploadRequest) ([]string, error) {
	if s.UploadDir == "" {
		return nil, api.Mark(errors.New("uploads are not configured"), api.ErrUnsupported)
	}
	p, _, err := s.imported(req.HubProjectID, req.Accession)
	if err != nil {
		return nil, err
	}
	rel := filepath.Join(req.Accession, "scans", req.Scan, "resources", req.Resource, "files")
	dir := filepath.Join(s.UploadDir, p.ID, rel)
	if !req.ExistOK {
		for _, f := range req.Files {
			if _, err := os.Lstat(filepath.Join(dir, f.Name)); err == nil {
				return nil, api.Mark(fmt.Errorf("file %s already exists in resource %s of scan %s", f.Name, req.Resource, req.Scan), api.ErrExists)
			}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	out := make([]string, 0, len(req.Files))
	for _, f := range req.Files {
		if err := copyFileAtomic(f.Path, filepath.Join(dir, f.Name)); err != nil {
			return out, err
		}
		out = append(out, "/data/projects/"+p.ID+"/experiments/"+filepath.ToSlash(filepath.Join(rel, f.Name)))
	}
	return out, nil
}

func copyFileAtomic(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp, err := os.CreateTemp(filepath.Dir(dst), ".upload-")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := io.Copy(tmp, in); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		_ = tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), dst)
}

func userOf(a projects.Account) api.User {
	name := a.Email
	if i := strings.IndexByte(a.Email, '@'); i > 0 {
		name = a.Email[:i]
	}
	mod := a.LastModified.UnixMilli()
	return api.User{LastModified: &mod, Username: name, Enabled: a.Enabled, ID: a.ID, Email: a.Email, FirstName: name, LastName: name}
}

// Users lists the hub users this node was told about.
func (s *Service) Users(context.Context) ([]api.User, error) {
	list, err := s.Projects.Users()
	if err != nil {
		return nil, err
	}
	out := make([]api.User, 0, len(list))
	for _, a := range list {
		out = append(out, userOf(a))
	}
	return out, nil
}

// SetUserEnabled records the user's enabled flag (update_user_profile).
func (s *Service) SetUserEnabled(_ context.Context, email string, enabled bool) (api.User, error) {
	a, err := s.Projects.RecordUser(email, enabled)
	return userOf(a), err
}
