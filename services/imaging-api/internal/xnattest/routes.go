package xnattest

import "net/http"

func (s *Server) routes(mux *http.ServeMux) {
	s.userRoutes(mux)
	s.projectRoutes(mux)
	s.fileRoutes(mux)
	s.commandRoutes(mux)
	s.dqrRoutes(mux)
}
