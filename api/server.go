// Package api serves the Matrix Client-Server API (and the media API) over
// net/http. A handler decodes the request, authorises it, sends one message to
// the actor that owns the data (or calls the media store) and encodes the
// answer; it never reads or writes the node's keys itself.
package api

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"strconv"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/actors"
	"persona/config"
	"persona/media"
	"persona/metrics"
	"persona/wire"
)

// Server is the Client-Server API of one node.
type Server struct {
	cfg     *config.Config
	host    *actors.Service
	media   *media.Store
	metrics *metrics.Metrics
	log     *slog.Logger
	secret  string      // registration shared secret
	remote  Remote      // other servers (nil: none)
	outbox  Outbox      // the federation outbox (nil: none)
	cluster Cluster     // the cluster membership (nil: none)
	probes  Probes      // the node's health and readiness (nil: not served)
	peers   *mediaPeers // media fetched from the other members
	limiter *limiter
	nonces  *nonces
	mux     *http.ServeMux
}

// Options are the parts a Server is built from.
type Options struct {
	Config       *config.Config
	Host         *actors.Service
	Media        *media.Store
	Metrics      *metrics.Metrics
	Log          *slog.Logger
	SharedSecret string
	// Remote reaches other servers; nil on a node without federation.
	Remote Remote
	// Outbox is the federation outbox the admin API shows; nil on a node
	// without federation.
	Outbox Outbox
	// Cluster is the cluster membership the admin API shows; nil on a
	// node outside a cluster.
	Cluster Cluster
	// Probes answers GET /health and GET /ready; nil serves neither.
	Probes Probes
	// PeerKeys are the cluster's keys (cluster.gossip_key_file): with
	// them, a member proves it holds one when it fetches media here, and
	// this node does when it fetches from another. Nil: the source
	// address alone decides.
	PeerKeys [][]byte
	// MediaPeerTimeout bounds how long a member has to answer for media
	// this node fetches from it, beyond the client's wait for a pending
	// upload; the next member is asked after it. Default 10 seconds.
	MediaPeerTimeout time.Duration
}

// New builds the API server and its routes.
func New(o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: o.Config, host: o.Host, media: o.Media, metrics: o.Metrics, log: o.Log,
		secret: o.SharedSecret, remote: o.Remote, outbox: o.Outbox, cluster: o.Cluster, probes: o.Probes,
		peers:   newMediaPeers(o.MediaPeerTimeout, o.PeerKeys),
		limiter: newLimiter(o.Config.Profile.RateLimit.Burst, o.Config.Profile.RateLimit.PerSecond),
		nonces:  newNonces(),
		mux:     http.NewServeMux(),
	}
	s.routes()
	return s
}

// clientPrefixes are the Client-Server API prefixes a route is served under.
var clientPrefixes = []string{"/_matrix/client/v3", "/_matrix/client/r0"}

// handle registers h for method and path under every client prefix.
func (s *Server) handle(method, path string, h handler) {
	for _, p := range clientPrefixes {
		s.route(method+" "+p+path, h)
	}
}

func (s *Server) routes() {
	s.route("GET /_matrix/client/versions", s.versions)
	s.wellKnownRoutes()
	s.handle("GET", "/capabilities", s.authed(s.capabilities))
	s.accountRoutes()
	s.profileRoutes()
	s.mediaRoutes()
	s.adminRoutes()
	s.filterRoutes()
	s.deviceRoutes()
	s.userDirRoutes()
	s.contextRoutes()
	s.roomRoutes()
	s.directoryRoutes()
	s.pushRuleRoutes()
	if s.probes != nil {
		ProbeRoutes(s.mux, s.probes, false)
	}
}

// ServeHTTP answers one request through the middleware: CORS, panics turned
// into errors, and metrics by route pattern.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	h := w.Header()
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Origin, X-Requested-With, Content-Type, Accept, Authorization")
	if r.Method == http.MethodOptions {
		w.WriteHeader(http.StatusOK)
		return
	}
	rec := &statusWriter{ResponseWriter: w, status: 200}
	defer func() {
		if p := recover(); p != nil {
			s.log.Error("panic in handler", "path", r.URL.Path, "panic", p, "stack", string(debug.Stack()))
			if !rec.wrote {
				writeError(rec, errInternal)
			}
		}
		route := r.Pattern
		if route == "" || route == "/" {
			route = "unmatched"
		}
		if s.metrics != nil {
			s.metrics.HTTPRequest(route, r.Method, strconv.Itoa(rec.status), time.Since(start))
		}
	}()
	if h, pattern := s.mux.Handler(r); pattern == "" {
		// The mux would answer 404 or 405 in plain text: answer in Matrix
		// form. Its redirects (to a cleaned path) pass through.
		probe := &codeWriter{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.code == http.StatusNotFound || probe.code == http.StatusMethodNotAllowed {
			e := *errUnrecognized
			e.Status = probe.code
			writeError(rec, &e)
			return
		}
	}
	s.mux.ServeHTTP(rec, r)
}

// codeWriter keeps only the status code a handler writes.
type codeWriter struct {
	header http.Header
	code   int
}

func (w *codeWriter) Header() http.Header         { return w.header }
func (w *codeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *codeWriter) WriteHeader(code int)        { w.code = code }

type statusWriter struct {
	http.ResponseWriter
	status int
	wrote  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if !w.wrote {
		w.status, w.wrote = code, true
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.wrote = true
	return w.ResponseWriter.Write(b)
}

// askAs sends msg to the actor kind/id and expects a T back: the one way
// api reads an actor's reply. An Error the reply carries (Done and every
// reply with a result have one) becomes that error, a reply of another type
// an internal error, never a panic; an actor that does not answer in time
// is errUnavailable.
func askAs[T proto.Message](ctx context.Context, s *Server, kind, id string, msg proto.Message) (T, error) {
	var zero T
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	reply, err := s.host.Request(ctx, kind, id, msg)
	if errors.Is(err, actors.ErrTimeout) {
		return zero, errUnavailable
	}
	if errors.Is(err, context.Canceled) {
		return zero, errClientGone
	}
	if err != nil {
		s.log.Error("actor request failed", "kind", kind, "err", err)
		return zero, errInternal
	}
	if e, ok := reply.(interface{ GetError() *wire.Error }); ok && e.GetError() != nil {
		return zero, e.GetError()
	}
	t, ok := reply.(T)
	if !ok {
		s.log.Error("actor answered an unexpected type", "kind", kind, "want", fmt.Sprintf("%T", zero), "got", fmt.Sprintf("%T", reply))
		return zero, errInternal
	}
	return t, nil
}

func (s *Server) versions(*http.Request) (any, error) {
	return map[string]any{
		"versions": []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8",
			"v1.9", "v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16"},
		"unstable_features": map[string]bool{
			"uk.tcpip.msc4133":              true,
			"uk.tcpip.msc4133.stable":       true,
			"computer.gingershaped.msc4466": true,
			"org.matrix.msc4069":            true,
			"com.beeper.msc4437":            true,
		},
	}, nil
}

func (s *Server) capabilities(*http.Request, *session) (any, error) {
	return map[string]any{"capabilities": map[string]any{
		"m.change_password": map[string]bool{"enabled": false},
		"m.room_versions":   map[string]any{"default": "10", "available": availableVersions()},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.profile_fields":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
	}}, nil
}

// availableVersions are the room versions rooms may be created with, all
// stable.
func availableVersions() map[string]string {
	out := map[string]string{}
	for _, v := range roomVersions {
		out[v] = "stable"
	}
	return out
}

// userIDParam parses a {userId} path value.
func userIDParam(r *http.Request) (string, error) {
	u := r.PathValue("userId")
	if _, _, err := parseUserID(u); err != nil {
		return "", invalidParam(fmt.Sprintf("Invalid user ID %q.", u))
	}
	return u, nil
}
