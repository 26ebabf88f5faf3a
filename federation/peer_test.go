package federation_test

import (
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/federation"
	"persona/metrics"
	"persona/storage"
)

// peer is a federation server on a loopback TLS listener with its own
// store in a data directory.
type peer struct {
	*federation.Server
	name    spec.ServerName
	addr    string // host:port it listens on
	dir     string
	metrics *metrics.Metrics
	t       *testing.T
	stop    func()
}

// peerConfig says how to start a peer: in dir (a new temp dir when
// empty), named name (its own address, an IP literal, when empty), with
// tune changing the options last.
type peerConfig struct {
	dir, name string
	tune      func(*federation.Options)
}

// startPeer starts a peer; it stops when the test ends, or at stop.
func startPeer(t *testing.T, pc peerConfig) *peer {
	t.Helper()
	if pc.dir == "" {
		pc.dir = t.TempDir()
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if pc.name == "" {
		pc.name = ln.Addr().String()
	}
	st, err := storage.Open(filepath.Join(pc.dir, "db"), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	m := metrics.New(nil)
	o := federation.Options{ServerName: pc.name, DataDir: pc.dir, Store: st, Metrics: m, InsecureSkipVerify: true}
	if pc.tune != nil {
		pc.tune(&o)
	}
	srv, err := federation.New(o)
	if err != nil {
		_ = st.Close()
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	p := &peer{Server: srv, name: spec.ServerName(pc.name), addr: ln.Addr().String(), dir: pc.dir, metrics: m, t: t}
	var once sync.Once
	p.stop = func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if err := srv.Shutdown(ctx); err != nil {
				t.Errorf("shutdown %s: %v", pc.name, err)
			}
			if err := <-served; !errors.Is(err, http.ErrServerClosed) {
				t.Errorf("serve %s: %v", pc.name, err)
			}
			if err := st.Close(); err != nil {
				t.Errorf("close store of %s: %v", pc.name, err)
			}
		})
	}
	t.Cleanup(p.stop)
	return p
}

// url is the peer's base URL.
func (p *peer) url() string { return "https://" + p.addr }

// reach returns a tune that sends requests for each peer to its address.
func reach(peers ...*peer) func(*federation.Options) {
	return func(o *federation.Options) {
		o.Destinations = map[string]string{}
		for _, p := range peers {
			o.Destinations[string(p.name)] = p.url()
		}
	}
}

// insecureClient is an HTTP client that takes any certificate, for
// requests to peers made by hand.
var insecureClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// signed builds a request from id to destination, signed with key (the
// identity's own when nil), sent to base.
func signed(t *testing.T, base string, id fclient.SigningIdentity, destination spec.ServerName, key ed25519.PrivateKey, method, uri string, content any) *http.Request {
	t.Helper()
	if key == nil {
		key = id.PrivateKey
	}
	fr := fclient.NewFederationRequest(method, id.ServerName, destination, uri)
	if content != nil {
		if err := fr.SetContent(content); err != nil {
			t.Fatal(err)
		}
	}
	if err := fr.Sign(id.ServerName, id.KeyID, key); err != nil {
		t.Fatal(err)
	}
	req, err := fr.HTTPRequest()
	if err != nil {
		t.Fatal(err)
	}
	req.URL.Scheme, req.URL.Host = "https", base[len("https://"):]
	return req
}

// do sends req and returns the status and the JSON body decoded.
func do(t *testing.T, req *http.Request) (int, map[string]any) {
	t.Helper()
	resp, err := insecureClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var body map[string]any
	if err := json.Unmarshal(b, &body); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", req.Method, req.URL, resp.StatusCode, b)
	}
	return resp.StatusCode, body
}

// get sends an unsigned GET to url.
func get(t *testing.T, url string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return do(t, req)
}

// whoami registers, behind X-Matrix, a route that answers the verified
// origin and the body it got.
func whoami(p *peer) {
	p.Handle("POST /_matrix/federation/v1/whoami", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{"origin": federation.Origin(r.Context()), "body": json.RawMessage(body)})
	}))
}

// signedByJSON is a JSON object signed by id, for the key ring.
func signedByJSON(t *testing.T, id fclient.SigningIdentity) []byte {
	t.Helper()
	b, err := gomatrixserverlib.SignJSON(string(id.ServerName), id.KeyID, id.PrivateKey, []byte(`{"hello":"world"}`))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// verify asks ring whether msg carries a valid signature of server.
func verify(ring gomatrixserverlib.JSONVerifier, server spec.ServerName, msg []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := ring.VerifyJSONs(ctx, []gomatrixserverlib.VerifyJSONRequest{{
		ServerName: server, AtTS: spec.AsTimestamp(time.Now()), Message: msg,
		ValidityCheckingFunc: gomatrixserverlib.StrictValiditySignatureCheck,
	}})
	if err != nil {
		return err
	}
	return res[0].Error
}

// pub is the public key of id.
func pub(id fclient.SigningIdentity) ed25519.PublicKey {
	return id.PrivateKey.Public().(ed25519.PublicKey)
}
