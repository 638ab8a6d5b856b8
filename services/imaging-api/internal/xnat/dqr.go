package xnat

import (
	"context"
	"fmt"
	"net/http"
	"strconv"

	"github.com/google/uuid"
)

// PACS is a PACS registration (GET /xapi/pacs).
type PACS struct {
	ID                int    `json:"id"`
	AETitle           string `json:"aeTitle"`
	Host              string `json:"host"`
	Label             string `json:"label"`
	QueryRetrievePort int    `json:"queryRetrievePort"`
}

// PACSStatus is the result of a PACS ping (GET /xapi/pacs/{id}/status).
type PACSStatus struct {
	PacsID     int   `json:"pacsId"`
	Successful bool  `json:"successful"`
	PingTime   int64 `json:"pingTime"`
	Created    int64 `json:"created"`
	Enabled    bool  `json:"enabled"`
	Timestamp  int64 `json:"timestamp"`
	ID         int   `json:"id"`
	Disabled   int64 `json:"disabled"`
}

// Patient is a study's patient as DQR reports it.
type Patient struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Sex  string `json:"sex"`
}

// Study is a study found on the PACS by DQR's C-FIND.
type Study struct {
	StudyInstanceUID       string   `json:"studyInstanceUid"`
	StudyDescription       string   `json:"studyDescription"`
	AccessionNumber        string   `json:"accessionNumber"`
	StudyDate              string   `json:"studyDate"`
	ModalitiesInStudy      []string `json:"modalitiesInStudy"`
	ReferringPhysicianName string   `json:"referringPhysicianName"`
	Patient                Patient  `json:"patient"`
}

// ImportStudy is one study of an import request. RelabelMap's "Subject"
// becomes the XNAT subject label and "Session" the experiment label.
type ImportStudy struct {
	StudyInstanceUID string            `json:"studyInstanceUid"`
	AccessionNumber  string            `json:"accessionNumber"`
	RelabelMap       map[string]string `json:"relabelMap"`
}

// ImportRequest is a DQR import (C-MOVE) request (POST /xapi/dqr/import).
type ImportRequest struct {
	PacsID int `json:"pacsId"`
	// AETitle and Port name the C-MOVE destination: XNAT's DICOM SCP
	// receiver. DQR checks "<aeTitle>:<port>" against the registered
	// receivers, so Port is the DICOM port (8104), not the web port.
	AETitle     string        `json:"aeTitle"`
	Port        int           `json:"port"`
	ProjectID   string        `json:"projectId"`
	ForceImport bool          `json:"forceImport"`
	Studies     []ImportStudy `json:"studies"`
}

// ImportResponse is DQR's entry for one queued study.
type ImportResponse struct {
	ID              int64  `json:"id"`
	PacsID          int    `json:"pacsId"`
	Status          string `json:"status"`
	AccessionNumber string `json:"accessionNumber"`
	QueuedTime      int64  `json:"queuedTime"`
	Created         int64  `json:"created"`
	Priority        int    `json:"priority"`
}

// StatusQueued is the status of a study DQR has queued.
const StatusQueued = "QUEUED"

// NewImportStudy returns the import entry of a study: subject labelled with a
// fresh UUID, session labelled with the accession number, so the experiment
// label is the accession number.
func NewImportStudy(studyInstanceUID, accessionNumber string) ImportStudy {
	return ImportStudy{StudyInstanceUID: studyInstanceUID, AccessionNumber: accessionNumber,
		RelabelMap: map[string]string{"Subject": uuid.NewString(), "Session": accessionNumber}}
}

// NewImportRequest returns a forced import of studies into project, to the
// client's receiver, from the resolved PACS (filled in by QueueImport).
func NewImportRequest(project string, studies ...ImportStudy) ImportRequest {
	return ImportRequest{ProjectID: project, ForceImport: true, Studies: studies}
}

// ListPACS lists the PACS registrations.
func (cl *Client) ListPACS(ctx context.Context) ([]PACS, error) {
	var out []PACS
	if _, err := cl.doJSON(ctx, call{op: "list pacs", method: http.MethodGet, path: []string{"xapi", "pacs"}}, &out); err != nil {
		return nil, err
	}
	return out, nil
}

// PACSID returns the id of the PACS registered in XNAT: the first
// registration, cached for the life of the client. When the registrations
// cannot be read or there are none it returns Config.PACSID (not cached).
func (cl *Client) PACSID(ctx context.Context) int {
	cl.pacsMu.Lock()
	defer cl.pacsMu.Unlock()
	if cl.pacsID != 0 {
		return cl.pacsID
	}
	ps, err := cl.ListPACS(ctx)
	switch {
	case err != nil:
		cl.log.Warn("could not resolve the PACS id; using the configured one", "pacs_id", cl.cfg.PACSID, "error", err)
		return cl.cfg.PACSID
	case len(ps) == 0:
		cl.log.Warn("xnat has no PACS registered; using the configured id", "pacs_id", cl.cfg.PACSID)
		return cl.cfg.PACSID
	}
	if len(ps) > 1 {
		cl.log.Warn("xnat has several PACS registrations; using the first", "count", len(ps), "ae_title", ps[0].AETitle)
	}
	cl.pacsID = ps[0].ID
	return cl.pacsID
}

// PingPACS pings a PACS through XNAT (ErrNotFound for an unknown id).
func (cl *Client) PingPACS(ctx context.Context, id int) (PACSStatus, error) {
	var st PACSStatus
	_, err := cl.doJSON(ctx, call{op: "ping pacs", method: http.MethodGet, path: []string{"xapi", "pacs", strconv.Itoa(id), "status"}}, &st)
	return st, err
}

// CheckPACS pings a PACS and requires it reachable (ErrPACSUnreachable) and
// enabled (ErrPACSDisabled).
func (cl *Client) CheckPACS(ctx context.Context, id int) error {
	st, err := cl.PingPACS(ctx, id)
	if err != nil {
		return err
	}
	if !st.Successful {
		return fmt.Errorf("pacs %d: %w", id, ErrPACSUnreachable)
	}
	if !st.Enabled {
		return fmt.Errorf("pacs %d: %w", id, ErrPACSDisabled)
	}
	return nil
}

// QueryStudies finds the studies of an accession number on the PACS (DQR
// C-FIND). No match is an empty list. A 401 from DQR (the service account
// lacks the Dqr role) is an *Error with status 401.
func (cl *Client) QueryStudies(ctx context.Context, accessionNumber string) ([]Study, error) {
	body := map[string]any{"accessionNumber": accessionNumber, "pacsId": cl.PACSID(ctx), "modality": ""}
	c, err := jsonCall("query pacs", http.MethodPost, body, "xapi", "dqr", "query", "studies")
	if err != nil {
		return nil, err
	}
	c.ok = []int{http.StatusOK, http.StatusNoContent}
	var out []Study
	if _, err := cl.doJSON(ctx, c, &out); err != nil {
		return nil, err
	}
	if out == nil {
		out = []Study{}
	}
	return out, nil
}

// QueueImport asks DQR to import studies (C-MOVE) into req.ProjectID and
// returns DQR's entry per queued study. Before sending it checks that the
// project exists, removes repeated studies (the last entry of a study
// instance UID wins, at its first position), gives every study without a
// relabel map the one NewImportStudy makes, fills PacsID (resolved),
// AETitle and Port from the client when zero, and checks the PACS
// (CheckPACS).
//
// An empty reply is ErrNoStudies. A reply with fewer entries than studies is
// returned together with ErrStudiesMissing. Entries whose status is not
// StatusQueued are returned as they are.
func (cl *Client) QueueImport(ctx context.Context, req ImportRequest) ([]ImportResponse, error) {
	if len(req.Studies) == 0 {
		return nil, fmt.Errorf("xnat queue import: no studies")
	}
	if _, err := cl.GetProject(ctx, req.ProjectID); err != nil {
		return nil, err
	}
	req.Studies = dedupeStudies(req.Studies)
	for i, s := range req.Studies {
		if len(s.RelabelMap) == 0 {
			req.Studies[i].RelabelMap = NewImportStudy(s.StudyInstanceUID, s.AccessionNumber).RelabelMap
		}
	}
	if req.PacsID == 0 {
		req.PacsID = cl.PACSID(ctx)
	}
	if req.AETitle == "" {
		req.AETitle = cl.cfg.AETitle
	}
	if req.Port == 0 {
		req.Port = cl.cfg.ReceiverPort
	}
	if err := cl.CheckPACS(ctx, req.PacsID); err != nil {
		return nil, err
	}
	c, err := jsonCall("queue import", http.MethodPost, req, "xapi", "dqr", "import")
	if err != nil {
		return nil, err
	}
	var out []ImportResponse
	if _, err := cl.doJSON(ctx, c, &out); err != nil {
		return nil, err
	}
	switch {
	case len(out) == 0:
		return nil, ErrNoStudies
	case len(out) != len(req.Studies):
		return out, fmt.Errorf("%w: %d requested, %d queued", ErrStudiesMissing, len(req.Studies), len(out))
	}
	return out, nil
}

func dedupeStudies(in []ImportStudy) []ImportStudy {
	pos := map[string]int{}
	var out []ImportStudy
	for _, s := range in {
		if i, ok := pos[s.StudyInstanceUID]; ok {
			out[i] = s
			continue
		}
		pos[s.StudyInstanceUID] = len(out)
		out = append(out, s)
	}
	return out
}

// DeleteQueuedRequests removes queued DQR requests by id.
func (cl *Client) DeleteQueuedRequests(ctx context.Context, ids []int64) error {
	if ids == nil {
		ids = []int64{}
	}
	c, err := jsonCall("delete queued imports", http.MethodPost, ids, "xapi", "dqr", "import", "queue")
	if err != nil {
		return err
	}
	_, err = cl.doJSON(ctx, c, nil)
	return err
}
