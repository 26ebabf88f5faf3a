package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// peerEvents builds and sends, as server b, events of a room on server a.
type peerEvents struct {
	t            *testing.T
	ctx          context.Context
	a, b         *testnode.Node
	room         string
	ver          gomatrixserverlib.RoomVersion
	origin, dest spec.ServerName
	txn          int
}

// sharedRoom is a room of version 10 that alice of server A created
// public and bob of server B joined, with B's peer of it.
type sharedRoom struct {
	*peerEvents
	alice               *mautrix.Client
	id                  id.RoomID
	bob                 string // bob's user id: the sender of the peer's events
	create, power, join string // ids of the create, power levels and bob's join events
}

// newSharedRoom starts servers A and B and makes their shared room;
// levels, if given, are its users' power levels.
func newSharedRoom(t *testing.T, ctx context.Context, levels func(alice, bob id.UserID) map[id.UserID]int) *sharedRoom {
	t.Helper()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	req := &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: "10"}
	if levels != nil {
		req.PowerLevelOverride = &event.PowerLevelsEventContent{Users: levels(alice.UserID, bob.UserID)}
	}
	created, err := alice.CreateRoom(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	state, err := alice.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	return &sharedRoom{
		peerEvents: &peerEvents{t: t, ctx: ctx, a: a, b: b, room: string(room), ver: "10",
			origin: spec.ServerName(b.Config.ServerName), dest: spec.ServerName(a.Config.ServerName)},
		alice: alice, id: room, bob: string(bob.UserID),
		create: string(state[event.StateCreate][""].ID), power: string(state[event.StatePowerLevels][""].ID),
		join: string(state[event.StateMember][string(bob.UserID)].ID),
	}
}

// build signs an event of sender with the given prev and auth events.
func (p *peerEvents) build(sender, typ string, stateKey *string, content map[string]any, prev, auth []string) gomatrixserverlib.PDU {
	p.t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		p.t.Fatal(err)
	}
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: p.room, Type: typ, StateKey: stateKey,
		Content: raw, PrevEvents: prev, AuthEvents: auth, Depth: 100}
	id := p.b.Federation().Identity()
	ev, err := gomatrixserverlib.MustGetRoomVersion(p.ver).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), id.ServerName, id.KeyID, id.PrivateKey)
	var invalid gomatrixserverlib.EventValidationError
	if err != nil && !(errors.As(err, &invalid) && invalid.Persistable) {
		p.t.Fatal(err)
	}
	return ev
}

// send sends ev in a transaction of its own and returns a's verdict on it
// ("" when it took it).
func (p *peerEvents) send(ev gomatrixserverlib.PDU) string {
	p.t.Helper()
	p.txn++
	resp, err := p.b.Federation().Client().SendTransaction(p.ctx, gomatrixserverlib.Transaction{
		TransactionID: gomatrixserverlib.TransactionID(fmt.Sprintf("peer-%d-%d", time.Now().UnixNano(), p.txn)),
		Origin:        p.origin, Destination: p.dest, OriginServerTS: spec.AsTimestamp(time.Now()),
		PDUs: []json.RawMessage{ev.JSON()},
	})
	if err != nil {
		p.t.Fatal(err)
	}
	res, ok := resp.PDUs[ev.EventID()]
	if !ok {
		p.t.Fatalf("no verdict on %s: %v", ev.EventID(), resp.PDUs)
	}
	return res.Error
}

// An event the auth rules refuse stays out of the room, and so does every
// event that names it among its auth events (the transaction's answer
// names no error for such an event: the refusal is for another event's
// fault); an event that follows it (a prev event) is taken, on the state
// before it.
func TestRejectedEventsStayInTheDAGOnly(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newSharedRoom(t, ctx, nil)
	p, alice, room, sender := s.peerEvents, s.alice, s.id, s.bob
	create, power, join := s.create, s.power, s.join

	grab := p.build(sender, "m.room.power_levels", new(string), map[string]any{"users": map[string]any{sender: 100}},
		[]string{join}, []string{create, power, join})
	if verdict := p.send(grab); verdict == "" {
		t.Fatal("a power levels change by a user without power was taken")
	}
	citing := p.build(sender, "m.room.message", nil, map[string]any{"body": "cites the refused event"},
		[]string{join}, []string{create, grab.EventID(), join})
	rejected := metric(t, s.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`)
	if verdict := p.send(citing); verdict != "" {
		t.Fatalf("an event refused only for the refused auth event it cites was answered with an error: %s", verdict)
	}
	if got := metric(t, s.a, "persona_federation_pdus_rejected_total", `reason="auth_event"`); got != rejected+1 {
		t.Fatalf("A counted %v events refused for a refused auth event, want %v", got, rejected+1)
	}
	following := p.build(sender, "m.room.message", nil, map[string]any{"body": "follows the refused event"},
		[]string{grab.EventID()}, []string{create, power, join})
	if verdict := p.send(following); verdict != "" {
		t.Fatalf("an event following a refused one was refused: %s", verdict)
	}

	for ev, want := range map[gomatrixserverlib.PDU]bool{grab: false, citing: false, following: true} {
		_, err := alice.GetEvent(ctx, room, id.EventID(ev.EventID()))
		var httpErr mautrix.HTTPError
		switch {
		case want && err != nil:
			t.Errorf("alice cannot read %s: %v", ev.EventID(), err)
		case !want && (err == nil || !errors.As(err, &httpErr) || httpErr.Response.StatusCode != 404):
			t.Errorf("alice reads the refused %s: %v", ev.EventID(), err)
		}
	}
	if _, err := alice.SendText(ctx, room, "after"); err != nil {
		t.Fatalf("alice writes after the refused events: %v", err)
	}
}

// A state key over 255 bytes but within 255 codepoints is one rooms before
// version 11 hold: an event with one is taken, and so is the next.
func TestLongStateKeysOfOldRoomVersions(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newSharedRoom(t, ctx, func(alice, bob id.UserID) map[id.UserID]int { return map[id.UserID]int{alice: 100, bob: 50} })
	p, alice, room, sender := s.peerEvents, s.alice, s.id, s.bob
	create, power, join := s.create, s.power, s.join

	long := strings.Repeat("\U0001F4A5", 70) // 280 bytes, 70 codepoints
	breaker := p.build(sender, "my.room.breaker", &long, map[string]any{}, []string{join}, []string{create, power, join})
	if verdict := p.send(breaker); verdict != "" {
		t.Fatalf("the event with a 280-byte state key was refused: %s", verdict)
	}
	next := p.build(sender, "m.room.message", nil, map[string]any{"body": "after"}, []string{breaker.EventID()}, []string{create, power, join})
	if verdict := p.send(next); verdict != "" {
		t.Fatalf("the event after it was refused: %s", verdict)
	}
	if _, err := alice.GetEvent(ctx, room, id.EventID(next.EventID())); err != nil {
		t.Fatalf("alice cannot read the event after it: %v", err)
	}
}

// A room's server ACL shuts a denied server out: its events are refused,
// its reads and join templates are forbidden.
func TestServerACLShutsOutADeniedServer(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newSharedRoom(t, ctx, nil)
	p, alice, room, sender := s.peerEvents, s.alice, s.id, s.bob
	create, power, join := s.create, s.power, s.join
	before := p.build(sender, "m.room.message", nil, map[string]any{"body": "before the ACL"}, []string{join}, []string{create, power, join})
	if verdict := p.send(before); verdict != "" {
		t.Fatalf("bob's message before the ACL was refused: %s", verdict)
	}

	// Every node here is on 127.0.0.1; the room's own server is never denied.
	acl, err := alice.SendStateEvent(ctx, room, event.StateServerACL, "", map[string]any{"allow": []string{"*"}, "deny": []string{"127.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	after := p.build(sender, "m.room.message", nil, map[string]any{"body": "after the ACL"}, []string{string(acl.EventID)}, []string{create, power, join})
	if verdict := p.send(after); verdict == "" {
		t.Fatal("bob's message after the ACL was taken")
	}
	fed := s.b.Federation().Client()
	if _, err := fed.LookupMissingEvents(ctx, p.origin, p.dest, string(room),
		fclient.MissingEvents{Limit: 10, EarliestEvents: []string{create}, LatestEvents: []string{string(acl.EventID)}}, "10"); statusOf(err) != 403 {
		t.Errorf("get_missing_events of the denied server: %v, want 403", err)
	}
	if _, err := fed.MakeJoin(ctx, p.origin, p.dest, string(room), "@carol:"+s.b.Config.ServerName); statusOf(err) != 403 {
		t.Errorf("make_join for a user of the denied server: %v, want 403", err)
	}
	if _, err := alice.GetEvent(ctx, room, id.EventID(after.EventID())); err == nil {
		t.Error("alice reads bob's message sent after the ACL")
	}
}
