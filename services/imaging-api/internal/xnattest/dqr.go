package xnattest

import (
	"context"
	"fmt"
	"maps"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/google/uuid"
)

// DQR request statuses.
const (
	StatusQueued     = "QUEUED"
	StatusProcessing = "PROCESSING"
	StatusIssued     = "ISSUED"
	StatusReceived   = "RECEIVED"
	StatusFailed     = "FAILED"
)

type pacsJSON struct {
	ID                           int    `json:"id"`
	AETitle                      string `json:"aeTitle"`
	Host                         string `json:"host"`
	Label                        string `json:"label"`
	QueryRetrievePort            int    `json:"queryRetrievePort"`
	Queryable                    bool   `json:"queryable"`
	Storable                     bool   `json:"storable"`
	DefaultQueryRetrievePacs     bool   `json:"defaultQueryRetrievePacs"`
	DefaultStoragePacs           bool   `json:"defaultStoragePacs"`
	OrmStrategySpringBeanID      string `json:"ormStrategySpringBeanId"`
	SupportsExtendedNegotiations bool   `json:"supportsExtendedNegotiations"`
}

type pacsStatusJSON struct {
	ID         int   `json:"id"`
	PacsID     int   `json:"pacsId"`
	Successful bool  `json:"successful"`
	PingTime   int64 `json:"pingTime"`
	Created    int64 `json:"created"`
	Timestamp  int64 `json:"timestamp"`
	Enabled    bool  `json:"enabled"`
	Disabled   int64 `json:"disabled"`
}

type patientJSON struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	Sex  string `json:"sex"`
}

type studyJSON struct {
	StudyInstanceUID       string      `json:"studyInstanceUid"`
	StudyDescription       string      `json:"studyDescription"`
	AccessionNumber        string      `json:"accessionNumber"`
	StudyDate              string      `json:"studyDate"`
	ModalitiesInStudy      []string    `json:"modalitiesInStudy"`
	ReferringPhysicianName string      `json:"referringPhysicianName"`
	Patient                patientJSON `json:"patient"`
}

type importStudyJSON struct {
	StudyInstanceUID string            `json:"studyInstanceUid"`
	AccessionNumber  string            `json:"accessionNumber"`
	RelabelMap       map[string]string `json:"relabelMap"`
}

type importRequestJSON struct {
	PacsID      int               `json:"pacsId"`
	AETitle     string            `json:"aeTitle"`
	Port        int               `json:"port"`
	ProjectID   string            `json:"projectId"`
	ForceImport bool              `json:"forceImport"`
	Studies     []importStudyJSON `json:"studies"`
}

type importResponseJSON struct {
	ID               int64             `json:"id"`
	PacsID           int               `json:"pacsId"`
	Status           string            `json:"status"`
	AccessionNumber  string            `json:"accessionNumber"`
	StudyInstanceUID string            `json:"studyInstanceUid"`
	XnatProject      string            `json:"xnatProject"`
	Destination      string            `json:"destination"`
	Username         string            `json:"username"`
	RelabelMap       map[string]string `json:"relabelMap"`
	QueuedTime       int64             `json:"queuedTime"`
	Created          int64             `json:"created"`
	Timestamp        int64             `json:"timestamp"`
	Priority         int               `json:"priority"`
}

func (s *Server) dqrRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /xapi/pacs", s.listPACS)
	mux.HandleFunc("POST /xapi/pacs", s.createPACS)
	mux.HandleFunc("GET /xapi/pacs/{id}", s.getPACS)
	mux.HandleFunc("PUT /xapi/pacs/{id}", s.updatePACS)
	mux.HandleFunc("DELETE /xapi/pacs/{id}", s.deletePACS)
	mux.HandleFunc("GET /xapi/pacs/{id}/status", s.pacsStatus)
	mux.HandleFunc("POST /xapi/pacs/{id}/availability", s.pacsAvailability)
	mux.HandleFunc("GET /xapi/dqr/settings", s.dqrSettings)
	mux.HandleFunc("POST /xapi/dqr/query/studies", s.queryStudies)
	mux.HandleFunc("POST /xapi/dqr/import", s.queueImport)
	mux.HandleFunc("GET /xapi/dqr/import/queue", s.listQueue)
	mux.HandleFunc("POST /xapi/dqr/import/queue", s.deleteQueued)
}

func (p *pacs) json() pacsJSON {
	return pacsJSON{ID: p.ID, AETitle: p.AETitle, Host: p.Host, Label: p.Label, QueryRetrievePort: p.Port, Queryable: true,
		Storable: true, DefaultQueryRetrievePacs: true, DefaultStoragePacs: true, OrmStrategySpringBeanID: "dicomOrmStrategy",
		SupportsExtendedNegotiations: true}
}

func (s *Server) pacsAt(w http.ResponseWriter, r *http.Request) *pacs {
	id, err := strconv.Atoi(r.PathValue("id"))
	p := s.st.pacs[id]
	if err != nil || p == nil {
		textError(w, http.StatusNotFound, "PACS not found")
		return nil
	}
	return p
}

func (s *Server) listPACS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	out := []pacsJSON{}
	for _, id := range slices.Sorted(maps.Keys(s.st.pacs)) {
		out = append(out, s.st.pacs[id].json())
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) getPACS(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pacsAt(w, r); p != nil {
		writeJSON(w, http.StatusOK, p.json())
	}
}

func (s *Server) createPACS(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	var b pacsJSON
	if !decodeJSON(w, r, &b) {
		return
	}
	if b.AETitle == "" || b.Host == "" || b.QueryRetrievePort == 0 {
		textError(w, http.StatusBadRequest, "aeTitle, host and queryRetrievePort are required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	id := s.st.addPACS(PACS{AETitle: b.AETitle, Host: b.Host, Label: b.Label, Port: b.QueryRetrievePort})
	writeJSON(w, http.StatusCreated, s.st.pacs[id].json())
}

func (s *Server) updatePACS(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	var b pacsJSON
	if !decodeJSON(w, r, &b) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pacsAt(w, r)
	if p == nil {
		return
	}
	if b.AETitle != "" {
		p.AETitle = b.AETitle
	}
	if b.Host != "" {
		p.Host = b.Host
	}
	if b.Label != "" {
		p.Label = b.Label
	}
	if b.QueryRetrievePort != 0 {
		p.Port = b.QueryRetrievePort
	}
	writeJSON(w, http.StatusOK, p.json())
}

func (s *Server) deletePACS(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.pacsAt(w, r); p != nil {
		delete(s.st.pacs, p.ID)
		w.WriteHeader(http.StatusOK)
	}
}

func (s *Server) pacsStatus(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pacsAt(w, r)
	if p == nil {
		return
	}
	now := s.opts.Now().UnixMilli()
	writeJSON(w, http.StatusOK, pacsStatusJSON{ID: p.ID, PacsID: p.ID, Successful: !p.Unreachable, PingTime: 3,
		Created: now, Timestamp: now, Enabled: !p.Disabled})
}

func (s *Server) pacsAvailability(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator") {
		return
	}
	var b map[string]any
	if !decodeJSON(w, r, &b) {
		return
	}
	day, _ := b["dayOfWeek"].(string)
	if day == "" {
		textError(w, http.StatusBadRequest, "dayOfWeek is required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.pacsAt(w, r)
	if p == nil {
		return
	}
	if _, ok := p.availability[day]; ok {
		textError(w, http.StatusBadRequest, "Availability overlaps an existing entry")
		return
	}
	p.availability[day] = b
	writeJSON(w, http.StatusCreated, b)
}

func (s *Server) dqrSettings(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"dqrCallingAe": s.opts.ReceiverAETitle, "allowAllUsersToUseDqr": false})
}

func (s *Server) queryStudies(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusUnauthorized, "Administrator", "Dqr") {
		return
	}
	var b struct {
		AccessionNumber string `json:"accessionNumber"`
		PacsID          int    `json:"pacsId"`
		Modality        string `json:"modality"`
	}
	if !decodeJSON(w, r, &b) {
		return
	}
	if b.AccessionNumber == "" {
		textError(w, http.StatusBadRequest, "accessionNumber is required")
		return
	}
	s.mu.Lock()
	p := s.st.pacs[b.PacsID]
	var out []studyJSON
	unreachable := p != nil && p.Unreachable
	if p != nil && !unreachable {
		for _, st := range p.studies {
			if strings.EqualFold(st.AccessionNumber, b.AccessionNumber) &&
				(b.Modality == "" || slices.Contains(st.Modalities, b.Modality)) {
				out = append(out, studyJSON{
					StudyInstanceUID: st.StudyInstanceUID, StudyDescription: st.Description, AccessionNumber: st.AccessionNumber,
					StudyDate: st.Date, ModalitiesInStudy: append([]string{}, st.Modalities...), ReferringPhysicianName: st.ReferringPhysician,
					Patient: patientJSON{ID: st.PatientID, Name: st.PatientName, Sex: st.PatientSex},
				})
			}
		}
	}
	s.mu.Unlock()
	switch {
	case p == nil:
		textError(w, http.StatusNotFound, "PACS not found")
	case unreachable:
		textError(w, http.StatusInternalServerError, "C-FIND failed: PACS not reachable")
	case len(out) == 0:
		w.WriteHeader(http.StatusNoContent)
	default:
		writeJSON(w, http.StatusOK, out)
	}
}

func (r *ImportRequest) json() importResponseJSON {
	return importResponseJSON{ID: r.ID, PacsID: r.PacsID, Status: r.Status, AccessionNumber: r.AccessionNumber,
		StudyInstanceUID: r.StudyInstanceUID, XnatProject: r.Project, Destination: r.Destination, Username: r.Username,
		RelabelMap: r.RelabelMap}
}

func (s *Server) queueImport(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusUnauthorized, "Administrator", "Dqr") {
		return
	}
	var b importRequestJSON
	if !decodeJSON(w, r, &b) {
		return
	}
	if b.ProjectID == "" || len(b.Studies) == 0 {
		textError(w, http.StatusBadRequest, "projectId and at least one study are required")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.pacs[b.PacsID]
	if p == nil {
		textError(w, http.StatusNotFound, "PACS not found")
		return
	}
	now := s.opts.Now()
	out := []importResponseJSON{}
	seen := map[string]bool{}
	for _, st := range b.Studies {
		if seen[st.StudyInstanceUID] || !p.holds(st.StudyInstanceUID) {
			continue
		}
		seen[st.StudyInstanceUID] = true
		req := &ImportRequest{ID: requestSeq.Add(1), PacsID: p.ID, Status: StatusQueued, AccessionNumber: st.AccessionNumber,
			StudyInstanceUID: st.StudyInstanceUID, Project: b.ProjectID, Destination: fmt.Sprintf("%s:%d", b.AETitle, b.Port),
			Username: callerOf(r).user.Username, RelabelMap: maps.Clone(st.RelabelMap)}
		if s.opts.DB != nil {
			if _, err := s.opts.DB.Exec(r.Context(), `INSERT INTO xhbm_queued_pacs_request
				(id, created, timestamp, accession_number, status, xnat_project) VALUES ($1, $2, $2, $3, $4, $5)`,
				req.ID, now.UTC(), req.AccessionNumber, req.Status, req.Project); err != nil {
				textError(w, http.StatusInternalServerError, "queue: "+err.Error())
				return
			}
		}
		s.st.requests = append(s.st.requests, req)
		j := req.json()
		j.QueuedTime, j.Created, j.Timestamp = now.UnixMilli(), now.UnixMilli(), now.UnixMilli()
		out = append(out, j)
	}
	writeJSON(w, http.StatusOK, out)
}

func (p *pacs) holds(uid string) bool {
	for _, st := range p.studies {
		if st.StudyInstanceUID == uid {
			return true
		}
	}
	return false
}

func (p *pacs) study(uid string) (Study, bool) {
	for _, st := range p.studies {
		if st.StudyInstanceUID == uid {
			return st, true
		}
	}
	return Study{}, false
}

func (s *Server) listQueue(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusUnauthorized, "Administrator", "Dqr") {
		return
	}
	s.mu.Lock()
	out := []importResponseJSON{}
	for _, req := range s.st.requests {
		if !req.Executed {
			out = append(out, req.json())
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteQueued(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusUnauthorized, "Administrator", "Dqr") {
		return
	}
	var ids []int64
	if !decodeJSON(w, r, &ids) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	drop := map[int64]bool{}
	for _, id := range ids {
		drop[id] = true
	}
	if s.opts.DB != nil {
		if _, err := s.opts.DB.Exec(r.Context(), `DELETE FROM xhbm_queued_pacs_request WHERE id = ANY($1)`, ids); err != nil {
			textError(w, http.StatusInternalServerError, "delete: "+err.Error())
			return
		}
	}
	s.st.requests = slices.DeleteFunc(s.st.requests, func(req *ImportRequest) bool { return !req.Executed && drop[req.ID] })
	w.WriteHeader(http.StatusOK)
}

// ExecuteImport moves a queued request to the executed table with status,
// or changes an executed request's status.
func (s *Server) ExecuteImport(ctx context.Context, id int64, status string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.execute(ctx, id, status)
}

func (s *Server) execute(ctx context.Context, id int64, status string) error {
	req := s.st.request(id)
	if req == nil {
		return fmt.Errorf("import request %d: %w", id, ErrNotFound)
	}
	now := s.opts.Now().UTC()
	if s.opts.DB != nil {
		if !req.Executed {
			if _, err := s.opts.DB.Exec(ctx, `DELETE FROM xhbm_queued_pacs_request WHERE id = $1`, id); err != nil {
				return fmt.Errorf("dequeue %d: %w", id, err)
			}
			if _, err := s.opts.DB.Exec(ctx, `INSERT INTO xhbm_executed_pacs_request
				(id, created, timestamp, accession_number, status, xnat_project) VALUES ($1, $2, $2, $3, $4, $5)`,
				id, now, req.AccessionNumber, status, req.Project); err != nil {
				return fmt.Errorf("execute %d: %w", id, err)
			}
		} else if _, err := s.opts.DB.Exec(ctx, `UPDATE xhbm_executed_pacs_request SET status = $2, timestamp = $3 WHERE id = $1`,
			id, status, now); err != nil {
			return fmt.Errorf("update %d: %w", id, err)
		}
	}
	req.Executed, req.Status = true, status
	return nil
}

// FailImport marks a request FAILED (a C-MOVE that failed for good).
func (s *Server) FailImport(ctx context.Context, id int64) error {
	return s.ExecuteImport(ctx, id, StatusFailed)
}

// CompleteImport executes a request to RECEIVED and archives its study as
// an experiment labelled relabelMap.Session (or the accession number) under
// a subject labelled relabelMap.Subject. A request whose destination is not
// the SCP receiver fails instead (ErrDestination); one whose project does
// not exist leaves a direct-archive ERROR row (ErrNotFound).
func (s *Server) CompleteImport(ctx context.Context, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.st.request(id)
	if req == nil {
		return fmt.Errorf("import request %d: %w", id, ErrNotFound)
	}
	if req.Destination != fmt.Sprintf("%s:%d", s.opts.ReceiverAETitle, s.opts.ReceiverPort) {
		if err := s.execute(ctx, id, StatusFailed); err != nil {
			return err
		}
		return fmt.Errorf("import request %d to %q: %w", id, req.Destination, ErrDestination)
	}
	if err := s.execute(ctx, id, StatusReceived); err != nil {
		return err
	}
	label := req.sessionLabel()
	if s.st.projects[req.Project] == nil {
		if err := s.archiveError(ctx, req.Project, label); err != nil {
			return err
		}
		return fmt.Errorf("project %q: %w", req.Project, ErrNotFound)
	}
	var st Study
	if p := s.st.pacs[req.PacsID]; p != nil {
		st, _ = p.study(req.StudyInstanceUID)
	}
	subjectLabel := req.RelabelMap["Subject"]
	if subjectLabel == "" {
		subjectLabel = uuid.NewString()
	}
	sub := s.st.ensureSubject(req.Project, subjectLabel, req.Username)
	if s.st.findExperiment(req.Project, label) == nil {
		if _, err := s.st.addExperiment(req.Project, sub, Experiment{Label: label, XSIType: st.XSIType, Date: st.Date, Scans: st.Scans}); err != nil {
			return err
		}
	}
	if s.opts.DB != nil {
		if _, err := s.opts.DB.Exec(ctx, `DELETE FROM xhbm_direct_archive_session WHERE project = $1 AND (name = $2 OR folder_name = $2)`,
			req.Project, label); err != nil {
			return fmt.Errorf("archive %d: %w", id, err)
		}
	}
	return nil
}

// FailArchive executes a request to RECEIVED and records its session's
// direct archive as ERROR, as when XNAT cannot build the session.
func (s *Server) FailArchive(ctx context.Context, id int64) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	req := s.st.request(id)
	if req == nil {
		return fmt.Errorf("import request %d: %w", id, ErrNotFound)
	}
	if err := s.execute(ctx, id, StatusReceived); err != nil {
		return err
	}
	return s.archiveError(ctx, req.Project, req.sessionLabel())
}

func (s *Server) archiveError(ctx context.Context, project, label string) error {
	if s.opts.DB == nil {
		return nil
	}
	now := s.opts.Now().UTC()
	if _, err := s.opts.DB.Exec(ctx, `INSERT INTO xhbm_direct_archive_session (created, timestamp, folder_name, name, status, project)
		VALUES ($1, $1, $2, $2, 'ERROR', $3)`, now, label, project); err != nil {
		return fmt.Errorf("archive error row: %w", err)
	}
	return nil
}

func (r *ImportRequest) sessionLabel() string {
	if l := r.RelabelMap["Session"]; l != "" {
		return l
	}
	return r.AccessionNumber
}
