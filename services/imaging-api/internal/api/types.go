package api

import "github.com/flip-trust/node/shared/disclosure"

// Project is FLIP's project shape (XNAT's project listing).
type Project struct {
	PIFirstname string `json:"pi_firstname"`
	// SecondaryID is the central hub project id.
	SecondaryID string  `json:"secondary_ID"`
	PILastname  string  `json:"pi_lastname"`
	Name        string  `json:"name"`
	Description *string `json:"description"`
	// ID is the imaging project id.
	ID  string `json:"ID"`
	URI string `json:"URI"`
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

// ToNifti reports whether the project wants NIfTI conversion (the default).
func (p CentralHubProject) ToNifti() bool { return p.DicomToNifti == nil || *p.DicomToNifti }

// HubUser is a central hub user of a project.
type HubUser struct {
	ID         string `json:"id"`
	Email      string `json:"email"`
	IsDisabled bool   `json:"is_disabled"`
}

// CreatedProject is FLIP's provisioning answer.
type CreatedProject struct {
	ID           string        `json:"ID"`
	Name         string        `json:"name"`
	CreatedUsers []CreatedUser `json:"created_users"`
	AddedUsers   []User        `json:"added_users"`
}

// CreatedUser is a user new to the store, with the envelope-encrypted path
// of the page where they set their password.
type CreatedUser struct {
	Username           string `json:"username"`
	EncryptedSetupPath string `json:"encrypted_setup_path"`
	Email              string `json:"email"`
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
	Disabled   int64 `json:"disabled"`
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

// ImportCounts are FLIP's five import counts.
type ImportCounts struct {
	Successful  int `json:"successful_count"`
	Failed      int `json:"failed_count"`
	Processing  int `json:"processing_count"`
	Queued      int `json:"queued_count"`
	QueueFailed int `json:"queue_failed_count"`
}

// ReleasedCounts are the five import counts as they leave the trust: each
// passed the disclosure layer, and a withheld count is JSON null (never a
// 0 that would read as "none").
type ReleasedCounts struct {
	Successful  disclosure.Cell `json:"successful_count"`
	Failed      disclosure.Cell `json:"failed_count"`
	Processing  disclosure.Cell `json:"processing_count"`
	Queued      disclosure.Cell `json:"queued_count"`
	QueueFailed disclosure.Cell `json:"queue_failed_count"`
}

// ReleaseCounts passes a cohort's import counts through the disclosure
// layer (FLIP#858): the five states partition the cohort's accessions, and
// the cohort's size is treated as known to the reader, so the counts are
// one table with a released total — a state with 0 < n < floor is withheld
// with its complements, and a cohort under the floor has every non-zero
// count withheld. Counts are of accessions, each of which belongs to one
// subject, so a count at or above the floor may still cover fewer subjects.
func ReleaseCounts(p disclosure.Policy, c ImportCounts) ReleasedCounts {
	n := []disclosure.Subjects{disclosure.Subjects(c.Successful), disclosure.Subjects(c.Failed),
		disclosure.Subjects(c.Processing), disclosure.Subjects(c.Queued), disclosure.Subjects(c.QueueFailed)}
	v := p.Vector(n, true)
	if v.Total.IsSuppressed() {
		for i := range n {
			if n[i] > 0 {
				v.Cells[i] = disclosure.Suppressed
			}
		}
	}
	return ReleasedCounts{v.Cells[0], v.Cells[1], v.Cells[2], v.Cells[3], v.Cells[4]}
}

// releasedRetrieval is the import status answer as it leaves the trust.
type releasedRetrieval struct {
	ProjectCreationCompleted bool           `json:"project_creation_completed"`
	ImportStatus             ReleasedCounts `json:"import_status"`
}

// ProjectRetrieval is FLIP's import status answer as a client reads it (a
// withheld count reads as 0 here; see ReleasedCounts for what is sent).
type ProjectRetrieval struct {
	ProjectCreationCompleted bool         `json:"project_creation_completed"`
	ImportStatus             ImportCounts `json:"import_status"`
}

// ImportStudyRequest is queue_image_import_request's body.
type ImportStudyRequest struct {
	PacsID      *int          `json:"pacsId"`
	AETitle     string        `json:"aeTitle"`
	Port        *int          `json:"port"`
	ProjectID   string        `json:"projectId"`
	ForceImport *bool         `json:"forceImport"`
	Studies     []ImportStudy `json:"studies"`
}

// ImportStudy is one study of an ImportStudyRequest.
type ImportStudy struct {
	StudyInstanceUID string `json:"studyInstanceUid"`
	AccessionNumber  string `json:"accessionNumber"`
}

// ImportStudyResponse is the store's entry for one queued study.
type ImportStudyResponse struct {
	ID              int64  `json:"id"`
	PacsID          int    `json:"pacsId"`
	Status          string `json:"status"`
	AccessionNumber string `json:"accessionNumber"`
	QueuedTime      int64  `json:"queuedTime"`
	Created         int64  `json:"created"`
	Priority        int    `json:"priority"`
}

// User is FLIP's user shape.
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

// DownloadRequest is POST /download/images/{net}'s body.
type DownloadRequest struct {
	EncryptedHubProjectID string `json:"encrypted_central_hub_project_id"`
	AccessionID           string `json:"accession_id"`
}

// UploadDataRequest is PUT /upload/images/{net}'s body.
type UploadDataRequest struct {
	EncryptedHubProjectID string   `json:"encrypted_central_hub_project_id"`
	AccessionID           string   `json:"accession_id"`
	ScanID                string   `json:"scan_id"`
	ResourceID            string   `json:"resource_id"`
	Files                 []string `json:"files"`
	ExistOK               bool     `json:"exist_ok"`
}
