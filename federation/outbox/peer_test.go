package outbox

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
)

// testKeyID names the origin's signing key in the tests.
const testKeyID gomatrixserverlib.KeyID = "ed25519:test"

// peer is a destination homeserver on loopback: an HTTPS server that
// answers PUT /_matrix/federation/v1/send/{txnId} for the server names it
// serves, checks the X-Matrix signature against the origin's key and
// records every transaction it gets. It can be told to fail requests or to
// hold them until released.
type peer struct {
	t      *testing.T
	names  map[spec.ServerName]bool
	origin spec.ServerName
	pub    ed25519.PublicKey
	srv    *httptest.Server

	mu         sync.Mutex
	got        []gotTxn // in the order they were answered (or abandoned)
	arrivals   int
	fails      int // answer failStatus to this many more requests
	failStatus int
	hold       chan struct{} // non-nil: requests wait until it is closed
	refuse     bool          // answer 200 with an error for every PDU
	active     int
	maxActive  int
}

// gotTxn is one request the peer got.
type gotTxn struct {
	dest    spec.ServerName
	id      string
	arrived time.Time
	status  int // 0: the sender gave up before the answer
	ts      spec.Timestamp
	pdus    []json.RawMessage
	edus    []gomatrixserverlib.EDU
}

// newPeer starts a peer serving names for transactions from origin, signed
// by pub.
func newPeer(t *testing.T, origin spec.ServerName, pub ed25519.PublicKey, names ...spec.ServerName) *peer {
	p := &peer{t: t, names: map[spec.ServerName]bool{}, origin: origin, pub: pub}
	for _, n := range names {
		p.names[n] = true
	}
	mux := http.NewServeMux()
	mux.HandleFunc("PUT /_matrix/federation/v1/send/{txnId}", p.send)
	p.srv = httptest.NewTLSServer(mux)
	t.Cleanup(p.srv.Close)
	t.Cleanup(p.release) // before Close, which waits for the requests
	return p
}

// VerifyJSONs checks signatures with the origin's key: the peer's key ring.
func (p *peer) VerifyJSONs(_ context.Context, reqs []gomatrixserverlib.VerifyJSONRequest) ([]gomatrixserverlib.VerifyJSONResult, error) {
	res := make([]gomatrixserverlib.VerifyJSONResult, len(reqs))
	for i, r := range reqs {
		if r.ServerName != p.origin {
			res[i].Error = fmt.Errorf("no key of %s", r.ServerName)
			continue
		}
		res[i].Error = gomatrixserverlib.VerifyJSON(string(r.ServerName), testKeyID, p.pub, r.Message)
	}
	return res, nil
}

func (p *peer) send(w http.ResponseWriter, r *http.Request) {
	req, bad := fclient.VerifyHTTPRequest(r, time.Now(), "", func(n spec.ServerName) bool { return p.names[n] }, p)
	if req == nil {
		p.t.Errorf("peer refused a request: %d %v", bad.Code, bad.JSON)
		w.WriteHeader(bad.Code)
		return
	}
	var body struct {
		Origin spec.ServerName         `json:"origin"`
		TS     spec.Timestamp          `json:"origin_server_ts"`
		PDUs   []json.RawMessage       `json:"pdus"`
		EDUs   []gomatrixserverlib.EDU `json:"edus"`
	}
	if err := json.Unmarshal(req.Content(), &body); err != nil || body.Origin != p.origin || body.PDUs == nil {
		p.t.Errorf("peer got a malformed transaction (%v): %s", err, req.Content())
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	got := gotTxn{dest: req.Destination(), id: r.PathValue("txnId"), arrived: time.Now(), ts: body.TS, pdus: body.PDUs, edus: body.EDUs}
	p.mu.Lock()
	p.arrivals++
	p.active++
	p.maxActive = max(p.maxActive, p.active)
	hold, fail, failStatus, refuse := p.hold, p.fails > 0, p.failStatus, p.refuse
	if fail {
		p.fails--
	}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		p.active--
		p.got = append(p.got, got)
		p.mu.Unlock()
	}()
	if hold != nil {
		select {
		case <-hold:
		case <-r.Context().Done():
			return
		}
	}
	if fail {
		got.status = failStatus
		w.WriteHeader(got.status)
		_, _ = w.Write([]byte(`{"errcode":"M_UNKNOWN","error":"told to fail"}`))
		return
	}
	res := fclient.RespSend{PDUs: map[string]fclient.PDUResult{}}
	for _, pdu := range body.PDUs {
		var ev struct {
			ID string `json:"event_id"`
		}
		_ = json.Unmarshal(pdu, &ev)
		res.PDUs[ev.ID] = fclient.PDUResult{}
		if refuse {
			res.PDUs[ev.ID] = fclient.PDUResult{Error: "told to refuse"}
		}
	}
	got.status = http.StatusOK
	_ = json.NewEncoder(w).Encode(res)
}

// setHold makes requests wait from now on until release.
func (p *peer) setHold() {
	p.mu.Lock()
	p.hold = make(chan struct{})
	p.mu.Unlock()
}

// release answers the requests held and those to come.
func (p *peer) release() {
	p.mu.Lock()
	if p.hold != nil {
		close(p.hold)
		p.hold = nil
	}
	p.mu.Unlock()
}

// failNext answers the next n requests 500.
func (p *peer) failNext(n int) { p.answerNext(n, http.StatusInternalServerError) }

// answerNext answers the next n requests with status, an error.
func (p *peer) answerNext(n, status int) {
	p.mu.Lock()
	p.fails, p.failStatus = n, status
	p.mu.Unlock()
}

// txns returns the transactions answered or abandoned so far.
func (p *peer) txns() []gotTxn {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]gotTxn(nil), p.got...)
}

// delivered returns the transactions answered 200.
func (p *peer) delivered() []gotTxn {
	var out []gotTxn
	for _, g := range p.txns() {
		if g.status == http.StatusOK {
			out = append(out, g)
		}
	}
	return out
}

// arrived returns how many requests have arrived, answered or not.
func (p *peer) arrived() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.arrivals
}

// client returns a federation client for origin, signing with key, whose
// requests to the peer's names reach the peer: the transport stands in for
// server discovery and trusts the peer's test certificate alone.
func (p *peer) client(origin spec.ServerName, key ed25519.PrivateKey) fclient.FederationClient {
	addrs := map[string]string{}
	for n := range p.names {
		addrs[string(n)] = p.srv.Listener.Addr().String()
	}
	return newTestClient(origin, key, addrs, p.srv.Client().Transport)
}

// newTestClient returns a federation client whose requests to the server
// names of addrs go to those loopback addresses through next.
func newTestClient(origin spec.ServerName, key ed25519.PrivateKey, addrs map[string]string, next http.RoundTripper) fclient.FederationClient {
	return fclient.NewFederationClient(
		[]*fclient.SigningIdentity{{ServerName: origin, KeyID: testKeyID, PrivateKey: key}},
		fclient.WithTransport(resolver{addrs: addrs, next: next}), fclient.WithTimeout(time.Minute))
}

// resolver maps matrix:// URLs of known server names to HTTPS on loopback.
type resolver struct {
	addrs map[string]string
	next  http.RoundTripper
}

// RoundTrip sends r to the address of its server name.
func (res resolver) RoundTrip(r *http.Request) (*http.Response, error) {
	addr, ok := res.addrs[r.URL.Host]
	if !ok {
		return nil, fmt.Errorf("no address for server %q", r.URL.Host)
	}
	r = r.Clone(r.Context())
	r.URL.Scheme, r.URL.Host = "https", addr
	return res.next.RoundTrip(r)
}
