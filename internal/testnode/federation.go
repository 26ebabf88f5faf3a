package testnode

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/tls"
	"encoding/json"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/config"
)

// Federation by hand: a test that plays another server signs requests and
// builds PDUs as a node, to send a node what no well-behaved server would.

// ByAddress names a node after its federation listener (127.0.0.1:PORT,
// on a port free a moment ago), which other nodes reach with no discovery,
// and makes it take their self-signed certificates.
func ByAddress(tb testing.TB) func(*config.Config) {
	return func(c *config.Config) {
		addr := FreeAddr(tb)
		c.Listen.Federation, c.ServerName, c.Federation.InsecureSkipVerify = addr, addr, true
	}
}

// FreeAddr returns a loopback address whose port was free a moment ago,
// for a node that must be named before it listens. The port is drawn
// below the kernel's ephemeral range (32768 on): a listener on port 0
// elsewhere in the test binary, or in another, never takes it meanwhile.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	for range 100 {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(20000+rand.IntN(12000)))
		if l, err := net.Listen("tcp", addr); err == nil {
			_ = l.Close()
			return addr
		}
	}
	tb.Fatal("no free port in 20000-31999 after 100 tries")
	return ""
}

// Request is a federation request a node sends by hand.
type Request struct {
	Method, URI string
	// Body is the request's body. JSON is signed as the request's content;
	// other bytes are sent as they are, under a signature of no content.
	Body []byte
	// Key signs the request in place of the node's key (under its key ID).
	Key ed25519.PrivateKey
	// Destination names another server than the receiving node as the
	// request's destination.
	Destination string
	// Unsigned sends the request with no Authorization header.
	Unsigned bool
}

// FederationRequest returns req as an HTTP request from n to the
// federation listener of to.
func (n *Node) FederationRequest(t testing.TB, to *Node, req Request) *http.Request {
	t.Helper()
	id := n.Federation().Identity()
	dest := spec.ServerName(to.Config.ServerName)
	if req.Destination != "" {
		dest = spec.ServerName(req.Destination)
	}
	key := id.PrivateKey
	if req.Key != nil {
		key = req.Key
	}
	fr := fclient.NewFederationRequest(req.Method, id.ServerName, dest, req.URI)
	signable := json.Valid(req.Body)
	if signable {
		signable = fr.SetContent(json.RawMessage(req.Body)) == nil
	}
	auth := ""
	if err := fr.Sign(id.ServerName, id.KeyID, key); err == nil {
		if r, err := fr.HTTPRequest(); err == nil {
			auth = r.Header.Get("Authorization")
		}
	}
	if signable {
		req.Body = fr.Content()
	}
	r, err := http.NewRequest(req.Method, "https://"+to.FederationAddr()+req.URI, bytes.NewReader(req.Body))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", "application/json")
	if !req.Unsigned && auth != "" {
		r.Header.Set("Authorization", auth)
	}
	return r
}

// federationClient takes any certificate: test nodes' are self-signed.
var federationClient = &http.Client{
	Timeout:   30 * time.Second,
	Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
}

// DoFederation sends r to a federation listener and returns the status and
// body of the answer.
func DoFederation(t testing.TB, r *http.Request) (int, []byte) {
	t.Helper()
	resp, err := federationClient.Do(r)
	if err != nil {
		t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// Tip is a room as its resident server tells another: its version, its
// forward extremity and the depth after it, and its state after it.
type Tip struct {
	Room    string
	Version gomatrixserverlib.IRoomVersion
	Prev    []string
	Depth   int64
	State   []gomatrixserverlib.PDU
}

// Tip asks resident, as n, where room stands, for a room with one forward
// extremity: make_leave for user (a member of n's) names the extremity
// and the next depth, /state the state before the extremity, and /event
// the extremity itself.
func (n *Node) Tip(t testing.TB, resident *Node, room, user string) *Tip {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cli := n.Federation().Client()
	origin, dest := spec.ServerName(n.Config.ServerName), spec.ServerName(resident.Config.ServerName)
	ml, err := cli.MakeLeave(ctx, origin, dest, room, user)
	if err != nil {
		t.Fatalf("make_leave %s: %v", room, err)
	}
	ver, err := gomatrixserverlib.GetRoomVersion(ml.RoomVersion)
	if err != nil {
		t.Fatal(err)
	}
	var prev []string
	if b, err := json.Marshal(ml.LeaveEvent.PrevEvents); err != nil || json.Unmarshal(b, &prev) != nil || len(prev) != 1 {
		t.Fatalf("make_leave names prev_events %v: want one extremity", ml.LeaveEvent.PrevEvents)
	}
	st, err := cli.LookupState(ctx, origin, dest, room, prev[0], ml.RoomVersion)
	if err != nil {
		t.Fatalf("state of %s at %s: %v", room, prev[0], err)
	}
	last, err := cli.GetEvent(ctx, origin, dest, prev[0])
	if err != nil || len(last.PDUs) != 1 {
		t.Fatalf("event %s: %v", prev[0], err)
	}
	tip := &Tip{Room: room, Version: ver, Prev: prev, Depth: ml.LeaveEvent.Depth}
	byKey := map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}
	for _, raw := range append(st.StateEvents, spec.RawJSON(last.PDUs[0])) {
		ev, err := ver.NewEventFromUntrustedJSON(raw)
		if err != nil {
			t.Fatalf("a state event of %s: %v", room, err)
		}
		if ev.StateKey() != nil {
			byKey[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *ev.StateKey()}] = ev
		}
	}
	for _, ev := range byKey {
		tip.State = append(tip.State, ev)
	}
	return tip
}

// Build returns a PDU of the room after the tip, sent by sender and signed
// as id: its auth events are those of the tip's state that the auth rules
// name for it.
func (tip *Tip) Build(t testing.TB, id fclient.SigningIdentity, sender, typ string, stateKey *string, content any) gomatrixserverlib.PDU {
	t.Helper()
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: tip.Room, Type: typ, StateKey: stateKey,
		PrevEvents: tip.Prev, Depth: tip.Depth}
	if err := proto.SetContent(content); err != nil {
		t.Fatal(err)
	}
	b := tip.Version.NewEventBuilderFromProtoEvent(&proto)
	provider, err := gomatrixserverlib.NewAuthEvents(tip.State)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.AddAuthEvents(provider); err != nil {
		t.Fatal(err)
	}
	ev, err := b.Build(time.Now(), id.ServerName, id.KeyID, id.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// SilentServer listens on a loopback port that takes connections, reads
// what it is sent and never answers, until the test ends; it returns the
// port's address, a server name that needs no discovery.
func SilentServer(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { _, _ = io.Copy(io.Discard, c); _ = c.Close() }()
		}
	}()
	return l.Addr().String()
}
