// Package api serves imaging-api's FLIP-compatible routes for the native
// (Orthanc staging) backend: projects provisioned from the central hub, the
// PACS ping and query, import status and reimport, downloads for FL jobs,
// and users. Every route but /health needs the trust-internal credential.
package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/services/imaging-api/internal/cohortids"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/services/imaging-api/internal/importer"
	"github.com/flip-trust/node/services/imaging-api/internal/native"
	"github.com/flip-trust/node/services/imaging-api/internal/orthanc"
	"github.com/flip-trust/node/services/imaging-api/internal/projects"
	"github.com/flip-trust/node/shared/envelope"
	"github.com/flip-trust/node/shared/httpx"
	"github.com/flip-trust/node/shared/logging"
	"github.com/flip-trust/node/shared/mesh"
)

// FLIP's texts.
const (
	DetailBelowThreshold  = "Cohort is below the trust's minimum size, so its accession IDs cannot be released and import status cannot be reported."
	DetailProjectNotFound = "Project not found"
	DetailReimportOff     = "Reimport studies feature is not enabled"
	DetailEmptyQuery      = "Query must not be empty"
)

// Cohorts returns a hub project's released accession ids.
type Cohorts interface {
	AccessionIDs(ctx context.Context, hubProjectID, query string) ([]string, error)
}

// Options configure New.
type Options struct {
	Projects        *projects.Store
	Importer        *importer.Importer
	Orthanc         *orthanc.Client
	PACS            string
	StagingAET      string
	Cohorts         Cohorts
	Cache           *imagecache.Cache
	Cipher          *envelope.Cipher
	Verifier        *mesh.Verifier
	ReimportEnabled bool
	Logger          *slog.Logger
	// Background runs work that outlives its request (imports after
	// provisioning, reimports); it must finish before shutdown completes.
	Background func(fn func(ctx context.Context))
}

// API holds the routes' dependencies.
type API struct {
	o     Options
	users sync.Map // email -> User (users known to this node)
}

// New builds the API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = logging.Discard()
	}
	if o.Background == nil {
		o.Background = func(fn func(context.Context)) { go fn(context.Background()) }
	}
	return &API{o: o}
}

// Mount registers the routes on r.
func (a *API) Mount(r chi.Router) {
	r.Group(func(r chi.Router) {
		r.Use(a.o.Verifier.Require())
		for _, p := range []string{"/projects", "/projects/"} {
			r.Get(p, httpx.Handle(a.listProjects))
		}
		r.Post("/projects/create-project-from-central-hub-project", httpx.Handle(a.createFromHub))
		r.Get("/projects/{id}", httpx.Handle(a.getProject))
		r.Delete("/projects/{id}", httpx.Handle(a.deleteProject))
		r.Get("/imaging/ping_pacs", httpx.Handle(a.ping))
		r.Get("/imaging/ping_pacs/{pacs}", httpx.Handle(a.ping))
		r.Get("/imaging/query_by_accession_number", httpx.Handle(a.query))
		r.Get("/retrieval/import_status_count/{id}", httpx.Handle(a.importStatus))
		r.Put("/retrieval/reimport_imaging_project_studies/{id}", httpx.Handle(a.reimport))
		r.Post("/download/images/{net}", httpx.Handle(a.download))
		r.Get("/users", httpx.Handle(a.listUsers))
		r.Put("/users", httpx.Handle(a.updateUser))
	})
}

// Project is FLIP's project shape.
type Project struct {
	PIFirstname string  `json:"pi_firstname"`
	SecondaryID string  `json:"secondary_ID"`
	PILastname  string  `json:"pi_lastname"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	ID          string  `json:"ID"`
	URI         string  `json:"URI"`
}

func projectOf(p projects.Project) Project {
	d := p.Description
	return Project{SecondaryID: p.HubProjectID, Name: p.Name, Description: &d, ID: p.ID, URI: "/data/projects/" + p.ID}
}

func (a *API) listProjects(*http.Request) ([]Project, error) {
	list, err := a.o.Projects.List()
	if err != nil {
		return nil, err
	}
	out := make([]Project, 0, len(list))
	for _, p := range list {
		out = append(out, projectOf(p))
	}
	return out, nil
}

func (a *API) project(id string) (projects.Project, error) {
	p, err := a.o.Projects.Get(id)
	if errors.Is(err, projects.ErrNotFound) {
		return p, httpx.NewError(http.StatusNotFound, DetailProjectNotFound)
	}
	return p, err
}

func (a *API) getProject(r *http.Request) (Project, error) {
	p, err := a.project(chi.URLParam(r, "id"))
	return projectOf(p), err
}

// CentralHubProject is create-project-from-central-hub-project's body.
type CentralHubProject struct {
	ProjectID    string    `json:"project_id"`
	TrustID      string    `json:"trust_id"`
	ProjectName  string    `json:"project_name"`
	Query        string    `json:"query"`
	Users        []HubUser `json:"users"`
	DicomToNifti *bool     `json:"dicom_to_nifti"`
}

// HubUser is a central hub user of a project.
type HubUser struct {
	ID         string `json:"id"`
	Email      string `json:"email"`
	IsDisabled bool   `json:"is_disabled"`
}

// CreatedProject is FLIP's provisioning answer.
type CreatedProject struct {
	ID           string `json:"ID"`
	Name         string `json:"name"`
	CreatedUsers []any  `json:"created_users"`
	AddedUsers   []User `json:"added_users"`
}

// createFromHub provisions the imaging project of a hub project (once: a
// repeat returns the same project) and imports its cohort in the background.
func (a *API) createFromHub(r *http.Request) (CreatedProject, error) {
	var in CentralHubProject
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return CreatedProject{}, err
	}
	var problems []string
	if !validUUID(in.ProjectID) {
		problems = append(problems, "project_id: must be a UUID")
	}
	if !validUUID(in.TrustID) {
		problems = append(problems, "trust_id: must be a UUID")
	}
	if in.ProjectName == "" || strings.ContainsAny(in.ProjectName, "<>&") {
		problems = append(problems, "project_name: required, without '<', '>' or '&'")
	}
	if strings.TrimSpace(in.Query) == "" {
		problems = append(problems, "query: required")
	}
	if len(problems) > 0 {
		return CreatedProject{}, httpx.NewError(http.StatusUnprocessableEntity, strings.Join(problems, "; "))
	}
	hubID := strings.ToLower(in.ProjectID)
	toNifti := in.DicomToNifti == nil || *in.DicomToNifti
	users := make([]projects.User, 0, len(in.Users))
	for _, u := range in.Users {
		users = append(users, projects.User(u))
	}
	p, created, err := a.o.Projects.Provision(hubID, projects.Project{
		Name:          fmt.Sprintf("%s:%s-FL-Project", in.ProjectName, hubID),
		Description:   "Project corresponding to central hub project " + hubID,
		Query:         in.Query,
		Users:         users,
		DicomToNifti:  toNifti,
		CohortPending: true,
	})
	if err != nil {
		return CreatedProject{}, err
	}
	added := make([]User, 0, len(in.Users))
	for _, u := range in.Users {
		if !u.IsDisabled {
			added = append(added, a.rememberUser(u.Email, true))
		}
	}
	log := httpx.LoggerFrom(r.Context()).With("project", p.ID, "hub_project", hubID)
	if created {
		log.Info("imaging project provisioned; importing its cohort")
	} else {
		log.Info("imaging project already provisioned; resuming its import")
	}
	a.o.Background(func(ctx context.Context) { a.importCohort(ctx, p) })
	return CreatedProject{ID: p.ID, Name: p.Name, CreatedUsers: []any{}, AddedUsers: added}, nil
}

// importCohort fetches the project's released accession ids and queues them.
func (a *API) importCohort(ctx context.Context, p projects.Project) {
	ids, err := a.o.Cohorts.AccessionIDs(ctx, p.HubProjectID, p.Query)
	if errors.Is(err, cohortids.ErrBelowThreshold) {
		a.o.Logger.Warn("cohort below the trust's floor: nothing imported", "project", p.ID)
		return
	}
	if err != nil {
		a.o.Logger.Error("cohort accession ids unavailable: nothing imported yet", "project", p.ID, "error", err.Error())
		return
	}
	if err := a.o.Importer.Enqueue(p.ID, ids); err != nil {
		a.o.Logger.Error("import could not be queued", "project", p.ID, "error", err.Error())
		return
	}
	if err := a.o.Projects.CohortQueued(p.ID); err != nil && !errors.Is(err, projects.ErrNotFound) {
		a.o.Logger.Warn("cohort queued but not recorded as such: it is queued again at the next start", "project", p.ID, "error", err.Error())
	}
	a.o.Logger.Info("cohort import queued", "project", p.ID, "accessions", len(ids))
}

// ResumeCohorts queues, in the background, the cohort of every project
// provisioned without its cohort being queued: the process stopped (or was
// killed) before data-access-api answered, or data-access-api refused or
// failed then. Call it once the importer is started.
func (a *API) ResumeCohorts() error {
	list, err := a.o.Projects.List()
	if err != nil {
		return err
	}
	for _, p := range list {
		if p.CohortPending {
			a.o.Logger.Info("imaging project's cohort not queued yet; importing it", "project", p.ID)
			a.o.Background(func(ctx context.Context) { a.importCohort(ctx, p) })
		}
	}
	return nil
}

func (a *API) deleteProject(r *http.Request) (Project, error) {
	p, err := a.project(chi.URLParam(r, "id"))
	if err != nil {
		return Project{}, err
	}
	if err := a.o.Importer.DeleteProject(r.Context(), p.ID); err != nil {
		httpx.LoggerFrom(r.Context()).Error("staged studies not all removed", "project", p.ID, "error", err.Error())
		return Project{}, httpx.NewError(http.StatusInternalServerError, "Internal server error")
	}
	if _, err := a.o.Projects.Delete(p.ID); err != nil && !errors.Is(err, projects.ErrNotFound) {
		return Project{}, err
	}
	return projectOf(p), nil
}

// PacsStatus is FLIP's ping answer.
type PacsStatus struct {
	PacsID     int   `json:"pacsId"`
	Successful bool  `json:"successful"`
	PingTime   int64 `json:"pingTime"`
	Created    int64 `json:"created"`
	Enabled    bool  `json:"enabled"`
	Timestamp  int64 `json:"timestamp"`
	ID         int   `json:"id"`
	Disabled   int   `json:"disabled"`
}

func (a *API) ping(r *http.Request) (PacsStatus, error) {
	start := time.Now()
	err := a.o.Orthanc.Echo(r.Context(), a.o.PACS)
	if errors.Is(err, orthanc.ErrUnauthorized) {
		return PacsStatus{}, err
	}
	now := time.Now().UnixMilli()
	return PacsStatus{PacsID: 1, Successful: err == nil, PingTime: time.Since(start).Milliseconds(), Created: now,
		Enabled: true, Timestamp: now, ID: 1}, nil
}

// Study is FLIP's C-FIND answer.
type Study struct {
	StudyInstanceUID  string   `json:"studyInstanceUid"`
	StudyDescription  string   `json:"studyDescription"`
	AccessionNumber   string   `json:"accessionNumber"`
	StudyDate         string   `json:"studyDate"`
	ModalitiesInStudy []string `json:"modalitiesInStudy"`
	ReferringPhysName string   `json:"referringPhysicianName"`
	Patient           Patient  `json:"patient"`
}

// Patient is the patient of a Study.
type Patient struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Sex  string `json:"sex"`
}

func (a *API) query(r *http.Request) ([]Study, error) {
	acc := r.URL.Query().Get("accession_number")
	if !importer.ValidAccession(acc) {
		return nil, httpx.NewError(http.StatusUnprocessableEntity, "accession_number: must be a single segment of [A-Za-z0-9._~-]")
	}
	found, err := a.o.Orthanc.FindStudies(r.Context(), a.o.PACS, acc)
	if err != nil {
		return nil, pacsError(err)
	}
	out := make([]Study, 0, len(found))
	for _, f := range orthanc.SelectExact(found, acc) {
		mods := []string{}
		if f.ModalitiesInStudy != "" {
			mods = strings.Split(f.ModalitiesInStudy, `\`)
		}
		out = append(out, Study{StudyInstanceUID: f.StudyInstanceUID, AccessionNumber: f.AccessionNumber,
			StudyDate: f.StudyDate, ModalitiesInStudy: mods, Patient: Patient{ID: f.PatientID}})
	}
	return out, nil
}

func pacsError(err error) error {
	if errors.Is(err, orthanc.ErrPACSUnreachable) {
		return httpx.NewError(http.StatusBadGateway, "The PACS is unreachable.")
	}
	return err
}

// ProjectRetrieval is FLIP's import status answer.
type ProjectRetrieval struct {
	ProjectCreationCompleted bool            `json:"project_creation_completed"`
	ImportStatus             importer.Counts `json:"import_status"`
}

func decodeQuery(r *http.Request) (string, error) {
	enc := strings.TrimSpace(r.URL.Query().Get("encoded_query"))
	if enc == "" {
		return "", httpx.NewError(http.StatusBadRequest, DetailEmptyQuery)
	}
	if m := len(enc) % 4; m != 0 {
		enc += strings.Repeat("=", 4-m)
	}
	b, err := base64.URLEncoding.DecodeString(enc)
	if err != nil {
		return "", httpx.NewError(http.StatusBadRequest, "encoded_query is not base64url")
	}
	return string(b), nil
}

func (a *API) importStatus(r *http.Request) (ProjectRetrieval, error) {
	p, err := a.project(chi.URLParam(r, "id"))
	if err != nil {
		return ProjectRetrieval{}, err
	}
	query, err := decodeQuery(r)
	if err != nil {
		return ProjectRetrieval{}, err
	}
	ids, err := a.o.Cohorts.AccessionIDs(r.Context(), p.HubProjectID, query)
	if errors.Is(err, cohortids.ErrBelowThreshold) {
		return ProjectRetrieval{}, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	if err != nil {
		return ProjectRetrieval{}, err
	}
	counts, err := a.o.Importer.Status(p.ID, ids)
	if err != nil {
		return ProjectRetrieval{}, err
	}
	return ProjectRetrieval{ProjectCreationCompleted: true, ImportStatus: counts}, nil
}

type accepted struct {
	Message   string `json:"message"`
	ProjectID string `json:"projectId"`
}

// StatusCode makes the reimport answer a 202.
func (accepted) StatusCode() int { return http.StatusAccepted }

func (a *API) reimport(r *http.Request) (accepted, error) {
	if !a.o.ReimportEnabled {
		return accepted{}, httpx.NewError(http.StatusTeapot, DetailReimportOff)
	}
	query, err := decodeQuery(r)
	if err != nil {
		return accepted{}, err
	}
	p, err := a.project(chi.URLParam(r, "id"))
	if err != nil {
		return accepted{}, err
	}
	a.o.Background(func(ctx context.Context) {
		ids, err := a.o.Cohorts.AccessionIDs(ctx, p.HubProjectID, query)
		if err != nil {
			a.o.Logger.Warn("reimport: cohort accession ids unavailable", "project", p.ID, "error", err.Error())
			return
		}
		if err := a.o.Importer.Enqueue(p.ID, ids); err != nil {
			a.o.Logger.Error("reimport could not be queued", "project", p.ID, "error", err.Error())
			return
		}
		n, err := a.o.Importer.Reimport(p.ID)
		if err != nil {
			a.o.Logger.Error("reimport failed", "project", p.ID, "error", err.Error())
			return
		}
		a.o.Logger.Info("reimport queued", "project", p.ID, "accessions", n)
	})
	return accepted{Message: "Reimport queued", ProjectID: p.ID}, nil
}

// DownloadRequest is POST /download/images/{net}'s body.
type DownloadRequest struct {
	EncryptedHubProjectID string `json:"encrypted_central_hub_project_id"`
	AccessionID           string `json:"accession_id"`
}

type downloaded struct {
	Path string `json:"path"`
}

func (a *API) download(r *http.Request) (downloaded, error) {
	ctx := r.Context()
	q := r.URL.Query()
	assessor := orDefault(q.Get("assessor_type"), "scan")
	resource := orDefault(q.Get("resource_type"), native.ResourceNIFTI)
	force := q.Get("force_refresh") == "true"
	if assessor != "scan" && assessor != "assessor" {
		return downloaded{}, httpx.NewError(http.StatusUnprocessableEntity, "assessor_type: must be scan or assessor")
	}
	switch resource {
	case native.ResourceNIFTI, native.ResourceDICOM, native.ResourceSEG, native.ResourceALL:
	default:
		return downloaded{}, httpx.NewError(http.StatusUnprocessableEntity, "resource_type: must be one of NIFTI, DICOM, SEG, ALL")
	}
	var in DownloadRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return downloaded{}, err
	}
	if !imagecache.ValidSegment(in.AccessionID) {
		return downloaded{}, httpx.NewError(http.StatusUnprocessableEntity, "accession_id: must be a single segment of [A-Za-z0-9._~-]")
	}
	hubID, err := a.openProjectID(in.EncryptedHubProjectID)
	if err != nil {
		return downloaded{}, err
	}
	key := imagecache.Key{Net: chi.URLParam(r, "net"), Project: hubID, Accession: in.AccessionID, Assessor: assessor, Resource: resource}
	if _, err := a.o.Cache.Dir(key); err != nil {
		return downloaded{}, httpx.Errorf(http.StatusBadRequest, "Invalid download request: %v", err)
	}
	p, err := a.o.Projects.ByHub(hubID)
	if err != nil {
		return downloaded{}, httpx.NewError(http.StatusNotFound, "Resource not found: no imaging project for this central hub project")
	}
	rec, ok, err := a.o.Importer.Lookup(p.ID, in.AccessionID)
	if err != nil {
		return downloaded{}, err
	}
	if !ok || rec.State != importer.StateImported {
		return downloaded{}, httpx.NewError(http.StatusNotFound, "Resource not found: the accession is not imported for this project")
	}
	dir, err := a.o.Cache.Get(ctx, key, force, func(ctx context.Context, w io.Writer) error {
		return native.Fetch(ctx, a.o.Orthanc, rec.StudyUID, in.AccessionID, resource, a.o.Cache.Base(), w)
	})
	switch {
	case errors.Is(err, native.ErrNoConverter):
		return downloaded{}, httpx.NewError(http.StatusNotImplemented, err.Error())
	case errors.Is(err, native.ErrNoResource):
		return downloaded{}, httpx.Errorf(http.StatusNotFound, "Resource not found: %v", err)
	case errors.Is(err, imagecache.ErrInvalidKey):
		return downloaded{}, httpx.Errorf(http.StatusBadRequest, "Invalid download request: %v", err)
	case err != nil:
		httpx.LoggerFrom(ctx).Error("download failed", "project", p.ID, "error", err.Error())
		return downloaded{}, httpx.NewError(http.StatusInternalServerError, "Trust-side storage error: the accession could not be staged")
	}
	return downloaded{Path: dir}, nil
}

func orDefault(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

// openProjectID decrypts the hub project id with FLIP's error mapping.
func (a *API) openProjectID(enc string) (string, error) {
	pt, err := a.o.Cipher.Open(enc, envelope.ProjectIDContext)
	if err == nil {
		return strings.ToLower(string(pt)), nil
	}
	switch {
	case errors.Is(err, envelope.ErrAuthentication):
		return "", httpx.NewError(http.StatusBadRequest, "Central Hub project id failed authentication")
	case envelope.Malformed(err):
		return "", httpx.Errorf(http.StatusBadRequest, "Central Hub project id is not a valid envelope: %s", err.Error())
	}
	return "", httpx.Errorf(http.StatusInternalServerError, "Failed to decrypt Central Hub project id (%T)", err)
}

// User is FLIP's user shape; the native backend keeps no accounts, so users
// are the hub users it was told about.
type User struct {
	LastModified        *int64 `json:"lastModified"`
	Username            string `json:"username"`
	Enabled             bool   `json:"enabled"`
	ID                  int    `json:"id"`
	Secured             bool   `json:"secured"`
	Email               string `json:"email"`
	Verified            bool   `json:"verified"`
	FirstName           string `json:"firstName"`
	LastName            string `json:"lastName"`
	LastSuccessfulLogin *int64 `json:"lastSuccessfulLogin"`
}

func (a *API) rememberUser(email string, enabled bool) User {
	name := email
	if i := strings.IndexByte(email, '@'); i > 0 {
		name = email[:i]
	}
	now := time.Now().UnixMilli()
	u := User{LastModified: &now, Username: name, Enabled: enabled, Email: email, FirstName: name, LastName: name}
	a.users.Store(strings.ToLower(email), u)
	return u
}

func (a *API) listUsers(*http.Request) ([]User, error) {
	out := []User{}
	a.users.Range(func(_, v any) bool { out = append(out, v.(User)); return true })
	return out, nil
}

// updateUser records a hub user's enabled flag (update_user_profile).
func (a *API) updateUser(r *http.Request) (User, error) {
	var in struct {
		Email   string `json:"email"`
		Enabled *bool  `json:"enabled"`
	}
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return User{}, err
	}
	if !strings.Contains(in.Email, "@") || in.Enabled == nil {
		return User{}, httpx.NewError(http.StatusUnprocessableEntity, "email and enabled are required")
	}
	return a.rememberUser(in.Email, *in.Enabled), nil
}

func validUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, r := range s {
		switch i {
		case 8, 13, 18, 23:
			if r != '-' {
				return false
			}
		default:
			if !strings.ContainsRune("0123456789abcdefABCDEF", r) {
				return false
			}
		}
	}
	return true
}
