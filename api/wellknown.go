package api

import "net/http"

// wellKnownRoutes serves /.well-known/matrix/server when
// federation.well_known_server is set, answering {"m.server": it}: server
// discovery then sends other servers there. Unset, the path is unrecognised
// (404), as discovery expects of a server without delegation.
func (s *Server) wellKnownRoutes() {
	delegated := s.cfg.Federation.WellKnownServer
	if delegated == "" {
		return
	}
	s.route("GET /.well-known/matrix/server", func(*http.Request) (any, error) {
		return map[string]string{"m.server": delegated}, nil
	})
}
