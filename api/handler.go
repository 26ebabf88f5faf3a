package api

import "net/http"

// handler answers one request. What it returns is written by serve: an
// error as a Matrix error (whatever the value), else the value as JSON with
// status 200 (a json.RawMessage as it is) or, a selfWriter, by itself.
type handler func(r *http.Request) (any, error)

// authedHandler is a handler of requests that carry an access token; sess
// is the session the token names.
type authedHandler func(r *http.Request, sess *session) (any, error)

// selfWriter is an answer that writes itself (media, with its own headers).
type selfWriter interface {
	write(w http.ResponseWriter, r *http.Request)
}

// serve is the one adapter from a handler to net/http.
func serve(h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := h(r)
		if err != nil {
			writeError(w, err)
			return
		}
		if sw, ok := v.(selfWriter); ok {
			sw.write(w, r)
			return
		}
		writeJSON(w, http.StatusOK, v)
	}
}

// route registers h for a full mux pattern, "METHOD /path".
func (s *Server) route(pattern string, h handler) {
	s.mux.HandleFunc(pattern, serve(h))
}
