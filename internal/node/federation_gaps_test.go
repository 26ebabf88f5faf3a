package node_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// fedProxy stands between a node and the federation listener of another
// (target): it forwards every request and notes it, but answers 503 to
// transactions while shut (the target seems down to their sender), 404
// to /event of the events it withholds, and 502 to /event of a flaky event
// as many times as it says.
type fedProxy struct {
	*httptest.Server
	target   string
	client   *http.Client
	shut     atomic.Bool
	withheld sync.Map // event id -> struct{}
	flaky    sync.Map // event id -> *atomic.Int32, the 502s left

	mu   sync.Mutex
	seen []string // "METHOD path?query" of each request, in order
}

func startFedProxy(t *testing.T, target string) *fedProxy {
	p := &fedProxy{target: target, client: &http.Client{
		Timeout:   30 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}},
	}}
	p.Server = httptest.NewTLSServer(p)
	t.Cleanup(p.Close)
	return p
}

func (p *fedProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	p.seen = append(p.seen, r.Method+" "+r.URL.RequestURI())
	p.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/_matrix/federation/v1/send/") && p.shut.Load() {
		http.Error(w, "down", http.StatusServiceUnavailable)
		return
	}
	if ev, ok := strings.CutPrefix(r.URL.Path, "/_matrix/federation/v1/event/"); ok {
		if left, ok := p.flaky.Load(ev); ok && left.(*atomic.Int32).Add(-1) >= 0 {
			http.Error(w, "flaky", http.StatusBadGateway)
			return
		}
		if _, withheld := p.withheld.Load(ev); withheld {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusNotFound)
			_, _ = w.Write([]byte(`{"errcode":"M_NOT_FOUND","error":"withheld"}`))
			return
		}
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return
	}
	out, err := http.NewRequestWithContext(r.Context(), r.Method, "https://"+p.target+r.URL.RequestURI(), bytes.NewReader(body))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	out.Header = r.Header.Clone()
	resp, err := p.client.Do(out)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	w.Header().Set("Content-Type", resp.Header.Get("Content-Type"))
	w.WriteHeader(resp.StatusCode)
	_, _ = io.Copy(w, resp.Body)
}

// requests are the requests the proxy carried (or refused) whose path
// starts with prefix.
func (p *fedProxy) requests(prefix string) []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, s := range p.seen {
		if _, path, _ := strings.Cut(s, " "); strings.HasPrefix(path, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// gap is two nodes sharing a room, each reaching the other's federation
// listener through a proxy. While A seems down to B, bob of B sends a
// message (B's transaction in flight) and renames many times; once the
// renames are older than B's outbox horizon (a second), A comes back: it
// gets the message, then the last rename alone (B's outbox dropped the
// others), the renames before it missing.
type gap struct {
	ctx        context.Context
	a, b       *testnode.Node
	toA, toB   *fedProxy
	alice, bob *mautrix.Client
	room       id.RoomID
	names      []string     // bob's renames, in order
	ids        []id.EventID // their event ids
	before     []memberStep // bob's member events on A before the renames
}

const gapHorizon = time.Second

func newGap(ctx context.Context, t *testing.T, renames int) *gap {
	addrA, addrB := freeAddr(t), freeAddr(t)
	g := &gap{ctx: ctx, toA: startFedProxy(t, addrA), toB: startFedProxy(t, addrB)}
	named := func(addr, peer string, via *fedProxy) func(*config.Config) {
		return func(c *config.Config) {
			c.Listen.Federation, c.ServerName, c.Federation.InsecureSkipVerify = addr, addr, true
			c.Federation.Destinations = map[string]string{peer: via.URL}
			quickOutbox(c)
			c.Federation.OutboxHorizon = gapHorizon
		}
	}
	g.a = testnode.Start(t, "", named(addrA, addrB, g.toB))
	g.b = testnode.Start(t, "", named(addrB, addrA, g.toA))
	g.alice, g.bob = g.a.Register("alice"), g.b.Register("bob")
	g.room = shareRoom(ctx, t, g.a, g.alice, g.bob)
	var err error
	if g.before, _, err = memberSteps(ctx, g.alice, g.room, g.bob.UserID); err != nil {
		t.Fatal(err)
	}

	g.toA.shut.Store(true)
	sent := len(g.toA.requests("/_matrix/federation/v1/send/"))
	if _, err := g.bob.SendText(ctx, g.room, "while A is away"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to try A with bob's message", func() bool { return len(g.toA.requests("/_matrix/federation/v1/send/")) > sent })
	for i := range renames {
		name := fmt.Sprintf("Bob %d", i+1)
		if err := g.bob.SetDisplayName(ctx, name); err != nil {
			t.Fatal(err)
		}
		g.names = append(g.names, name)
	}
	waitFor(t, 20*time.Second, "bob's renames in B's copy", func() bool { return memberName(ctx, g.bob, g.room, g.bob.UserID) == g.names[renames-1] })
	waitFor(t, 20*time.Second, "B's outbox to queue bob's renames for A", func() bool {
		return metric(t, g.b, "persona_federation_outbox_queued", `destination="`+addrA+`"`) >= float64(renames+1)
	})
	steps, ids, err := memberSteps(ctx, g.bob, g.room, g.bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	g.ids = ids[len(ids)-renames:]
	for i, s := range steps[len(steps)-renames:] {
		if s.Displayname != g.names[i] {
			t.Fatalf("B's timeline of bob's renames: %v", steps)
		}
	}
	time.Sleep(gapHorizon + 200*time.Millisecond) // every rename queued is older than the horizon
	return g
}

// open lets B reach A again, and waits until B's outbox has dropped every
// rename but the last.
func (g *gap) open(t *testing.T) {
	t.Helper()
	g.toA.shut.Store(false)
	waitFor(t, 20*time.Second, "B's outbox to keep the last rename alone", func() bool {
		return metric(t, g.b, "persona_federation_outbox_dropped_pdus_total") >= float64(len(g.names)-1)
	})
}

// A gap longer than get_missing_events fills is filled from the state at
// its oldest edge: A asks B for the events before the rename it got
// (once), then for the state before the oldest of them (/state_ids) and
// for each event of it A lacks (/event); the older renames are held for
// that state, outside A's timeline, and the later ones are taken on it. A
// goes on with the room after the gap: its next event follows the last
// rename (and no outlier), and B takes it.
func TestGapIsFilledFromTheStateAtItsEdge(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const renames = 60
	g := newGap(ctx, t, renames)

	g.open(t)
	last := g.names[renames-1]
	waitFor(t, 30*time.Second, "A to take bob's last rename", func() bool { return memberName(ctx, g.alice, g.room, g.bob.UserID) == last })

	steps, _, err := memberSteps(ctx, g.alice, g.room, g.bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range steps[len(g.before):] {
		got = append(got, s.Displayname)
	}
	// get_missing_events gives the 20 renames before the last; the state
	// at the oldest of them brings those before it, outside the timeline.
	if want := g.names[renames-21:]; !slices.Equal(got, want) {
		t.Fatalf("A's timeline of bob's renames after the gap:\n got %q\nwant %q", got, want)
	}
	if n := len(g.toB.requests("/_matrix/federation/v1/get_missing_events/")); n != 1 {
		t.Errorf("A asked B for missing events %d times, want once", n)
	}
	edge := g.ids[renames-22]
	if got := g.toB.requests("/_matrix/federation/v1/state_ids/"); len(got) != 1 || !strings.Contains(got[0], "event_id="+strings.ReplaceAll(string(edge), "$", "%24")) {
		t.Errorf("A's state_ids requests %q, want one at %s", got, edge)
	}
	fetched := g.toB.requests("/_matrix/federation/v1/event/")
	for _, id := range g.ids[:renames-21] {
		if !slices.ContainsFunc(fetched, func(s string) bool {
			return strings.HasSuffix(s, string(id)) || strings.HasSuffix(s, strings.ReplaceAll(string(id), "$", "%24"))
		}) {
			t.Fatalf("A did not fetch the rename %s of the gap's state; it fetched %q", id, fetched)
		}
	}
	if refused := metric(t, g.b, "persona_federation_pdus_refused_total"); refused != 0 {
		t.Fatalf("A refused %v of B's PDUs", refused)
	}

	resp, err := g.alice.SendText(ctx, g.room, "after the gap")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to take alice's message after the gap", func() bool {
		_, err := g.bob.GetEvent(ctx, g.room, resp.EventID)
		return err == nil
	})
	status, body := testnode.DoFederation(t, g.b.FederationRequest(t, g.a, testnode.Request{Method: http.MethodGet, URI: "/_matrix/federation/v1/event/" + string(resp.EventID)}))
	var txn struct {
		PDUs []struct {
			Prev []string `json:"prev_events"`
		} `json:"pdus"`
	}
	if err := json.Unmarshal(body, &txn); err != nil || status != http.StatusOK || len(txn.PDUs) != 1 {
		t.Fatalf("A's /event of alice's message: %d %s", status, body)
	}
	prev := txn.PDUs[0].Prev
	if !slices.Contains(prev, string(g.ids[renames-1])) || slices.ContainsFunc(prev, func(p string) bool { return slices.Contains(g.ids[:renames-1], id.EventID(p)) }) {
		t.Fatalf("alice's message follows %q, want the last rename %s and no rename before it", prev, g.ids[renames-1])
	}
	if err := g.bob.SetDisplayName(ctx, "Bob after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "A to take bob's rename after the gap", func() bool { return memberName(ctx, g.alice, g.room, g.bob.UserID) == "Bob after" })
}

// A gap whose state cites an event its server does not give (/event
// answers 404) leaves that event's descendants in the auth chain rejected:
// the renames after it, held for the state or sent, never reach A's
// state, A's copy keeps bob's name from before the gap, and A's answer to
// B's transaction names no error for the last rename, which A refused only
// for the rejected auth event it cites.
func TestGapWithAnEventNotToBeHad(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const renames = 30
	g := newGap(ctx, t, renames)
	lost := g.ids[4]
	g.toB.withheld.Store(string(lost), struct{}{})
	rejectedBefore := metric(t, g.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`)

	g.open(t)
	waitFor(t, 30*time.Second, "A to answer B's transaction of the last rename", func() bool {
		return metric(t, g.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`) > rejectedBefore
	})
	if !slices.ContainsFunc(g.toB.requests("/_matrix/federation/v1/event/"), func(s string) bool {
		return strings.HasSuffix(s, string(lost)) || strings.HasSuffix(s, strings.ReplaceAll(string(lost), "$", "%24"))
	}) {
		t.Fatalf("A never asked B for %s", lost)
	}
	if refused := metric(t, g.b, "persona_federation_pdus_refused_total"); refused != 0 {
		t.Fatalf("A's answer named an error for %v of B's PDUs", refused)
	}
	want := g.before[len(g.before)-1]
	if got, err := currentMember(ctx, g.alice, g.room, g.bob.UserID); err != nil || got != want {
		t.Fatalf("A names bob %v (%v), want %v as before the gap", got, err, want)
	}
	steps, _, err := memberSteps(ctx, g.alice, g.room, g.bob.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(steps, g.before) {
		t.Fatalf("A's timeline of bob's member events %v, want %v as before the gap", steps, g.before)
	}

	// The room goes on for A's own users.
	resp, err := g.alice.SendText(ctx, g.room, "after the gap")
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to take alice's message", func() bool {
		_, err := g.bob.GetEvent(ctx, g.room, resp.EventID)
		return err == nil
	})
	var content event.MemberEventContent
	if err := g.alice.StateEvent(ctx, g.room, event.StateMember, string(g.bob.UserID), &content); err != nil || content.Displayname != want.Displayname {
		t.Fatalf("A's state of bob after alice's message: %+v (%v)", content, err)
	}
}

// A gap whose state cites an event its server fails to give for a while
// (/event answers 502) is not filled then, and nothing is rejected for it:
// the next event of B brings the gap again, the event is had, and A takes
// every rename, the last one first among them.
func TestGapWithAnEventNotHadYet(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	const renames = 30
	g := newGap(ctx, t, renames)
	late := g.ids[4]
	left := new(atomic.Int32)
	left.Store(1)
	g.toB.flaky.Store(string(late), left)
	rejectedBefore := metric(t, g.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`)

	g.open(t)
	waitFor(t, 30*time.Second, "A to ask B for the flaky event", func() bool { return left.Load() <= 0 })
	if err := g.bob.SetDisplayName(ctx, "Bob after"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 30*time.Second, "A to take bob's rename after the gap", func() bool { return memberName(ctx, g.alice, g.room, g.bob.UserID) == "Bob after" })
	if got := metric(t, g.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`); got != rejectedBefore {
		t.Errorf("A rejected %v events for a rejected auth event, want none", got-rejectedBefore)
	}
	if refused := metric(t, g.b, "persona_federation_pdus_refused_total"); refused != 0 {
		t.Errorf("A refused %v of B's PDUs", refused)
	}
}
