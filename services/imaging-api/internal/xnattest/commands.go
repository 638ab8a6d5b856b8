package xnattest

import (
	"net/http"
	"strconv"
	"strings"
)

const actionKeyPrefix = "org.nrg.containers.services.CommandActionProvider:"

type wrapperJSON struct {
	ID   int    `json:"id"`
	Name string `json:"name"`
}

type commandJSON struct {
	ID    int           `json:"id"`
	Name  string        `json:"name"`
	Image string        `json:"image"`
	XNAT  []wrapperJSON `json:"xnat"`
}

func (s *Server) commandRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /xapi/commands", s.listCommands)
	mux.HandleFunc("PUT /xapi/projects/{p}/commands/{id}/wrappers/{w}/enabled", s.enableWrapper)
	mux.HandleFunc("POST /xapi/projects/{p}/events/subscription", s.createSubscription)
}

func (s *Server) listCommands(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator", "ContainerManager") {
		return
	}
	image := r.URL.Query().Get("image")
	s.mu.Lock()
	out := []commandJSON{}
	for _, c := range s.st.commands {
		if image == "" || c.Image == image {
			out = append(out, commandJSON{ID: c.ID, Name: c.Name, Image: c.Image, XNAT: []wrapperJSON{{ID: c.ID, Name: c.Wrapper}}})
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) enableWrapper(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator", "ContainerManager") {
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		textError(w, http.StatusBadRequest, "Invalid command id")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.visibleProject(r, r.PathValue("p"))
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	for _, c := range s.st.commands {
		if c.ID == id && c.Wrapper == r.PathValue("w") {
			p.wrappers[strconv.Itoa(id)+"/"+c.Wrapper] = true
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	textError(w, http.StatusNotFound, "Command or wrapper not found")
}

func (s *Server) createSubscription(w http.ResponseWriter, r *http.Request) {
	if !s.requireRole(w, r, http.StatusForbidden, "Administrator", "ContainerManager") {
		return
	}
	var sub map[string]any
	if !decodeJSON(w, r, &sub) {
		return
	}
	key, _ := sub["action-key"].(string)
	cmdID, ok := strings.CutPrefix(key, actionKeyPrefix)
	if !ok {
		textError(w, http.StatusBadRequest, "Unknown action-key")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.visibleProject(r, r.PathValue("p"))
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return
	}
	enabled := false
	for k := range p.wrappers {
		if strings.HasPrefix(k, cmdID+"/") {
			enabled = true
		}
	}
	if !enabled {
		textError(w, http.StatusBadRequest, "Action "+key+" is not available to project "+p.ID)
		return
	}
	s.st.nextSub++
	sub["id"] = s.st.nextSub
	p.subscriptions = append(p.subscriptions, sub)
	writeJSON(w, http.StatusCreated, sub)
}
