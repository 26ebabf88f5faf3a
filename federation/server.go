// Package federation is persona's side of the Server-Server API: the
// server's identity (its ed25519 signing key and TLS certificate, kept in
// the data directory), the federation listener with its public key and
// version routes, the X-Matrix authentication every other federation route
// goes through, the key ring that fetches, verifies and stores other
// servers' keys (under fk/ in the node's store), and the signed client for
// requests to other servers. It is built on gomatrixserverlib and its
// fclient, and uses them for everything they do.
//
// It knows no users, rooms or actors: handlers that do register with
// Server.Handle (authenticated) or Server.HandlePublic.
package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"github.com/sirupsen/logrus"

	"persona/config"
	"persona/internal/mxid"
	"persona/metrics"
	"persona/storage"
)

// Options are what a Server is built from. New fills zero fields with
// their defaults.
type Options struct {
	// ServerName is this server's name; it signs as it and accepts requests
	// addressed to it.
	ServerName string
	// DataDir holds the signing key (signing.key, unless SigningKeyFile
	// names another file) and, unless TLSCert is
	// set, the self-signed certificate (tls.crt, tls.key); both are made on
	// first start.
	DataDir string
	// SigningKeyFile is the signing key's file; "" means signing.key in
	// DataDir.
	SigningKeyFile string
	// TLSCert and TLSKey are PEM files of the listener's certificate and
	// key; "" for both uses the self-signed one.
	TLSCert, TLSKey string
	// KeyValidity is how long after a key response its valid_until_ts lies.
	KeyValidity time.Duration
	// Notaries are servers asked for keys their servers do not give.
	Notaries []string
	// Destinations maps server names to the https base URLs their requests
	// go to instead of where server discovery finds them.
	Destinations map[string]string
	// InsecureSkipVerify accepts any certificate from other servers.
	InsecureSkipVerify bool
	// RootCAs are the authorities peers' certificates are checked against;
	// nil means the system's.
	RootCAs *x509.CertPool
	// Store keeps other servers' keys; required.
	Store *storage.Store
	// Metrics counts requests and key fetches; nil gives the server
	// collectors of its own.
	Metrics *metrics.Metrics
	// Log receives the server's and gomatrixserverlib's messages.
	Log *slog.Logger
	// Version is the version /_matrix/federation/v1/version names; "" takes
	// the binary's module version.
	Version string
	// RequestTimeout bounds each request to another server.
	RequestTimeout time.Duration
	// ResolveTTL is how long where a server was found is believed.
	ResolveTTL time.Duration
	// MaxRequestBytes is the largest request body accepted.
	MaxRequestBytes int64
}

// OptionsFrom returns the Options cfg sets: server name, data directory
// and the federation section. Store, Metrics and Log are left to the caller.
func OptionsFrom(cfg *config.Config) Options {
	f := cfg.Federation
	return Options{
		ServerName: cfg.ServerName, DataDir: cfg.DataDir,
		SigningKeyFile: f.SigningKeyFile, TLSCert: f.TLSCert, TLSKey: f.TLSKey, KeyValidity: f.KeyValidity,
		Notaries: f.TrustedKeyServers, Destinations: f.Destinations, InsecureSkipVerify: f.InsecureSkipVerify,
	}
}

// withDefaults returns o with every zero field at its default.
func (o Options) withDefaults() Options {
	if o.KeyValidity == 0 {
		o.KeyValidity = 7 * 24 * time.Hour
	}
	if o.Metrics == nil {
		o.Metrics = metrics.New(nil)
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Version == "" {
		o.Version = "dev"
		if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
			o.Version = bi.Main.Version
		}
	}
	if o.RequestTimeout == 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.ResolveTTL == 0 {
		o.ResolveTTL = time.Hour
	}
	if o.MaxRequestBytes == 0 {
		// A transaction holds up to 50 PDUs and 100 EDUs of at most 64 KiB.
		o.MaxRequestBytes = 10 << 20
	}
	return o
}

// check names every option New cannot run with.
func (o Options) check() error {
	var errs []error
	if _, _, err := mxid.ParseServerName(o.ServerName); err != nil {
		errs = append(errs, fmt.Errorf("ServerName %q: %w", o.ServerName, err))
	}
	if o.DataDir == "" {
		errs = append(errs, errors.New("DataDir is empty"))
	}
	if (o.TLSCert == "") != (o.TLSKey == "") {
		errs = append(errs, errors.New("TLSCert and TLSKey must both be set or both be empty"))
	}
	if o.Store == nil {
		errs = append(errs, errors.New("no Store given"))
	}
	for _, n := range o.Notaries {
		if _, _, err := mxid.ParseServerName(n); err != nil {
			errs = append(errs, fmt.Errorf("notary %q: %w", n, err))
		}
	}
	for _, d := range []struct {
		name string
		d    time.Duration
	}{{"KeyValidity", o.KeyValidity}, {"RequestTimeout", o.RequestTimeout}, {"ResolveTTL", o.ResolveTTL}} {
		if d.d < 0 {
			errs = append(errs, fmt.Errorf("%s %s is negative", d.name, d.d))
		}
	}
	if o.MaxRequestBytes < 0 {
		errs = append(errs, fmt.Errorf("MaxRequestBytes %d is negative", o.MaxRequestBytes))
	}
	return errors.Join(errs...)
}

// Server is one node's federation listener with its identity, key ring and
// client.
type Server struct {
	opts    Options
	id      *fclient.SigningIdentity
	keys    *keyDB
	ring    *gomatrixserverlib.KeyRing
	client  fclient.FederationClient
	router  *router
	mux     *http.ServeMux
	http    *http.Server
	libLog  *logrus.Entry // gomatrixserverlib's logger, passed on in contexts
	handler http.Handler
}

// New loads (or makes, on first start) the signing key and certificate
// and builds the server's routes, key ring and client. It does
// not listen: see Serve.
func New(o Options) (*Server, error) {
	o = o.withDefaults()
	if err := o.check(); err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	name := spec.ServerName(o.ServerName)
	keyFile := o.SigningKeyFile
	if keyFile == "" {
		keyFile = filepath.Join(o.DataDir, signingKeyFile)
	}
	id, err := loadIdentity(keyFile, name)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	cert, err := loadCertificate(o.DataDir, o.TLSCert, o.TLSKey, o.ServerName)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	rt, err := newRouter(o.Destinations, o.RootCAs, o.InsecureSkipVerify, o.ResolveTTL)
	if err != nil {
		return nil, fmt.Errorf("federation: %w", err)
	}
	s := &Server{opts: o, id: id, router: rt, mux: http.NewServeMux(), libLog: libraryLogger(o.Log)}
	quietGlobalLogger.Do(func() { logrus.SetLevel(logrus.WarnLevel) })
	s.client = fclient.NewFederationClient([]*fclient.SigningIdentity{id},
		fclient.WithTransport(rt), fclient.WithTimeout(o.RequestTimeout), fclient.WithUserAgent("persona/"+o.Version))
	s.keys = &keyDB{store: o.Store, self: id, validity: o.KeyValidity, metrics: o.Metrics}
	notaries := make([]spec.ServerName, len(o.Notaries))
	for i, n := range o.Notaries {
		notaries[i] = spec.ServerName(n)
	}
	s.ring = newKeyRing(s.client, s.keys, notaries, o.Metrics)
	s.routes()
	s.handler = http.HandlerFunc(s.serveHTTP)
	s.http = &http.Server{
		Handler:           s.handler,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(o.Log.Handler(), slog.LevelDebug),
	}
	if len(o.Destinations) > 0 {
		o.Log.Warn("federation.destinations: these servers are reached at the URLs given, not where discovery finds them", "destinations", o.Destinations)
	}
	if o.InsecureSkipVerify {
		o.Log.Warn("federation.insecure_skip_verify: peers' TLS certificates are not checked; anyone on the path can pose as a peer")
	}
	return s, nil
}

func (s *Server) routes() {
	s.HandlePublic("GET /_matrix/key/v2/server", http.HandlerFunc(s.serverKeys))
	s.HandlePublic("GET /_matrix/key/v2/server/{keyID}", http.HandlerFunc(s.serverKeys))
	s.HandlePublic("GET /_matrix/key/v2/query/{serverName}", http.HandlerFunc(s.queryKeysGet))
	s.HandlePublic("GET /_matrix/key/v2/query/{serverName}/{keyID}", http.HandlerFunc(s.queryKeysGet))
	s.HandlePublic("POST /_matrix/key/v2/query", http.HandlerFunc(s.queryKeysPost))
	s.HandlePublic("GET /_matrix/federation/v1/version", http.HandlerFunc(s.version))
}

// Handle registers h for pattern (a net/http ServeMux pattern such as
// "PUT /_matrix/federation/v1/send/{txnId}") behind X-Matrix
// authentication: h runs only for requests signed by their origin for this
// server, and finds the origin with Origin.
func (s *Server) Handle(pattern string, h http.Handler) { s.mux.Handle(pattern, s.authenticate(h)) }

// HandlePublic registers h for pattern with no authentication, for the
// routes the specification leaves open.
func (s *Server) HandlePublic(pattern string, h http.Handler) {
	s.mux.Handle(pattern, http.MaxBytesHandler(h, s.opts.MaxRequestBytes))
}

// Handler answers federation requests: the routes registered, M_UNRECOGNIZED
// for the others. It counts every request by route and status.
func (s *Server) Handler() http.Handler { return s.handler }

// Client returns the client for requests to other servers, signing as this
// server.
func (s *Server) Client() fclient.FederationClient { return s.client }

// KeyRing returns the key ring that verifies other servers' signatures.
func (s *Server) KeyRing() *gomatrixserverlib.KeyRing { return s.ring }

// Identity returns this server's name, key ID and signing key.
func (s *Server) Identity() fclient.SigningIdentity { return *s.id }

// Serve answers federation requests over TLS on l until Shutdown; it then
// returns http.ErrServerClosed.
func (s *Server) Serve(l net.Listener) error { return s.http.ServeTLS(l, "", "") }

// Shutdown stops accepting requests, waits for those in flight (up to ctx)
// and closes the client's idle connections.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.http.Shutdown(ctx)
	s.router.closeIdle()
	return err
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &statusWriter{ResponseWriter: w, status: http.StatusOK}
	defer func() {
		route := r.Pattern
		if route == "" {
			route = "unmatched"
		}
		s.opts.Metrics.FederationRequest(route, r.Method, strconv.Itoa(rec.status), time.Since(start))
	}()
	if h, pattern := s.mux.Handler(r); pattern == "" {
		// The mux would answer 404 or 405 in plain text: answer in Matrix
		// form. Its redirects (to a cleaned path) pass through.
		probe := &codeWriter{header: http.Header{}}
		h.ServeHTTP(probe, r)
		if probe.code == http.StatusNotFound || probe.code == http.StatusMethodNotAllowed {
			writeError(rec, probe.code, "M_UNRECOGNIZED", "Unrecognized request.")
			return
		}
	}
	s.mux.ServeHTTP(rec, r)
}

func (s *Server) version(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"server": map[string]string{"name": "persona", "version": s.opts.Version}})
}

// writeJSON answers v as JSON with status.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		status, b = http.StatusInternalServerError, []byte(`{"errcode":"M_UNKNOWN","error":"Internal server error."}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// writeError answers a Matrix error.
func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, map[string]string{"errcode": code, "error": msg})
}

// codeWriter keeps only the status code a handler writes.
type codeWriter struct {
	header http.Header
	code   int
}

func (w *codeWriter) Header() http.Header         { return w.header }
func (w *codeWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *codeWriter) WriteHeader(code int)        { w.code = code }

// statusWriter keeps the status code of the answer it passes on.
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
