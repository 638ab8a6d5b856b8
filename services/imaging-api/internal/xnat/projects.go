package xnat

import (
	"context"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// Project is an XNAT project as listed by GET /data/projects.
type Project struct {
	PIFirstname string `json:"pi_firstname"`
	// SecondaryID is the central hub project id.
	SecondaryID string `json:"secondary_ID"`
	PILastname  string `json:"pi_lastname"`
	Name        string `json:"name"`
	Description string `json:"description"`
	// ID is the imaging (XNAT) project id.
	ID  string `json:"ID"`
	URI string `json:"URI"`
}

// NewProject is a project to create.
type NewProject struct {
	ID, SecondaryID, Name, Description string
}

// Subject is an entry of GET /data/projects/{id}/subjects.
type Subject struct {
	ID         string `json:"ID"`
	Label      string `json:"label"`
	InsertDate string `json:"insert_date"`
	Project    string `json:"project"`
	InsertUser string `json:"insert_user"`
	URI        string `json:"URI"`
}

// Experiment is an entry of GET /data/experiments?project={id}. Its label is
// the accession number for sessions imported through DQR.
type Experiment struct {
	ID                string  `json:"ID"`
	Label             string  `json:"label"`
	Date              string  `json:"date"`
	Project           string  `json:"project"`
	InsertDate        string  `json:"insert_date"`
	XSIType           string  `json:"xsiType"`
	URI               string  `json:"URI"`
	SubjectAssessorID *string `json:"xnat:subjectassessordata/id"`
}

// PrearchiveCode is a project's prearchive setting.
type PrearchiveCode int

// Prearchive settings.
const (
	// PrearchiveHold keeps incoming sessions in the prearchive.
	PrearchiveHold PrearchiveCode = 0
	// PrearchiveAutoArchive archives incoming sessions, never overwriting
	// existing ones (what FLIP sets).
	PrearchiveAutoArchive PrearchiveCode = 4
	// PrearchiveAutoArchiveOverwrite archives and overwrites.
	PrearchiveAutoArchiveOverwrite PrearchiveCode = 5
)

// resultSet is XNAT's listing envelope.
type resultSet[T any] struct {
	ResultSet struct {
		Result []T `json:"Result"`
	} `json:"ResultSet"`
}

func listing[T any](ctx context.Context, cl *Client, c call) ([]T, error) {
	var rs resultSet[T]
	if _, err := cl.doJSON(ctx, c, &rs); err != nil {
		return nil, err
	}
	if rs.ResultSet.Result == nil {
		return []T{}, nil
	}
	return rs.ResultSet.Result, nil
}

// ListProjects lists the projects the service account sees.
func (cl *Client) ListProjects(ctx context.Context) ([]Project, error) {
	return listing[Project](ctx, cl, call{op: "list projects", method: http.MethodGet, path: []string{"data", "projects"}})
}

// GetProject finds a project by id in the listing (ErrNotFound if absent).
func (cl *Client) GetProject(ctx context.Context, id string) (Project, error) {
	return cl.findProject(ctx, func(p Project) bool { return p.ID == id }, "project "+id)
}

// ProjectBySecondaryID finds the project of a central hub project
// (ErrNotFound if absent).
func (cl *Client) ProjectBySecondaryID(ctx context.Context, hubProjectID string) (Project, error) {
	return cl.findProject(ctx, func(p Project) bool { return p.SecondaryID == hubProjectID }, "project of hub project "+hubProjectID)
}

func (cl *Client) findProject(ctx context.Context, match func(Project) bool, what string) (Project, error) {
	ps, err := cl.ListProjects(ctx)
	if err != nil {
		return Project{}, err
	}
	for _, p := range ps {
		if match(p) {
			return p, nil
		}
	}
	return Project{}, fmt.Errorf("%s: %w", what, ErrNotFound)
}

// projectXML is the projectData document of POST /data/projects: the XNAT
// namespace bound to <base>/data/projects as FLIP binds it, the four fields
// as escaped element text, no declaration and no DOCTYPE.
func (cl *Client) projectXML(p NewProject) []byte {
	var b strings.Builder
	esc := func(s string) {
		_ = xml.EscapeText(&b, []byte(s))
	}
	b.WriteString(`<xnat:projectData xmlns:xnat="`)
	esc(strings.TrimRight(cl.base.String(), "/") + "/data/projects")
	b.WriteString(`">`)
	for _, f := range [][2]string{{"ID", p.ID}, {"secondary_ID", p.SecondaryID}, {"name", p.Name}, {"description", p.Description}} {
		b.WriteString("<" + f[0] + ">")
		esc(f[1])
		b.WriteString("</" + f[0] + ">")
	}
	b.WriteString("</xnat:projectData>")
	return []byte(b.String())
}

func (cl *Client) postProject(ctx context.Context, p NewProject) error {
	resp, err := cl.do(ctx, call{op: "create project", method: http.MethodPost, path: []string{"data", "projects"},
		body: cl.projectXML(p), contentType: "application/xml"})
	if err != nil {
		return err
	}
	drain(resp)
	return nil
}

// CreateProject creates a project and returns it as listed. A project with
// the same id is ErrAlreadyExists (checked first, as FLIP does, and also
// when XNAT answers 409).
func (cl *Client) CreateProject(ctx context.Context, p NewProject) (Project, error) {
	if p.ID == "" {
		return Project{}, fmt.Errorf("xnat create project: %w: empty id", ErrInvalidSegment)
	}
	if _, err := cl.GetProject(ctx, p.ID); err == nil {
		return Project{}, fmt.Errorf("project %s: %w", p.ID, ErrAlreadyExists)
	} else if !errors.Is(err, ErrNotFound) {
		return Project{}, err
	}
	if err := cl.postProject(ctx, p); err != nil {
		return Project{}, err
	}
	return cl.GetProject(ctx, p.ID)
}

// EnsureProject returns the project of p.SecondaryID (the hub project),
// creating it with p when there is none; created reports which. Calling it
// again for the same hub project returns the same project. When no
// secondary id is given the project is keyed by its id.
//
// A project whose id is taken by another hub project is ErrAlreadyExists. If
// XNAT fails the creation (5xx, 409) but the project is listed afterwards
// (XNAT 1.10 answers 500 after creating a project while its siteUrl is
// unset; a concurrent creation answers 409) the listed project is returned.
func (cl *Client) EnsureProject(ctx context.Context, p NewProject) (out Project, created bool, err error) {
	if p.ID == "" {
		return Project{}, false, fmt.Errorf("xnat ensure project: %w: empty id", ErrInvalidSegment)
	}
	same := func(q Project) bool {
		if p.SecondaryID != "" {
			return q.SecondaryID == p.SecondaryID
		}
		return q.ID == p.ID
	}
	ps, err := cl.ListProjects(ctx)
	if err != nil {
		return Project{}, false, err
	}
	for _, q := range ps {
		if same(q) {
			return q, false, nil
		}
		if q.ID == p.ID {
			return Project{}, false, fmt.Errorf("project %s belongs to another hub project: %w", p.ID, ErrAlreadyExists)
		}
	}
	postErr := cl.postProject(ctx, p)
	var xe *Error
	if postErr != nil && !(errors.As(postErr, &xe) && (xe.Status >= 500 || xe.Status == http.StatusConflict)) {
		return Project{}, false, postErr
	}
	ps, err = cl.ListProjects(ctx)
	if err != nil {
		return Project{}, false, err
	}
	for _, q := range ps {
		if same(q) {
			if postErr != nil {
				cl.log.Warn("xnat reported a failed project creation but lists the project", "status", xe.Status)
			}
			return q, xe == nil || xe.Status != http.StatusConflict, nil
		}
	}
	if postErr != nil {
		return Project{}, false, postErr
	}
	return Project{}, false, fmt.Errorf("xnat create project: %w: created project not listed", ErrBadResponse)
}

// DeleteProject deletes a project and its files (ErrNotFound if it does not
// exist) and returns it. Its queued DQR import requests are then removed,
// best effort: read from XNAT's database and deleted through DQR, with
// failures only logged.
func (cl *Client) DeleteProject(ctx context.Context, id string) (Project, error) {
	p, err := cl.GetProject(ctx, id)
	if err != nil {
		return Project{}, err
	}
	resp, err := cl.do(ctx, call{op: "delete project", method: http.MethodDelete, path: []string{"data", "projects", id},
		query: url.Values{"removeFiles": {"true"}}})
	if err != nil {
		return Project{}, err
	}
	drain(resp)
	if cl.db == nil {
		return p, nil
	}
	ids, err := cl.QueuedRequestIDs(ctx, id)
	if err != nil {
		cl.log.Warn("could not read the deleted project's queued imports", "error", err)
		return p, nil
	}
	if len(ids) > 0 {
		if err := cl.DeleteQueuedRequests(ctx, ids); err != nil {
			cl.log.Warn("could not delete the deleted project's queued imports", "count", len(ids), "error", err)
		}
	}
	return p, nil
}

// SetPrearchiveCode sets a project's prearchive behaviour.
func (cl *Client) SetPrearchiveCode(ctx context.Context, project string, code PrearchiveCode) error {
	_, err := cl.doJSON(ctx, call{op: "set prearchive code", method: http.MethodPut,
		path: []string{"data", "projects", project, "prearchive_code", fmt.Sprint(int(code))}}, nil)
	return err
}

// ListSubjects lists a project's subjects (ErrNotFound for an unknown
// project).
func (cl *Client) ListSubjects(ctx context.Context, project string) ([]Subject, error) {
	if _, err := cl.GetProject(ctx, project); err != nil {
		return nil, err
	}
	return listing[Subject](ctx, cl, call{op: "list subjects", method: http.MethodGet, path: []string{"data", "projects", project, "subjects"}})
}

// ListExperiments lists a project's experiments through XNAT's global
// listing, which (unlike the project-scoped one) includes every session
// type (ErrNotFound for an unknown project).
func (cl *Client) ListExperiments(ctx context.Context, project string) ([]Experiment, error) {
	if _, err := cl.GetProject(ctx, project); err != nil {
		return nil, err
	}
	return listing[Experiment](ctx, cl, call{op: "list experiments", method: http.MethodGet, path: []string{"data", "experiments"},
		query: url.Values{"project": {project}}})
}

// GetExperiment returns XNAT's JSON document of a project's experiment, by
// id or label (ErrNotFound if either is unknown).
func (cl *Client) GetExperiment(ctx context.Context, project, idOrLabel string) (json.RawMessage, error) {
	if _, err := cl.GetProject(ctx, project); err != nil {
		return nil, err
	}
	resp, err := cl.do(ctx, call{op: "get experiment", method: http.MethodGet,
		path: []string{"data", "projects", project, "experiments", idOrLabel}, query: url.Values{"format": {"json"}}})
	if err != nil {
		return nil, err
	}
	defer drain(resp)
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, &Error{Op: "get experiment", Err: err}
	}
	if !json.Valid(b) {
		return nil, fmt.Errorf("xnat get experiment: %w: not JSON", ErrBadResponse)
	}
	return b, nil
}

// SubjectIDOf reads items[0].data_fields.subject_ID from an experiment
// document.
func SubjectIDOf(doc json.RawMessage) (string, error) {
	var d struct {
		Items []struct {
			DataFields struct {
				SubjectID string `json:"subject_ID"`
			} `json:"data_fields"`
		} `json:"items"`
	}
	if err := json.Unmarshal(doc, &d); err != nil || len(d.Items) == 0 || d.Items[0].DataFields.SubjectID == "" {
		return "", fmt.Errorf("failed to parse XNAT experiment data: %w", ErrBadResponse)
	}
	return d.Items[0].DataFields.SubjectID, nil
}

// ExperimentSubjectID returns the subject id of a project's experiment.
func (cl *Client) ExperimentSubjectID(ctx context.Context, project, idOrLabel string) (string, error) {
	doc, err := cl.GetExperiment(ctx, project, idOrLabel)
	if err != nil {
		return "", err
	}
	return SubjectIDOf(doc)
}
