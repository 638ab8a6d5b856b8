// Package xnatbackend is imaging-api's XNAT backend of the routes
// (api.Backend), FLIP-compatible: projects, users and conversion
// subscriptions live in XNAT; XNAT's DQR plugin C-FINDs and C-MOVEs studies
// from the PACS into its DICOM receiver; import status comes from XNAT's
// experiments and DQR tables; FL downloads and uploads go through XNAT's
// REST API.
package xnatbackend

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/google/uuid"

	"github.com/flip-trust/node/services/imaging-api/internal/api"
	"github.com/flip-trust/node/services/imaging-api/internal/xnat"
	"github.com/flip-trust/node/shared/envelope"
)

// SetupPathContext is the envelope context of a new user's encrypted
// "set your password" path.
const SetupPathContext = "xnat_setup_path"

// DefaultDcm2niixImage is the Container Service image of the DICOM to NIfTI
// command (DCM2NIIX_IMAGE).
const DefaultDcm2niixImage = "ghcr.io/londonaicentre/xnat-dcm2niix:v1.0.20260724"

// Backend serves the routes from XNAT.
type Backend struct {
	client *xnat.Client
	cipher *envelope.Cipher
	image  string
	conc   int
	log    *slog.Logger
	// provision serialises provisioning so one hub project gets one XNAT
	// project and each user one account.
	provision sync.Mutex
}

// Options configure New.
type Options struct {
	Client *xnat.Client
	// Cipher seals new users' setup paths.
	Cipher *envelope.Cipher
	// Dcm2niixImage names the conversion command (DefaultDcm2niixImage).
	Dcm2niixImage string
	// QueryConcurrency bounds the PACS queries of one import (4).
	QueryConcurrency int
	Logger           *slog.Logger
}

// New returns the backend.
func New(o Options) *Backend {
	if o.Dcm2niixImage == "" {
		o.Dcm2niixImage = DefaultDcm2niixImage
	}
	if o.QueryConcurrency <= 0 {
		o.QueryConcurrency = 4
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return &Backend{client: o.Client, cipher: o.Cipher, image: o.Dcm2niixImage, conc: o.QueryConcurrency, log: o.Logger}
}

var _ api.Backend = (*Backend)(nil)

// storeError marks XNAT's errors with the routes' sentinels.
func storeError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, xnat.ErrNotFound):
		return api.Mark(err, api.ErrNotFound)
	case errors.Is(err, xnat.ErrAlreadyExists):
		return api.Mark(err, api.ErrExists)
	case errors.Is(err, xnat.ErrInvalidSegment):
		return api.Mark(err, api.ErrInvalid)
	case errors.Is(err, xnat.ErrPACSUnreachable), errors.Is(err, xnat.ErrPACSDisabled):
		return api.Mark(err, api.ErrPACSUnreachable)
	case errors.Is(err, xnat.ErrUnavailable):
		return api.Mark(err, api.ErrUnavailable)
	}
	return err
}

func projectOf(p xnat.Project) api.Project {
	d := p.Description
	return api.Project{PIFirstname: p.PIFirstname, SecondaryID: p.SecondaryID, PILastname: p.PILastname, Name: p.Name,
		Description: &d, ID: p.ID, URI: p.URI}
}

func userOf(u xnat.User) api.User { return api.User(u) }

// ListProjects lists XNAT's projects.
func (b *Backend) ListProjects(ctx context.Context) ([]api.Project, error) {
	ps, err := b.client.ListProjects(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]api.Project, 0, len(ps))
	for _, p := range ps {
		out = append(out, projectOf(p))
	}
	return out, nil
}

// Project returns one XNAT project.
func (b *Backend) Project(ctx context.Context, id string) (api.Project, error) {
	p, err := b.client.GetProject(ctx, id)
	return projectOf(p), storeError(err)
}

// Provision creates the hub project's XNAT project (a fresh UUID, the hub
// id as secondary id) with auto-archiving and the DICOM to NIfTI
// subscription, or returns the one it already has; then provisions the hub
// users. A project created here whose configuration fails is deleted
// again, so a retry starts clean.
func (b *Backend) Provision(ctx context.Context, in api.CentralHubProject) (api.Provisioned, error) {
	b.provision.Lock()
	defer b.provision.Unlock()
	p, created, err := b.client.EnsureProject(ctx, xnat.NewProject{
		ID:          uuid.NewString(),
		SecondaryID: in.ProjectID,
		Name:        fmt.Sprintf("%s:%s-FL-Project", in.ProjectName, in.ProjectID),
		Description: "Project corresponding to central hub project " + in.ProjectID,
	})
	if err != nil {
		return api.Provisioned{}, storeError(err)
	}
	if created {
		if err := b.configure(ctx, p.ID, in.ToNifti()); err != nil {
			if _, derr := b.client.DeleteProject(context.WithoutCancel(ctx), p.ID); derr != nil {
				b.log.Error("a half-configured project could not be removed", "project", p.ID, "error", derr.Error())
			}
			return api.Provisioned{}, storeError(err)
		}
	}
	answer := api.CreatedProject{ID: p.ID, Name: p.Name, CreatedUsers: []api.CreatedUser{}, AddedUsers: []api.User{}}
	if err := b.addUsers(ctx, p.ID, in.Users, &answer); err != nil {
		return api.Provisioned{}, storeError(err)
	}
	return api.Provisioned{Answer: answer, Project: projectOf(p), Created: created}, nil
}

// configure sets a new project to archive what it receives and subscribes
// it to the DICOM to NIfTI command (inactive when conversion is off).
func (b *Backend) configure(ctx context.Context, project string, toNifti bool) error {
	if err := b.client.SetPrearchiveCode(ctx, project, xnat.PrearchiveAutoArchive); err != nil {
		return err
	}
	cmd, err := b.client.FindCommand(ctx, b.image)
	if err != nil {
		return err
	}
	return b.client.SubscribeConversion(ctx, project, cmd, toNifti)
}

// addUsers gives each enabled hub user an XNAT account (created with a
// random password they never see) and project membership. A user new to
// XNAT, or one who never logged in, gets a fresh invitation (an encrypted
// setup path) in created_users; the others are listed in added_users.
func (b *Backend) addUsers(ctx context.Context, project string, users []api.HubUser, out *api.CreatedProject) error {
	var taken map[string]bool
	for _, hu := range users {
		if hu.IsDisabled {
			continue
		}
		u, err := b.client.UserByEmail(ctx, hu.Email)
		isNew := false
		if errors.Is(err, xnat.ErrNotFound) {
			if taken == nil {
				all, err := b.client.ListUsers(ctx)
				if err != nil {
					return err
				}
				taken = make(map[string]bool, len(all))
				for _, x := range all {
					taken[x.Username] = true
				}
			}
			name := xnat.UsernameFor(hu.Email, taken)
			taken[name] = true
			u, err = b.client.CreateUser(ctx, xnat.NewUser{Username: name, Password: randomPassword(), Email: hu.Email,
				FirstName: name, LastName: name, Enabled: true})
			isNew = true
		}
		if err != nil {
			return err
		}
		if _, err := b.client.AddUserToProject(ctx, u.Username, project, xnat.RoleMembers); err != nil {
			return err
		}
		if !isNew && u.LastSuccessfulLogin != nil {
			out.AddedUsers = append(out.AddedUsers, userOf(u))
			continue
		}
		tok, err := b.client.IssueAliasToken(ctx, u.Username)
		if err != nil {
			return err
		}
		sealed, err := b.cipher.Seal([]byte(tok.SetupPath()), SetupPathContext)
		if err != nil {
			return err
		}
		out.CreatedUsers = append(out.CreatedUsers, api.CreatedUser{Username: u.Username, EncryptedSetupPath: sealed, Email: u.Email})
	}
	return nil
}

func randomPassword() string {
	// Two random UUIDs: 244 random bits, letters, digits and dashes, with
	// an upper-case prefix for password rules that ask for one.
	return "Fp-" + uuid.NewString() + strings.ToUpper(uuid.NewString()[:8])
}

// select1 returns the one PACS study whose accession number is accession
// exactly; none or several is ok false.
func select1(studies []xnat.Study, accession string) (xnat.Study, bool) {
	var out []xnat.Study
	for _, s := range studies {
		if s.AccessionNumber == accession {
			out = append(out, s)
		}
	}
	if len(out) != 1 {
		return xnat.Study{}, false
	}
	return out[0], true
}

// Import finds each accession on the PACS through DQR (exactly one study
// with that accession number, else it is skipped and reported queue_failed)
// and queues one DQR import of the studies found. DQR then owns the
// retrieval and its retries; its tables report progress.
func (b *Backend) Import(ctx context.Context, projectID string, accessions []string) error {
	type found struct {
		study xnat.Study
		ok    bool
	}
	results := make([]found, len(accessions))
	var skipped, failed int
	var mu sync.Mutex
	sem := make(chan struct{}, b.conc)
	var wg sync.WaitGroup
	for i, acc := range accessions {
		if !xnat.ValidSegment(acc) {
			mu.Lock()
			skipped++
			mu.Unlock()
			continue
		}
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			studies, err := b.client.QueryStudies(ctx, acc)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failed++
				b.log.Warn("PACS query failed; accession skipped", "error_type", fmt.Sprintf("%T", err), "status", xnat.StatusCode(err))
				return
			}
			s, ok := select1(studies, acc)
			if !ok {
				skipped++
				return
			}
			results[i] = found{s, true}
		}()
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return err
	}
	var studies []xnat.ImportStudy
	for _, r := range results {
		if r.ok {
			studies = append(studies, xnat.NewImportStudy(r.study.StudyInstanceUID, r.study.AccessionNumber))
		}
	}
	b.log.Info("PACS queried", "project", projectID, "found", len(studies), "skipped", skipped, "query_failed", failed)
	if len(studies) == 0 {
		return nil
	}
	resp, err := b.client.QueueImport(ctx, xnat.NewImportRequest(projectID, studies...))
	if err != nil && !errors.Is(err, xnat.ErrStudiesMissing) {
		return storeError(err)
	}
	notQueued := 0
	for _, r := range resp {
		if r.Status != xnat.StatusQueued {
			notQueued++
		}
	}
	if notQueued > 0 || err != nil {
		b.log.Warn("DQR did not queue every study", "project", projectID, "requested", len(studies), "answered", len(resp), "not_queued", notQueued)
	}
	return nil
}

// PendingCohorts is empty: the XNAT backend keeps no state of its own. A
// cohort lost to a stop between provisioning and queueing shows as
// queue_failed, and the hub's reimport queues it.
func (b *Backend) PendingCohorts(context.Context) ([]api.PendingCohort, error) { return nil, nil }

// QueueImport passes the request to DQR.
func (b *Backend) QueueImport(ctx context.Context, req api.ImportStudyRequest) ([]api.ImportStudyResponse, error) {
	x := xnat.ImportRequest{AETitle: req.AETitle, ProjectID: req.ProjectID, ForceImport: req.ForceImport == nil || *req.ForceImport}
	if req.Port != nil {
		x.Port = *req.Port
	}
	// The PACS id is always the one XNAT has registered (FLIP#993).
	for _, s := range req.Studies {
		x.Studies = append(x.Studies, xnat.NewImportStudy(s.StudyInstanceUID, s.AccessionNumber))
	}
	resp, err := b.client.QueueImport(ctx, x)
	if err != nil && !(errors.Is(err, xnat.ErrStudiesMissing) && len(resp) > 0) {
		if errors.Is(err, xnat.ErrNoStudies) {
			return nil, api.Mark(err, api.ErrInvalid)
		}
		return nil, storeError(err)
	}
	out := make([]api.ImportStudyResponse, 0, len(resp))
	for _, r := range resp {
		out = append(out, api.ImportStudyResponse(r))
	}
	return out, nil
}

// DeleteProject deletes the XNAT project with its files and its queued DQR
// requests.
func (b *Backend) DeleteProject(ctx context.Context, id string) (api.Project, error) {
	p, err := b.client.DeleteProject(ctx, id)
	return projectOf(p), storeError(err)
}

// Ping pings a PACS registered in XNAT (the resolved one when pacsID is
// empty).
func (b *Backend) Ping(ctx context.Context, pacsID string) (api.PacsStatus, error) {
	id := 0
	if pacsID == "" {
		id = b.client.PACSID(ctx)
	} else {
		n, err := strconv.Atoi(pacsID)
		if err != nil || n <= 0 {
			return api.PacsStatus{}, api.Mark(fmt.Errorf("PACS id %q is not a positive integer", pacsID), api.ErrNotFound)
		}
		id = n
	}
	st, err := b.client.PingPACS(ctx, id)
	return api.PacsStatus(st), storeError(err)
}

// Query C-FINDs through DQR, keeping exact matches.
func (b *Backend) Query(ctx context.Context, accession string) ([]api.Study, error) {
	studies, err := b.client.QueryStudies(ctx, accession)
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]api.Study, 0, len(studies))
	for _, s := range studies {
		if s.AccessionNumber != accession {
			continue
		}
		mods := s.ModalitiesInStudy
		if mods == nil {
			mods = []string{}
		}
		out = append(out, api.Study{StudyInstanceUID: s.StudyInstanceUID, StudyDescription: s.StudyDescription,
			AccessionNumber: s.AccessionNumber, StudyDate: s.StudyDate, ModalitiesInStudy: mods,
			ReferringPhysName: s.ReferringPhysicianName, Patient: api.Patient(s.Patient)})
	}
	return out, nil
}

// ImportStatus classifies the cohort from XNAT's experiments and DQR tables.
func (b *Backend) ImportStatus(ctx context.Context, projectID string, accessions []string) (api.ImportCounts, error) {
	st, err := b.client.ImportStatus(ctx, projectID, accessions)
	if err != nil {
		return api.ImportCounts{}, storeError(err)
	}
	c := st.Counts()
	return api.ImportCounts{Successful: c.SuccessfulCount, Failed: c.FailedCount, Processing: c.ProcessingCount,
		Queued: c.QueuedCount, QueueFailed: c.QueueFailedCount}, nil
}

// Reimport queries the PACS again for the cohort's failed and never-queued
// accessions and queues their import.
func (b *Backend) Reimport(ctx context.Context, projectID string, accessions []string) (int, error) {
	st, err := b.client.ImportStatus(ctx, projectID, accessions)
	if err != nil {
		return 0, storeError(err)
	}
	retry := append(append([]string{}, st.Failed...), st.QueueFailed...)
	if len(retry) == 0 {
		return 0, nil
	}
	return len(retry), b.Import(ctx, projectID, retry)
}

// experiment finds the XNAT project of a hub project and the subject of
// its experiment labelled accession.
func (b *Backend) experiment(ctx context.Context, hubID, accession string) (project, subject string, err error) {
	p, err := b.client.ProjectBySecondaryID(ctx, hubID)
	if err != nil {
		return "", "", storeError(err)
	}
	subject, err = b.client.ExperimentSubjectID(ctx, p.ID, accession)
	if err != nil {
		return "", "", storeError(err)
	}
	return p.ID, subject, nil
}

// Fetch streams XNAT's zip of the accession's scans or assessors.
func (b *Backend) Fetch(ctx context.Context, req api.FetchRequest, w io.Writer) error {
	project, subject, err := b.experiment(ctx, req.HubProjectID, req.Accession)
	if err != nil {
		return err
	}
	kind := xnat.KindScans
	if req.Assessor == "assessor" {
		kind = xnat.KindAssessors
	}
	rc, err := b.client.DownloadZip(ctx, xnat.Download{Project: project, Subject: subject, Experiment: req.Accession, Kind: kind, Resource: req.Resource})
	if err != nil {
		if errors.Is(err, xnat.ErrNotFound) {
			//lint:ignore ST1005 the text is the detail callers see, worded as FLIP words it
			return api.Mark(fmt.Errorf("No %s data in XNAT for this accession", req.Resource), api.ErrNotFound)
		}
		return storeError(err)
	}
	defer rc.Close()
	if _, err := io.Copy(w, rc); err != nil {
		return fmt.Errorf("xnat download: %w", err)
	}
	return nil
}

// Upload creates the scan (as an MR scan if it is new) and the resource,
// refuses to replace files unless ExistOK, and uploads each file.
func (b *Backend) Upload(ctx context.Context, req api.UploadRequest) ([]string, error) {
	project, subject, err := b.experiment(ctx, req.HubProjectID, req.Accession)
	if err != nil {
		return nil, err
	}
	r := xnat.ScanResource{Project: project, Subject: subject, Experiment: req.Accession, Scan: req.Scan, Resource: req.Resource}
	if err := b.client.CreateScan(ctx, r, ""); err != nil {
		return nil, storeError(err)
	}
	if _, err := b.client.CreateResource(ctx, r); err != nil {
		return nil, storeError(err)
	}
	if !req.ExistOK {
		for _, f := range req.Files {
			exists, err := b.client.FileExists(ctx, r, f.Name)
			if err != nil {
				return nil, storeError(err)
			}
			if exists {
				return nil, api.Mark(fmt.Errorf("file %s already exists in resource %s of scan %s", f.Name, req.Resource, req.Scan), api.ErrExists)
			}
		}
	}
	out := make([]string, 0, len(req.Files))
	for _, f := range req.Files {
		u, err := b.uploadOne(ctx, r, f, req.ExistOK)
		if err != nil {
			return out, err
		}
		out = append(out, u)
	}
	return out, nil
}

func (b *Backend) uploadOne(ctx context.Context, r xnat.ScanResource, f api.UploadFile, overwrite bool) (string, error) {
	fh, err := os.Open(f.Path)
	if err != nil {
		return "", err
	}
	defer fh.Close()
	u, err := b.client.UploadFile(ctx, r, f.Name, fh, overwrite)
	return u, storeError(err)
}

// Users lists XNAT's user profiles.
func (b *Backend) Users(ctx context.Context) ([]api.User, error) {
	us, err := b.client.ListUsers(ctx)
	if err != nil {
		return nil, storeError(err)
	}
	out := make([]api.User, 0, len(us))
	for _, u := range us {
		out = append(out, userOf(u))
	}
	return out, nil
}

// SetUserEnabled enables or disables the XNAT user with email.
func (b *Backend) SetUserEnabled(ctx context.Context, email string, enabled bool) (api.User, error) {
	u, err := b.client.SetUserEnabledByEmail(ctx, email, enabled)
	return userOf(u), storeError(err)
}
