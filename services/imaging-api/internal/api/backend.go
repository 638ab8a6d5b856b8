package api

import (
	"context"
	"errors"
	"io"
)

// Backend is the imaging store behind the routes: the native backend (a
// staging Orthanc that C-MOVEs from the PACS) or XNAT. The routes validate
// and decode requests, fetch cohort accession ids, run background work and
// keep the FL download cache; a Backend does the store's part.
//
// Errors wrap the sentinels below (ErrNotFound, ErrExists, ...) where the
// caller should see a specific status; anything else is a 500 whose detail
// says nothing about the store.
type Backend interface {
	// ListProjects lists the imaging projects.
	ListProjects(ctx context.Context) ([]Project, error)
	// Project returns one imaging project (ErrNotFound).
	Project(ctx context.Context, id string) (Project, error)
	// Provision creates the imaging project of a hub project, or returns
	// the one it already has, with its users recorded or provisioned.
	Provision(ctx context.Context, in CentralHubProject) (Provisioned, error)
	// Import retrieves the accessions into the project, in the background:
	// it returns once the work is queued, and from then on the project's
	// cohort is no longer pending. Accessions already imported or under way
	// are left alone.
	Import(ctx context.Context, projectID string, accessions []string) error
	// PendingCohorts lists the projects provisioned whose cohort was not
	// queued yet (the process stopped first, or data-access-api did not
	// answer), so that a start can queue them.
	PendingCohorts(ctx context.Context) ([]PendingCohort, error)
	// QueueImport queues the named PACS studies for import into a project
	// (queue_image_import_request).
	QueueImport(ctx context.Context, req ImportStudyRequest) ([]ImportStudyResponse, error)
	// DeleteProject removes a project, its staged studies and its queued
	// imports (ErrNotFound).
	DeleteProject(ctx context.Context, id string) (Project, error)
	// Ping checks the PACS; pacsID is empty for the configured one.
	Ping(ctx context.Context, pacsID string) (PacsStatus, error)
	// Query finds the PACS studies whose accession number is accession.
	Query(ctx context.Context, accession string) ([]Study, error)
	// ImportStatus counts the cohort's accessions by import state.
	ImportStatus(ctx context.Context, projectID string, accessions []string) (ImportCounts, error)
	// Reimport retries the cohort's failed accessions and returns how many.
	Reimport(ctx context.Context, projectID string, accessions []string) (int, error)
	// Fetch writes one imported accession of a hub project as a zip whose
	// entries are <accession>/{scans|assessors}/<id>/resources/<R>/files/<name>.
	Fetch(ctx context.Context, req FetchRequest, w io.Writer) error
	// Upload stores files as a scan resource of an imported accession and
	// returns where each went.
	Upload(ctx context.Context, req UploadRequest) ([]string, error)
	// Users lists the users the store knows.
	Users(ctx context.Context) ([]User, error)
	// SetUserEnabled enables or disables the user with email (ErrNotFound).
	SetUserEnabled(ctx context.Context, email string, enabled bool) (User, error)
}

// Errors a Backend wraps to choose the caller's status.
var (
	// ErrNotFound: the project, accession, resource or user does not exist (404).
	ErrNotFound = errors.New("not found")
	// ErrExists: an upload would overwrite a file without exist_ok (409).
	ErrExists = errors.New("already exists")
	// ErrInvalid: the request names something the store cannot accept (400).
	ErrInvalid = errors.New("invalid request")
	// ErrPACSUnreachable: the PACS did not answer (502).
	ErrPACSUnreachable = errors.New("the PACS is unreachable")
	// ErrUnavailable: the store (XNAT, Orthanc) did not answer (502).
	ErrUnavailable = errors.New("the imaging store is unavailable")
	// ErrUnsupported: the store cannot do this on this node (501).
	ErrUnsupported = errors.New("not supported by this trust node")
)

// Provisioned is the outcome of Backend.Provision.
type Provisioned struct {
	// Answer is FLIP's provisioning answer.
	Answer CreatedProject
	// Project is the imaging project; Project.SecondaryID is the hub id.
	Project Project
	// Created reports whether the project is new.
	Created bool
}

// PendingCohort is a project whose cohort is still to be queued.
type PendingCohort struct {
	ProjectID, HubProjectID, Query string
}

// FetchRequest names what an FL job downloads.
type FetchRequest struct {
	HubProjectID, Accession string
	// Assessor is "scan" or "assessor"; Resource one of the Resource* names.
	Assessor, Resource string
	// TmpDir may hold intermediate files, removed before Fetch returns.
	TmpDir string
}

// UploadRequest is an FL job's upload of files to a scan resource.
type UploadRequest struct {
	HubProjectID, Accession, Scan, Resource string
	// Files are the files to upload, already resolved inside the net's
	// upload directory.
	Files []UploadFile
	// ExistOK allows replacing a file already there.
	ExistOK bool
}

// UploadFile is one file of an upload.
type UploadFile struct {
	// Name is the file's name in the resource; Path where it is on disk.
	Name, Path string
}

// Resource types an FL job may ask for.
const (
	ResourceDICOM = "DICOM"
	ResourceNIFTI = "NIFTI"
	ResourceSEG   = "SEG"
	ResourceALL   = "ALL"
)

// Mark returns err marked as kind (one of the sentinels above): errors.Is
// matches both, and the message is err's alone.
func Mark(err, kind error) error {
	if err == nil {
		return nil
	}
	return marked{err: err, kind: kind}
}

type marked struct{ err, kind error }

func (m marked) Error() string   { return m.err.Error() }
func (m marked) Unwrap() []error { return []error{m.err, m.kind} }
