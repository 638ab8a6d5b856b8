package xnattest

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"mime"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

const insertDateLayout = "2006-01-02 15:04:05.0"

var projectIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// Project groups XNAT knows, and their group-id suffixes.
var projectGroups = map[string]string{"Owners": "owner", "Members": "member", "Collaborators": "collaborator"}

type projectRow struct {
	PIFirstname string `json:"pi_firstname"`
	SecondaryID string `json:"secondary_ID"`
	PILastname  string `json:"pi_lastname"`
	Name        string `json:"name"`
	Description string `json:"description"`
	ID          string `json:"ID"`
	URI         string `json:"URI"`
}

type subjectRow struct {
	ID         string `json:"ID"`
	Label      string `json:"label"`
	InsertDate string `json:"insert_date"`
	Project    string `json:"project"`
	InsertUser string `json:"insert_user"`
	URI        string `json:"URI"`
}

type experimentRow struct {
	ID                    string `json:"ID"`
	Label                 string `json:"label"`
	Date                  string `json:"date"`
	Project               string `json:"project"`
	InsertDate            string `json:"insert_date"`
	XSIType               string `json:"xsiType"`
	URI                   string `json:"URI"`
	SubjectAssessorDataID string `json:"xnat:subjectassessordata/id"`
}

type projectUserRow struct {
	Login       string `json:"login"`
	Firstname   string `json:"firstname"`
	Lastname    string `json:"lastname"`
	Email       string `json:"email"`
	DisplayName string `json:"displayname"`
	GroupID     string `json:"GROUP_ID"`
	XdatUserID  string `json:"xdat_user_id"`
}

func (s *Server) projectRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /data/projects", s.listProjects)
	mux.HandleFunc("POST /data/projects", s.createProject)
	mux.HandleFunc("GET /data/projects/{p}", s.getProject)
	mux.HandleFunc("DELETE /data/projects/{p}", s.deleteProject)
	mux.HandleFunc("GET /data/projects/{p}/prearchive_code", s.getPrearchive)
	mux.HandleFunc("PUT /data/projects/{p}/prearchive_code/{code}", s.setPrearchive)
	mux.HandleFunc("GET /data/projects/{p}/subjects", s.listSubjects)
	mux.HandleFunc("GET /data/projects/{p}/experiments", s.listProjectExperiments)
	mux.HandleFunc("GET /data/experiments", s.listExperiments)
	mux.HandleFunc("GET /data/projects/{p}/experiments/{x}", s.getExperiment)
	mux.HandleFunc("GET /data/projects/{p}/users", s.listProjectUsers)
	mux.HandleFunc("PUT /data/projects/{p}/users/{group}/{u}", s.setProjectUser(true))
	mux.HandleFunc("DELETE /data/projects/{p}/users/{group}/{u}", s.setProjectUser(false))
}

// visibleProject returns the project if the caller may see it.
func (s *Server) visibleProject(r *http.Request, id string) *project {
	p := s.st.projects[id]
	if p == nil {
		return nil
	}
	u := callerOf(r).user
	if u.Roles["Administrator"] || p.members[u.Username] != "" {
		return p
	}
	return nil
}

func (p *project) row() projectRow {
	return projectRow{SecondaryID: p.SecondaryID, Name: p.Name, Description: p.Description, ID: p.ID, URI: "/data/projects/" + p.ID}
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	var rows []projectRow
	for _, p := range s.st.sortedProjects() {
		if s.visibleProject(r, p.ID) != nil {
			rows = append(rows, p.row())
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resultSet(rows))
}

// parseProjectData reads the children of a projectData document.
func parseProjectData(body []byte) (Project, error) {
	if bytes.Contains(bytes.ToUpper(body), []byte("<!DOCTYPE")) {
		return Project{}, errors.New("DOCTYPE is not allowed")
	}
	dec := xml.NewDecoder(bytes.NewReader(body))
	var p Project
	depth := 0
	var field *string
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			return Project{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 1 && t.Name.Local != "projectData" {
				return Project{}, errors.New("root element must be projectData")
			}
			field = nil
			if depth == 2 {
				switch t.Name.Local {
				case "ID":
					field = &p.ID
				case "secondary_ID":
					field = &p.SecondaryID
				case "name":
					field = &p.Name
				case "description":
					field = &p.Description
				}
			}
		case xml.CharData:
			if field != nil {
				*field += string(t)
			}
		case xml.EndElement:
			depth--
			field = nil
		}
	}
	if depth != 0 {
		return Project{}, errors.New("unbalanced document")
	}
	return p, nil
}

func (s *Server) createProject(w http.ResponseWriter, r *http.Request) {
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/xml" && mt != "text/xml" {
		textError(w, http.StatusUnsupportedMediaType, "Expected an XML document")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		textError(w, http.StatusBadRequest, "read body")
		return
	}
	p, err := parseProjectData(body)
	if err != nil {
		textError(w, http.StatusBadRequest, "Invalid projectData: "+err.Error())
		return
	}
	p.ID = strings.TrimSpace(p.ID)
	if !projectIDPattern.MatchString(p.ID) {
		textError(w, http.StatusBadRequest, "Invalid project ID")
		return
	}
	s.mu.Lock()
	err = s.st.createProject(p)
	if err == nil {
		// The creator owns the project.
		s.st.projects[p.ID].members[callerOf(r).user.Username] = "Owners"
	}
	s.mu.Unlock()
	if err != nil {
		textError(w, http.StatusConflict, "Project ID, secondary ID or name already in use")
		return
	}
	if s.opts.SiteURLUnset {
		textError(w, http.StatusInternalServerError, "The site URL is not set")
		return
	}
	writeText(w, http.StatusOK, p.ID)
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	p := s.visibleProject(r, r.PathValue("p"))
	var row projectRow
	if p != nil {
		row = p.row()
	}
	s.mu.Unlock()
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"items": []any{map[string]any{
		"meta":        map[string]any{"xsi:type": "xnat:projectData", "isHistory": false},
		"data_fields": map[string]any{"ID": row.ID, "secondary_ID": row.SecondaryID, "name": row.Name, "description": row.Description},
		"children":    []any{},
	}}})
}

func (s *Server) deleteProject(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.visibleProject(r, r.PathValue("p"))
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	if !callerOf(r).user.Roles["Administrator"] && p.members[callerOf(r).user.Username] != "Owners" {
		textError(w, http.StatusForbidden, "Insufficient privileges")
		return
	}
	for id, x := range s.st.experiments {
		if x.Project == p.ID {
			delete(s.st.experiments, id)
		}
	}
	for id, sub := range s.st.subjects {
		if sub.Project == p.ID {
			delete(s.st.subjects, id)
		}
	}
	delete(s.st.projects, p.ID)
	w.WriteHeader(http.StatusOK)
}

func (s *Server) getPrearchive(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	p := s.visibleProject(r, r.PathValue("p"))
	code := 0
	if p != nil {
		code = p.prearchive
	}
	s.mu.Unlock()
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	writeText(w, http.StatusOK, strconv.Itoa(code))
}

func (s *Server) setPrearchive(w http.ResponseWriter, r *http.Request) {
	code, err := strconv.Atoi(r.PathValue("code"))
	if err != nil || (code != 0 && code != 4 && code != 5) {
		textError(w, http.StatusBadRequest, "Invalid prearchive code")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.visibleProject(r, r.PathValue("p"))
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	p.prearchive = code
	w.WriteHeader(http.StatusOK)
}

func (s *Server) listSubjects(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	p := s.visibleProject(r, r.PathValue("p"))
	var rows []subjectRow
	if p != nil {
		for _, sub := range s.st.subjects {
			if sub.Project == p.ID {
				rows = append(rows, subjectRow{ID: sub.ID, Label: sub.Label, InsertDate: sub.inserted.Format(insertDateLayout),
					Project: sub.Project, InsertUser: sub.InsertUser, URI: "/data/subjects/" + sub.ID})
			}
		}
	}
	s.mu.Unlock()
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].ID < rows[j].ID })
	writeJSON(w, http.StatusOK, resultSet(rows))
}

func (x *experiment) row() experimentRow {
	return experimentRow{ID: x.ID, Label: x.Label, Date: x.Date, Project: x.Project, InsertDate: x.inserted.Format(insertDateLayout),
		XSIType: x.XSIType, URI: "/data/experiments/" + x.ID, SubjectAssessorDataID: x.ID}
}

// listProjectExperiments is the project-scoped listing, which (like XNAT's
// per-data-type element security) leaves out chest X-ray sessions.
func (s *Server) listProjectExperiments(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	p := s.visibleProject(r, r.PathValue("p"))
	var rows []experimentRow
	if p != nil {
		for _, x := range s.st.projectExperiments(p.ID) {
			if x.XSIType != "xnat:dxSessionData" {
				rows = append(rows, x.row())
			}
		}
	}
	s.mu.Unlock()
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	writeJSON(w, http.StatusOK, resultSet(rows))
}

// listExperiments is the global listing, filtered by ?project=.
func (s *Server) listExperiments(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	want := r.URL.Query().Get("project")
	s.mu.Lock()
	var rows []experimentRow
	for _, p := range s.st.sortedProjects() {
		if (want != "" && p.ID != want) || s.visibleProject(r, p.ID) == nil {
			continue
		}
		for _, x := range s.st.projectExperiments(p.ID) {
			rows = append(rows, x.row())
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, resultSet(rows))
}

func (s *Server) getExperiment(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	var doc map[string]any
	if p := s.visibleProject(r, r.PathValue("p")); p != nil {
		if x := s.st.findExperiment(p.ID, r.PathValue("x")); x != nil {
			doc = x.document()
		}
	}
	s.mu.Unlock()
	if doc == nil {
		textError(w, http.StatusNotFound, "Experiment not found")
		return
	}
	writeJSON(w, http.StatusOK, doc)
}

func (x *experiment) document() map[string]any {
	var scans []any
	for _, sc := range x.scans {
		scans = append(scans, map[string]any{
			"meta":        map[string]any{"xsi:type": sc.xsiType()},
			"data_fields": map[string]any{"ID": sc.ID, "type": sc.Type, "image_session_ID": x.ID},
			"children":    []any{},
		})
	}
	children := []any{}
	if len(scans) > 0 {
		children = append(children, map[string]any{"field": "scans/scan", "items": scans})
	}
	return map[string]any{"items": []any{map[string]any{
		"meta": map[string]any{"xsi:type": x.XSIType, "isHistory": false},
		"data_fields": map[string]any{
			"ID": x.ID, "label": x.Label, "project": x.Project, "subject_ID": x.SubjectID, "date": x.Date,
		},
		"children": children,
	}}}
}

func (sc *scan) xsiType() string {
	if sc.XSIType != "" {
		return sc.XSIType
	}
	return "xnat:mrScanData"
}

func (s *Server) listProjectUsers(w http.ResponseWriter, r *http.Request) {
	if !jsonFormat(w, r) {
		return
	}
	s.mu.Lock()
	p := s.visibleProject(r, r.PathValue("p"))
	var rows []projectUserRow
	if p != nil {
		for name, group := range p.members {
			u := s.st.users[name]
			if u == nil {
				continue
			}
			rows = append(rows, projectUserRow{Login: u.Username, Firstname: u.FirstName, Lastname: u.LastName, Email: u.Email,
				DisplayName: group, GroupID: p.ID + "_" + projectGroups[group], XdatUserID: strconv.Itoa(u.ID)})
		}
	}
	s.mu.Unlock()
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	sort.Slice(rows, func(i, j int) bool { return rows[i].Login < rows[j].Login })
	writeJSON(w, http.StatusOK, resultSet(rows))
}

func (s *Server) setProjectUser(add bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		group := r.PathValue("group")
		if _, ok := projectGroups[group]; !ok {
			textError(w, http.StatusBadRequest, "Unknown project group "+group)
			return
		}
		s.mu.Lock()
		defer s.mu.Unlock()
		p := s.visibleProject(r, r.PathValue("p"))
		if p == nil {
			textError(w, http.StatusNotFound, "Project not found")
			return
		}
		c := callerOf(r).user
		if !c.Roles["Administrator"] && p.members[c.Username] != "Owners" {
			textError(w, http.StatusForbidden, "Insufficient privileges")
			return
		}
		name := r.PathValue("u")
		if s.st.users[name] == nil {
			textError(w, http.StatusNotFound, "User not found")
			return
		}
		if add {
			p.members[name] = group
		} else if p.members[name] == group {
			delete(p.members, name)
		}
		w.WriteHeader(http.StatusOK)
	}
}
