package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/internal/mxid"
)

// router is the federation client's transport. It sends a request for
// matrix://<server name>/... to the base URL destinations names for that
// server, or else where fclient.ResolveServer finds the server (an IP
// literal at once; otherwise well-known, SRV and DNS, cached for
// resolveTTL). Certificates are checked against roots (nil: the system's)
// unless insecure.
type router struct {
	destinations map[spec.ServerName]*destination
	roots        *x509.CertPool
	insecure     bool
	resolveTTL   time.Duration
	dialer       *net.Dialer

	mu         sync.Mutex
	transports map[string]*http.Transport // by TLS server name
	resolved   map[spec.ServerName]resolution
}

// destination is a server reached at a configured base URL.
type destination struct {
	base      *url.URL
	transport *http.Transport
}

// resolution is where a server was found, and until when to believe it.
type resolution struct {
	results []fclient.ResolutionResult
	until   time.Time
}

func newRouter(destinations map[string]string, roots *x509.CertPool, insecure bool, resolveTTL time.Duration) (*router, error) {
	r := &router{
		destinations: map[spec.ServerName]*destination{},
		roots:        roots,
		insecure:     insecure,
		resolveTTL:   resolveTTL,
		dialer:       &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second},
		transports:   map[string]*http.Transport{},
		resolved:     map[spec.ServerName]resolution{},
	}
	for name, base := range destinations {
		host, _, err := mxid.ParseServerName(name)
		if err != nil {
			return nil, fmt.Errorf("destination %q: %w", name, err)
		}
		u, err := url.Parse(base)
		if err != nil || u.Scheme != "https" || u.Host == "" {
			return nil, fmt.Errorf("destination %q: base URL %q is not https://host[:port]", name, base)
		}
		r.destinations[spec.ServerName(name)] = &destination{base: u, transport: r.newTransport(host)}
	}
	return r, nil
}

// newTransport returns a transport whose TLS connections expect a
// certificate for tlsName.
func (r *router) newTransport(tlsName string) *http.Transport {
	return &http.Transport{
		DialContext: r.dialer.DialContext,
		TLSClientConfig: &tls.Config{
			ServerName:         tlsName,
			RootCAs:            r.roots,
			InsecureSkipVerify: r.insecure,
			MinVersion:         tls.VersionTLS12,
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ExpectContinueTimeout: time.Second,
	}
}

// RoundTrip sends req, whose URL is matrix://<server name>/<path>.
func (r *router) RoundTrip(req *http.Request) (*http.Response, error) {
	name := spec.ServerName(req.URL.Host)
	if d, ok := r.destinations[name]; ok {
		out := req.Clone(req.Context())
		out.URL.Scheme, out.URL.Host, out.Host = d.base.Scheme, d.base.Host, string(name)
		return d.transport.RoundTrip(out)
	}
	results, err := r.resolve(req.Context(), name)
	if err != nil {
		return nil, err
	}
	for i, res := range results {
		out := req.Clone(req.Context())
		if i > 0 && req.GetBody != nil {
			if out.Body, err = req.GetBody(); err != nil {
				return nil, err
			}
		}
		out.URL.Scheme, out.URL.Host, out.Host = "https", res.Destination, string(res.Host)
		var resp *http.Response
		if resp, err = r.transport(res.TLSServerName).RoundTrip(out); err == nil {
			return resp, nil
		}
		if i+1 < len(results) && req.Body != nil && req.GetBody == nil {
			break // the body is spent and cannot be had again
		}
	}
	r.mu.Lock()
	delete(r.resolved, name) // look again next time
	r.mu.Unlock()
	return nil, err
}

// resolve finds server: from the cache, else by fclient.ResolveServer.
func (r *router) resolve(ctx context.Context, server spec.ServerName) ([]fclient.ResolutionResult, error) {
	now := time.Now()
	r.mu.Lock()
	res, ok := r.resolved[server]
	r.mu.Unlock()
	if ok && now.Before(res.until) {
		return res.results, nil
	}
	results, err := fclient.ResolveServer(ctx, server)
	if err != nil {
		return nil, fmt.Errorf("resolve %s: %w", server, err)
	}
	if len(results) == 0 {
		return nil, errors.New("resolve " + string(server) + ": no address found")
	}
	r.mu.Lock()
	r.resolved[server] = resolution{results: results, until: now.Add(r.resolveTTL)}
	r.mu.Unlock()
	return results, nil
}

// transport returns the transport for a TLS server name, made on first use.
func (r *router) transport(tlsName string) *http.Transport {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.transports[tlsName]
	if !ok {
		t = r.newTransport(tlsName)
		r.transports[tlsName] = t
	}
	return t
}

// closeIdle closes every idle connection.
func (r *router) closeIdle() {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, t := range r.transports {
		t.CloseIdleConnections()
	}
	for _, d := range r.destinations {
		d.transport.CloseIdleConnections()
	}
}
