// Package api serves imaging-api's FLIP-compatible routes over a Backend
// (the native Orthanc staging backend or XNAT): projects provisioned from
// the central hub, the PACS ping, query and import, import status and
// reimport, downloads and uploads for FL jobs, and users. Every route but
// /health needs the trust-internal credential.
package api

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"path"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/flip-trust/node/services/imaging-api/internal/cohortids"
	"github.com/flip-trust/node/services/imaging-api/internal/imagecache"
	"github.com/flip-trust/node/shared/disclosure"
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
	DetailInternal        = "Internal server error"
)

// Cohorts returns a hub project's released accession ids.
type Cohorts interface {
	AccessionIDs(ctx context.Context, hubProjectID, query string) ([]string, error)
}

// Options configure New.
type Options struct {
	Backend         Backend
	Cohorts         Cohorts
	Cache           *imagecache.Cache
	Cipher          *envelope.Cipher
	Verifier        *mesh.Verifier
	ReimportEnabled bool
	Logger          *slog.Logger
	// Disclosure is the floor and rounding import status counts pass; the
	// zero value means COHORT_QUERY_THRESHOLD's default (10), no rounding.
	Disclosure disclosure.Policy
	// Background runs work that outlives its request (imports after
	// provisioning, reimports); it must finish before shutdown completes.
	Background func(fn func(ctx context.Context))
}

// API holds the routes' dependencies.
type API struct{ o Options }

// New builds the API.
func New(o Options) *API {
	if o.Logger == nil {
		o.Logger = logging.Discard()
	}
	if !o.Disclosure.Valid() {
		o.Disclosure = disclosure.MustPolicy(10, 0, 0)
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
		r.Post("/imaging/queue_image_import_request", httpx.Handle(a.queueImport))
		r.Get("/retrieval/import_status_count/{id}", httpx.Handle(a.importStatus))
		r.Put("/retrieval/reimport_imaging_project_studies/{id}", httpx.Handle(a.reimport))
		r.Post("/download/images/{net}", httpx.Handle(a.download))
		r.Put("/upload/images/{net}", httpx.Handle(a.upload))
		r.Get("/users", httpx.Handle(a.listUsers))
		r.Put("/users", httpx.Handle(a.updateUser))
	})
}

// storeError maps a Backend error to the caller's status; notFound is the
// detail of a 404. Errors without a sentinel are logged and answered 500
// without detail.
func storeError(r *http.Request, err error, notFound string) error {
	var he *httpx.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &he):
		return err
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return err
	case errors.Is(err, ErrNotFound):
		if notFound == "" {
			notFound = "Resource not found: " + err.Error()
		}
		return httpx.NewError(http.StatusNotFound, notFound)
	case errors.Is(err, ErrExists):
		return httpx.NewError(http.StatusConflict, err.Error())
	case errors.Is(err, ErrInvalid):
		return httpx.NewError(http.StatusBadRequest, err.Error())
	case errors.Is(err, ErrPACSUnreachable):
		return httpx.NewError(http.StatusBadGateway, "The PACS is unreachable.")
	case errors.Is(err, ErrUnavailable):
		return httpx.NewError(http.StatusBadGateway, "The imaging store is unavailable.")
	case errors.Is(err, ErrUnsupported):
		return httpx.NewError(http.StatusNotImplemented, err.Error())
	}
	httpx.LoggerFrom(r.Context()).Error("imaging store call failed", "route", chi.RouteContext(r.Context()).RoutePattern(), "error", err.Error())
	return httpx.NewError(http.StatusInternalServerError, DetailInternal)
}

func (a *API) listProjects(r *http.Request) ([]Project, error) {
	out, err := a.o.Backend.ListProjects(r.Context())
	if out == nil {
		out = []Project{}
	}
	return out, storeError(r, err, "")
}

func (a *API) project(r *http.Request) (Project, error) {
	p, err := a.o.Backend.Project(r.Context(), chi.URLParam(r, "id"))
	return p, storeError(r, err, DetailProjectNotFound)
}

func (a *API) getProject(r *http.Request) (Project, error) { return a.project(r) }

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
	for i, u := range in.Users {
		if !strings.Contains(u.Email, "@") {
			problems = append(problems, fmt.Sprintf("users[%d].email: must be an email address", i))
		}
	}
	if len(problems) > 0 {
		return CreatedProject{}, httpx.NewError(http.StatusUnprocessableEntity, strings.Join(problems, "; "))
	}
	in.ProjectID = strings.ToLower(in.ProjectID)
	prov, err := a.o.Backend.Provision(r.Context(), in)
	if err != nil {
		return CreatedProject{}, storeError(r, err, "")
	}
	p := prov.Project
	log := httpx.LoggerFrom(r.Context()).With("project", p.ID, "hub_project", in.ProjectID)
	if prov.Created {
		log.Info("imaging project provisioned; importing its cohort")
	} else {
		log.Info("imaging project already provisioned; resuming its import")
	}
	query := in.Query
	a.o.Background(func(ctx context.Context) { a.importCohort(ctx, p.ID, in.ProjectID, query) })
	answer := prov.Answer
	if answer.CreatedUsers == nil {
		answer.CreatedUsers = []CreatedUser{}
	}
	if answer.AddedUsers == nil {
		answer.AddedUsers = []User{}
	}
	return answer, nil
}

// importCohort fetches the project's released accession ids and imports them.
func (a *API) importCohort(ctx context.Context, projectID, hubID, query string) {
	ids, err := a.o.Cohorts.AccessionIDs(ctx, hubID, query)
	if errors.Is(err, cohortids.ErrBelowThreshold) {
		a.o.Logger.Warn("cohort below the trust's floor: nothing imported", "project", projectID)
		return
	}
	if err != nil {
		a.o.Logger.Error("cohort accession ids unavailable: nothing imported yet", "project", projectID, "error", err.Error())
		return
	}
	if err := a.o.Backend.Import(ctx, projectID, ids); err != nil {
		a.o.Logger.Error("import could not be queued", "project", projectID, "error", err.Error())
		return
	}
	a.o.Logger.Info("cohort import queued", "project", projectID, "accessions", len(ids))
}

// ResumeCohorts queues, in the background, the cohort of every project
// provisioned without its cohort being queued: the process stopped (or was
// killed) before data-access-api answered, or data-access-api refused or
// failed then. Call it once the backend's importer is started.
func (a *API) ResumeCohorts(ctx context.Context) error {
	list, err := a.o.Backend.PendingCohorts(ctx)
	if err != nil {
		return err
	}
	for _, p := range list {
		a.o.Logger.Info("imaging project's cohort not queued yet; importing it", "project", p.ProjectID)
		a.o.Background(func(ctx context.Context) { a.importCohort(ctx, p.ProjectID, p.HubProjectID, p.Query) })
	}
	return nil
}

func (a *API) deleteProject(r *http.Request) (Project, error) {
	p, err := a.o.Backend.DeleteProject(r.Context(), chi.URLParam(r, "id"))
	return p, storeError(r, err, DetailProjectNotFound)
}

func (a *API) ping(r *http.Request) (PacsStatus, error) {
	id := chi.URLParam(r, "pacs")
	st, err := a.o.Backend.Ping(r.Context(), id)
	return st, storeError(r, err, fmt.Sprintf("PACS with ID '%s' not found.", id))
}

func (a *API) query(r *http.Request) ([]Study, error) {
	acc := r.URL.Query().Get("accession_number")
	if !imagecache.ValidSegment(acc) {
		return nil, httpx.NewError(http.StatusUnprocessableEntity, "accession_number: must be a single segment of [A-Za-z0-9._~-]")
	}
	out, err := a.o.Backend.Query(r.Context(), acc)
	if out == nil {
		out = []Study{}
	}
	return out, storeError(r, err, "")
}

func (a *API) queueImport(r *http.Request) ([]ImportStudyResponse, error) {
	var in ImportStudyRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return nil, err
	}
	var problems []string
	if in.ProjectID == "" {
		problems = append(problems, "projectId: required")
	}
	if len(in.Studies) == 0 {
		problems = append(problems, "studies: at least one study is required")
	}
	// A study named twice is imported once; the last entry wins.
	seen := map[string]int{}
	studies := make([]ImportStudy, 0, len(in.Studies))
	for i, s := range in.Studies {
		if s.StudyInstanceUID == "" || !imagecache.ValidSegment(s.AccessionNumber) {
			problems = append(problems, fmt.Sprintf("studies[%d]: studyInstanceUid and an accessionNumber of [A-Za-z0-9._~-] are required", i))
			continue
		}
		if j, ok := seen[s.StudyInstanceUID]; ok {
			studies[j] = s
			continue
		}
		seen[s.StudyInstanceUID] = len(studies)
		studies = append(studies, s)
	}
	if len(problems) > 0 {
		return nil, httpx.NewError(http.StatusUnprocessableEntity, strings.Join(problems, "; "))
	}
	in.Studies = studies
	out, err := a.o.Backend.QueueImport(r.Context(), in)
	return out, storeError(r, err, "Not found error: no imaging project "+in.ProjectID)
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

func (a *API) importStatus(r *http.Request) (disclosure.Released, error) {
	p, err := a.project(r)
	if err != nil {
		return disclosure.Released{}, err
	}
	query, err := decodeQuery(r)
	if err != nil {
		return disclosure.Released{}, err
	}
	ids, err := a.o.Cohorts.AccessionIDs(r.Context(), p.SecondaryID, query)
	if errors.Is(err, cohortids.ErrBelowThreshold) {
		return disclosure.Released{}, httpx.NewError(http.StatusForbidden, DetailBelowThreshold)
	}
	if err != nil {
		return disclosure.Released{}, err
	}
	counts, err := a.o.Backend.ImportStatus(r.Context(), p.ID, ids)
	if err != nil {
		return disclosure.Released{}, storeError(r, err, DetailProjectNotFound)
	}
	return disclosure.Seal(releasedRetrieval{ProjectCreationCompleted: true, ImportStatus: ReleaseCounts(a.o.Disclosure, counts)})
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
	p, err := a.project(r)
	if err != nil {
		return accepted{}, err
	}
	a.o.Background(func(ctx context.Context) {
		ids, err := a.o.Cohorts.AccessionIDs(ctx, p.SecondaryID, query)
		if err != nil {
			a.o.Logger.Warn("reimport: cohort accession ids unavailable", "project", p.ID, "error", err.Error())
			return
		}
		n, err := a.o.Backend.Reimport(ctx, p.ID, ids)
		if err != nil {
			a.o.Logger.Error("reimport failed", "project", p.ID, "error", err.Error())
			return
		}
		a.o.Logger.Info("reimport queued", "project", p.ID, "accessions", n)
	})
	return accepted{Message: "Reimport queued", ProjectID: p.ID}, nil
}

type downloaded struct {
	Path string `json:"path"`
}

func (a *API) download(r *http.Request) (downloaded, error) {
	ctx := r.Context()
	q := r.URL.Query()
	assessor := orDefault(q.Get("assessor_type"), "scan")
	resource := strings.ToUpper(orDefault(q.Get("resource_type"), ResourceNIFTI))
	force := q.Get("force_refresh") == "true"
	if assessor != "scan" && assessor != "assessor" {
		return downloaded{}, httpx.NewError(http.StatusUnprocessableEntity, "assessor_type: must be scan or assessor")
	}
	switch resource {
	case ResourceNIFTI, ResourceDICOM, ResourceSEG, ResourceALL:
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
	req := FetchRequest{HubProjectID: hubID, Accession: in.AccessionID, Assessor: assessor, Resource: resource, TmpDir: a.o.Cache.Base()}
	dir, err := a.o.Cache.Get(ctx, key, force, func(ctx context.Context, w io.Writer) error {
		return a.o.Backend.Fetch(ctx, req, w)
	})
	var he *httpx.Error
	switch {
	case err == nil:
		return downloaded{Path: dir}, nil
	case errors.As(err, &he), errors.Is(err, context.Canceled):
		return downloaded{}, err
	case errors.Is(err, imagecache.ErrInvalidKey):
		return downloaded{}, httpx.Errorf(http.StatusBadRequest, "Invalid download request: %v", err)
	case errors.Is(err, ErrNotFound):
		return downloaded{}, httpx.Errorf(http.StatusNotFound, "Resource not found: %v", err)
	case errors.Is(err, ErrUnsupported), errors.Is(err, ErrUnavailable), errors.Is(err, ErrPACSUnreachable):
		return downloaded{}, storeError(r, err, "")
	}
	httpx.LoggerFrom(ctx).Error("download failed", "net", key.Net, "error", err.Error())
	return downloaded{}, httpx.NewError(http.StatusInternalServerError, "Trust-side storage error: the accession could not be staged")
}

func (a *API) upload(r *http.Request) ([]string, error) {
	var in UploadDataRequest
	if err := httpx.DecodeJSON(r, &in); err != nil {
		return nil, err
	}
	var problems []string
	for _, f := range []struct{ name, v string }{{"accession_id", in.AccessionID}, {"scan_id", in.ScanID}, {"resource_id", in.ResourceID}} {
		if !imagecache.ValidSegment(f.v) {
			problems = append(problems, f.name+": must be a single segment of [A-Za-z0-9._~-]")
		}
	}
	if len(in.Files) == 0 {
		problems = append(problems, "files: at least one file is required")
	}
	if len(problems) > 0 {
		return nil, httpx.NewError(http.StatusUnprocessableEntity, strings.Join(problems, "; "))
	}
	hubID, err := a.openProjectID(in.EncryptedHubProjectID)
	if err != nil {
		return nil, err
	}
	net := chi.URLParam(r, "net")
	req := UploadRequest{HubProjectID: hubID, Accession: in.AccessionID, Scan: in.ScanID, Resource: in.ResourceID, ExistOK: in.ExistOK}
	names := map[string]bool{}
	for _, rel := range in.Files {
		file, err := a.o.Cache.UploadPath(net, rel)
		switch {
		case errors.Is(err, imagecache.ErrNotFound):
			return nil, httpx.Errorf(http.StatusNotFound, "Resource not found: %v", err)
		case errors.Is(err, imagecache.ErrInvalidUpload):
			return nil, httpx.Errorf(http.StatusBadRequest, "Invalid upload request: %v", err)
		case err != nil:
			return nil, httpx.Errorf(http.StatusBadRequest, "Invalid upload request: %v", err)
		}
		name := path.Base(rel)
		if !imagecache.ValidSegment(name) || names[name] {
			return nil, httpx.Errorf(http.StatusBadRequest, "Invalid upload request: file names must be distinct single segments of [A-Za-z0-9._~-] (%q)", name)
		}
		names[name] = true
		req.Files = append(req.Files, UploadFile{Name: name, Path: file})
	}
	out, err := a.o.Backend.Upload(r.Context(), req)
	if err != nil {
		return nil, storeError(r, err, "")
	}
	if n := a.o.Cache.Invalidate(hubID, in.AccessionID); n > 0 {
		httpx.LoggerFrom(r.Context()).Info("cached downloads of the accession invalidated", "markers", n)
	}
	return out, nil
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

func (a *API) listUsers(r *http.Request) ([]User, error) {
	out, err := a.o.Backend.Users(r.Context())
	if out == nil {
		out = []User{}
	}
	return out, storeError(r, err, "")
}

// updateUser enables or disables a user (the hub's update_user_profile).
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
	u, err := a.o.Backend.SetUserEnabled(r.Context(), in.Email, *in.Enabled)
	return u, storeError(r, err, "User not found")
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
