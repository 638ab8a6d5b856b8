package xnattest

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"sync/atomic"
	"time"
)

// Errors of the seeding and lifecycle methods.
var (
	ErrNotFound    = errors.New("xnattest: not found")
	ErrExists      = errors.New("xnattest: already exists")
	ErrDestination = errors.New("xnattest: import destination is not a registered SCP receiver")
)

// Project seeds a project.
type Project struct {
	ID, SecondaryID, Name, Description string
}

// User seeds a user account.
type User struct {
	Username, Password, Email, FirstName, LastName string
	Enabled                                        bool
	Roles                                          []string
}

// Scan seeds a scan (or an assessor): its resources by label, each a map of
// file name to content.
type Scan struct {
	ID, Type, XSIType string
	Resources         map[string]map[string][]byte
}

// Experiment seeds an imaging session.
type Experiment struct {
	// Label is the session label (FLIP: the accession number).
	Label string
	// XSIType defaults to xnat:ctSessionData; Date to the server's today.
	XSIType, Date string
	Scans         []Scan
	Assessors     []Scan
}

// PACS seeds a PACS registration.
type PACS struct {
	AETitle, Host, Label string
	Port                 int
	// Unreachable makes its status ping report successful=false.
	Unreachable bool
	// Disabled makes its status report enabled=false.
	Disabled bool
}

// Study seeds a study held by a PACS.
type Study struct {
	StudyInstanceUID, AccessionNumber, Description, Date string
	Modalities                                           []string
	ReferringPhysician                                   string
	PatientID, PatientName, PatientSex                   string
	// XSIType is the session type an import creates (xnat:ctSessionData).
	XSIType string
	Scans   []Scan
}

// Command seeds a Container Service command with one wrapper.
type Command struct {
	Name, Image, Wrapper string
}

// ProjectState is a project's server-side state, for assertions.
type ProjectState struct {
	Project
	PrearchiveCode int
	// Members maps username to group (Owners, Members, Collaborators).
	Members map[string]string
	// EnabledWrappers holds "<command id>/<wrapper>" entries.
	EnabledWrappers []string
	// Subscriptions are the event subscriptions as posted.
	Subscriptions []map[string]any
}

// UserState is a user's server-side state, for assertions.
type UserState struct {
	User
	ID       int
	Verified bool
	Locked   bool
	// LastModified and LastLogin are epoch milliseconds, nil until set.
	LastModified, LastLogin *int64
}

// ImportRequest is a DQR request as the server holds it.
type ImportRequest struct {
	ID               int64
	PacsID           int
	Status           string
	AccessionNumber  string
	StudyInstanceUID string
	Project          string
	Destination      string
	Username         string
	RelabelMap       map[string]string
	// Executed reports whether it left the queue.
	Executed bool
}

type user struct {
	ID                                             int
	Username, Password, Email, FirstName, LastName string
	Enabled, Verified                              bool
	LastModified, LastLogin                        *int64
	Roles                                          map[string]bool
	failed                                         int
	lockedUntil                                    time.Time
}

type aliasToken struct {
	ID               int
	Alias, Secret    string
	Username         string
	Created, Expires time.Time
}

type project struct {
	Project
	prearchive    int
	members       map[string]string
	wrappers      map[string]bool
	subscriptions []map[string]any
	created       time.Time
}

type subject struct {
	ID, Label, Project, InsertUser string
	inserted                       time.Time
}

type experiment struct {
	ID, Label, Project, SubjectID, XSIType, Date string
	inserted                                     time.Time
	scans, assessors                             []*scan
}

type scan struct {
	ID, Type, XSIType string
	resources         map[string]map[string][]byte
}

type pacs struct {
	PACS
	ID           int
	availability map[string]map[string]any
	studies      []Study
}

type command struct {
	ID int
	Command
}

type state struct {
	now         func() time.Time
	users       map[string]*user
	nextUser    int
	tokens      map[string]*aliasToken
	nextToken   int
	projects    map[string]*project
	subjects    map[string]*subject
	experiments map[string]*experiment
	nextSubject int
	nextExp     int
	pacs        map[int]*pacs
	nextPACS    int
	commands    []*command
	nextCommand int
	nextSub     int
	requests    []*ImportRequest
}

// requestSeq numbers DQR requests across every Server of the process, as
// XNAT's global sequence does, so servers sharing one database never reuse
// an id.
var requestSeq atomic.Int64

func newState(now func() time.Time) *state {
	return &state{
		now: now, users: map[string]*user{}, tokens: map[string]*aliasToken{}, projects: map[string]*project{},
		subjects: map[string]*subject{}, experiments: map[string]*experiment{}, pacs: map[int]*pacs{},
	}
}

func (st *state) addUser(u *user) {
	st.nextUser++
	u.ID = st.nextUser
	if u.Roles == nil {
		u.Roles = map[string]bool{}
	}
	st.users[u.Username] = u
}

func (st *state) sortedProjects() []*project {
	out := slices.Collect(maps.Values(st.projects))
	sort.Slice(out, func(i, j int) bool {
		if !out[i].created.Equal(out[j].created) {
			return out[i].created.Before(out[j].created)
		}
		return out[i].ID < out[j].ID
	})
	return out
}

func (st *state) projectExperiments(projectID string) []*experiment {
	var out []*experiment
	for _, e := range st.experiments {
		if e.Project == projectID {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// findSubject finds a project's subject by ID or label.
func (st *state) findSubject(projectID, idOrLabel string) *subject {
	if s := st.subjects[idOrLabel]; s != nil && s.Project == projectID {
		return s
	}
	for _, s := range st.subjects {
		if s.Project == projectID && s.Label == idOrLabel {
			return s
		}
	}
	return nil
}

// findExperiment finds a project's experiment by ID or label.
func (st *state) findExperiment(projectID, idOrLabel string) *experiment {
	if e := st.experiments[idOrLabel]; e != nil && e.Project == projectID {
		return e
	}
	for _, e := range st.experiments {
		if e.Project == projectID && e.Label == idOrLabel {
			return e
		}
	}
	return nil
}

// ensureSubject returns the project's subject labelled label, creating it.
func (st *state) ensureSubject(projectID, label, insertUser string) *subject {
	if s := st.findSubject(projectID, label); s != nil {
		return s
	}
	st.nextSubject++
	s := &subject{ID: fmt.Sprintf("XNAT_S%05d", st.nextSubject), Label: label, Project: projectID, InsertUser: insertUser, inserted: st.now()}
	st.subjects[s.ID] = s
	return s
}

func (st *state) addExperiment(projectID string, sub *subject, e Experiment) (*experiment, error) {
	if st.findExperiment(projectID, e.Label) != nil {
		return nil, fmt.Errorf("experiment %q: %w", e.Label, ErrExists)
	}
	st.nextExp++
	x := &experiment{
		ID: fmt.Sprintf("XNAT_E%05d", st.nextExp), Label: e.Label, Project: projectID, SubjectID: sub.ID,
		XSIType: e.XSIType, Date: e.Date, inserted: st.now(),
	}
	if x.XSIType == "" {
		x.XSIType = "xnat:ctSessionData"
	}
	if x.Date == "" {
		x.Date = st.now().Format("2006-01-02")
	}
	x.scans = toScans(e.Scans)
	x.assessors = toScans(e.Assessors)
	st.experiments[x.ID] = x
	return x, nil
}

func toScans(in []Scan) []*scan {
	out := make([]*scan, 0, len(in))
	for _, s := range in {
		c := &scan{ID: s.ID, Type: s.Type, XSIType: s.XSIType, resources: map[string]map[string][]byte{}}
		for label, files := range s.Resources {
			c.resources[label] = maps.Clone(files)
		}
		out = append(out, c)
	}
	return out
}

// AddProject seeds a project.
func (s *Server) AddProject(p Project) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.createProject(p)
}

func (st *state) createProject(p Project) error {
	if p.SecondaryID == "" {
		p.SecondaryID = p.ID
	}
	if p.Name == "" {
		p.Name = p.ID
	}
	for _, q := range st.projects {
		if q.ID == p.ID || q.SecondaryID == p.SecondaryID || q.Name == p.Name {
			return fmt.Errorf("project %q: %w", p.ID, ErrExists)
		}
	}
	st.projects[p.ID] = &project{Project: p, members: map[string]string{}, wrappers: map[string]bool{}, created: st.now()}
	return nil
}

// AddUser seeds a user and returns its id.
func (s *Server) AddUser(u User) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.st.users[u.Username]; ok {
		return 0, fmt.Errorf("user %q: %w", u.Username, ErrExists)
	}
	nu := &user{Username: u.Username, Password: u.Password, Email: u.Email, FirstName: u.FirstName,
		LastName: u.LastName, Enabled: u.Enabled, Verified: true, Roles: setOf(u.Roles...)}
	s.st.addUser(nu)
	return nu.ID, nil
}

// AddExperiment seeds an experiment under the project's subject labelled
// subjectLabel (created if missing) and returns the subject and experiment
// ids.
func (s *Server) AddExperiment(projectID, subjectLabel string, e Experiment) (subjectID, experimentID string, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.st.projects[projectID] == nil {
		return "", "", fmt.Errorf("project %q: %w", projectID, ErrNotFound)
	}
	sub := s.st.ensureSubject(projectID, subjectLabel, s.opts.Username)
	x, err := s.st.addExperiment(projectID, sub, e)
	if err != nil {
		return "", "", err
	}
	return sub.ID, x.ID, nil
}

// AddPACS seeds a PACS registration and returns its id.
func (s *Server) AddPACS(p PACS) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.st.addPACS(p)
}

func (st *state) addPACS(p PACS) int {
	st.nextPACS++
	st.pacs[st.nextPACS] = &pacs{PACS: p, ID: st.nextPACS, availability: map[string]map[string]any{}}
	return st.nextPACS
}

// SetPACSReachable sets whether the PACS answers its status ping.
func (s *Server) SetPACSReachable(id int, reachable bool) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.pacs[id]
	if p == nil {
		return fmt.Errorf("pacs %d: %w", id, ErrNotFound)
	}
	p.Unreachable = !reachable
	return nil
}

// AddStudy seeds a study held by the PACS.
func (s *Server) AddStudy(pacsID int, st Study) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.pacs[pacsID]
	if p == nil {
		return fmt.Errorf("pacs %d: %w", pacsID, ErrNotFound)
	}
	p.studies = append(p.studies, st)
	return nil
}

// AddCommand seeds a Container Service command and returns its id.
func (s *Server) AddCommand(c Command) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.st.nextCommand++
	s.st.commands = append(s.st.commands, &command{ID: s.st.nextCommand, Command: c})
	return s.st.nextCommand
}

// ProjectState returns a project's state.
func (s *Server) ProjectState(id string) (ProjectState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.st.projects[id]
	if p == nil {
		return ProjectState{}, false
	}
	out := ProjectState{Project: p.Project, PrearchiveCode: p.prearchive, Members: maps.Clone(p.members)}
	out.EnabledWrappers = slices.Sorted(maps.Keys(p.wrappers))
	out.Subscriptions = append(out.Subscriptions, p.subscriptions...)
	return out, true
}

// UserState returns a user's state.
func (s *Server) UserState(username string) (UserState, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.st.users[username]
	if u == nil {
		return UserState{}, false
	}
	return UserState{
		User: User{Username: u.Username, Password: u.Password, Email: u.Email, FirstName: u.FirstName,
			LastName: u.LastName, Enabled: u.Enabled, Roles: slices.Sorted(maps.Keys(u.Roles))},
		ID: u.ID, Verified: u.Verified, Locked: s.opts.Now().Before(u.lockedUntil),
		LastModified: u.LastModified, LastLogin: u.LastLogin,
	}, true
}

// File returns a stored scan file of a project's experiment (by ID or label).
func (s *Server) File(projectID, experiment, scanID, resource, name string) ([]byte, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.st.findExperiment(projectID, experiment)
	if x == nil {
		return nil, false
	}
	for _, sc := range x.scans {
		if sc.ID == scanID {
			b, ok := sc.resources[resource][name]
			return slices.Clone(b), ok
		}
	}
	return nil, false
}

// ExperimentLabels returns the labels of a project's experiments.
func (s *Server) ExperimentLabels(projectID string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []string
	for _, x := range s.st.projectExperiments(projectID) {
		out = append(out, x.Label)
	}
	return out
}

// ImportRequests returns the DQR requests, queued and executed, by id.
func (s *Server) ImportRequests() []ImportRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]ImportRequest, 0, len(s.st.requests))
	for _, r := range s.st.requests {
		c := *r
		c.RelabelMap = maps.Clone(r.RelabelMap)
		out = append(out, c)
	}
	return out
}

func (st *state) request(id int64) *ImportRequest {
	for _, r := range st.requests {
		if r.ID == id {
			return r
		}
	}
	return nil
}
