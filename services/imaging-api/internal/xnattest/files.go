package xnattest

import (
	"archive/zip"
	"io"
	"maps"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
)

const experimentPath = "/data/projects/{p}/subjects/{s}/experiments/{e}"

func (s *Server) fileRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET "+experimentPath+"/{kind}/{which}/files", s.download)
	mux.HandleFunc("GET "+experimentPath+"/{kind}/{which}/resources/{res}/files", s.download)
	mux.HandleFunc("PUT "+experimentPath+"/scans/{scan}", s.createScan)
	mux.HandleFunc("PUT "+experimentPath+"/scans/{scan}/resources/{res}", s.createResource)
	mux.HandleFunc("GET "+experimentPath+"/scans/{scan}/resources/{res}/files/{name}", s.getFile)
	mux.HandleFunc("PUT "+experimentPath+"/scans/{scan}/resources/{res}/files/{name}", s.putFile)
}

// experimentAt resolves the experiment of a request's path, answering 404
// when the project, subject or experiment is unknown. The caller holds s.mu.
func (s *Server) experimentAt(w http.ResponseWriter, r *http.Request) *experiment {
	p := s.visibleProject(r, r.PathValue("p"))
	if p == nil {
		textError(w, http.StatusNotFound, "Project not found")
		return nil
	}
	sub := s.st.findSubject(p.ID, r.PathValue("s"))
	if sub == nil {
		textError(w, http.StatusNotFound, "Subject not found")
		return nil
	}
	x := s.st.findExperiment(p.ID, r.PathValue("e"))
	if x == nil || x.SubjectID != sub.ID {
		textError(w, http.StatusNotFound, "Experiment not found")
		return nil
	}
	return x
}

type zipEntry struct {
	name string
	data []byte
}

func (s *Server) download(w http.ResponseWriter, r *http.Request) {
	if f := r.URL.Query().Get("format"); f != "zip" {
		textError(w, http.StatusBadRequest, "Only format=zip is supported")
		return
	}
	kind := r.PathValue("kind")
	if kind != "scans" && kind != "assessors" {
		textError(w, http.StatusNotFound, "Not found")
		return
	}
	res := r.PathValue("res") // empty: every resource
	s.mu.Lock()
	x := s.experimentAt(w, r)
	if x == nil {
		s.mu.Unlock()
		return
	}
	items := x.scans
	if kind == "assessors" {
		items = x.assessors
	}
	which := r.PathValue("which")
	var wanted map[string]bool
	if which != "ALL" {
		wanted = setOf(strings.Split(which, ",")...)
	}
	var entries []zipEntry
	for _, sc := range items {
		if wanted != nil && !wanted[sc.ID] {
			continue
		}
		for _, label := range slices.Sorted(maps.Keys(sc.resources)) {
			if res != "" && label != res {
				continue
			}
			files := sc.resources[label]
			for _, name := range slices.Sorted(maps.Keys(files)) {
				entries = append(entries, zipEntry{
					name: path.Join(x.Label, kind, sc.ID, "resources", label, "files", name),
					data: files[name],
				})
			}
		}
	}
	s.mu.Unlock()
	if len(entries) == 0 {
		textError(w, http.StatusNotFound, "No matching files")
		return
	}
	w.Header().Set("Content-Type", "application/zip")
	w.Header().Set("Content-Disposition", `attachment; filename="`+x.Label+`.zip"`)
	w.WriteHeader(http.StatusOK)
	zw := zip.NewWriter(w)
	flusher, _ := w.(http.Flusher)
	for i, e := range entries {
		fw, err := zw.CreateHeader(&zip.FileHeader{Name: e.name, Method: zip.Store})
		if err != nil {
			return
		}
		if _, err := fw.Write(e.data); err != nil {
			return
		}
		if err := zw.Flush(); err != nil {
			return
		}
		if flusher != nil {
			flusher.Flush()
		}
		if i == 0 {
			if g := s.downloadGate(); g != nil {
				select {
				case <-g:
				case <-r.Context().Done():
					return
				}
			}
		}
	}
	_ = zw.Close()
}

func (s *Server) createScan(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	x := s.experimentAt(w, r)
	if x == nil {
		return
	}
	id := r.PathValue("scan")
	for _, sc := range x.scans {
		if sc.ID == id {
			w.WriteHeader(http.StatusOK)
			return
		}
	}
	x.scans = append(x.scans, &scan{ID: id, XSIType: r.URL.Query().Get("xsiType"), resources: map[string]map[string][]byte{}})
	w.WriteHeader(http.StatusOK)
}

// scanAt resolves the scan of a request's path. The caller holds s.mu.
func (s *Server) scanAt(w http.ResponseWriter, r *http.Request) *scan {
	x := s.experimentAt(w, r)
	if x == nil {
		return nil
	}
	for _, sc := range x.scans {
		if sc.ID == r.PathValue("scan") {
			return sc
		}
	}
	textError(w, http.StatusNotFound, "Scan not found")
	return nil
}

func (s *Server) createResource(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scanAt(w, r)
	if sc == nil {
		return
	}
	res := r.PathValue("res")
	if _, ok := sc.resources[res]; ok {
		textError(w, http.StatusConflict, "Resource already exists")
		return
	}
	sc.resources[res] = map[string][]byte{}
	w.WriteHeader(http.StatusOK)
}

func (s *Server) getFile(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	sc := s.scanAt(w, r)
	if sc == nil {
		s.mu.Unlock()
		return
	}
	b, ok := sc.resources[r.PathValue("res")][r.PathValue("name")]
	s.mu.Unlock()
	if !ok {
		textError(w, http.StatusNotFound, "File not found")
		return
	}
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

func (s *Server) putFile(w http.ResponseWriter, r *http.Request) {
	if r.URL.Query().Get("inbody") != "true" {
		textError(w, http.StatusBadRequest, "Only inbody=true uploads are supported")
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		textError(w, http.StatusBadRequest, "read body")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	sc := s.scanAt(w, r)
	if sc == nil {
		return
	}
	res, name := r.PathValue("res"), r.PathValue("name")
	files, ok := sc.resources[res]
	if !ok {
		files = map[string][]byte{}
		sc.resources[res] = files
	}
	_, exists := files[name]
	if exists && r.URL.Query().Get("overwrite") != "true" {
		textError(w, http.StatusConflict, "File already exists")
		return
	}
	files[name] = body
	if exists {
		w.WriteHeader(http.StatusOK)
		return
	}
	w.WriteHeader(http.StatusCreated)
}
