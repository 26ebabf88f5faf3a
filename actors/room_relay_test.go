package actors

import (
	"crypto/ed25519"
	"encoding/json"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/config"
	"persona/host"
	"persona/internal/mxid"
	"persona/wire"
)

// outboxRecorder stands for the federation outbox: it records the events
// rooms hand each destination and never acknowledges them, as an outbox
// that had not yet queued them when the node stopped.
type outboxRecorder struct {
	mu  sync.Mutex
	got map[string][]string // destination -> event ids, in order
}

func (o *outboxRecorder) kind() host.Kind {
	return host.Kind{Name: KindOutbox, New: func(string, *host.IdleWatch) actor.Actor {
		return actor.ReceiveFunc(func(ctx actor.Context) {
			m, ok := ctx.Message().(*wire.OutboundPDUs)
			if !ok {
				return
			}
			o.mu.Lock()
			defer o.mu.Unlock()
			for _, p := range m.Pdus {
				o.got[m.Destination] = append(o.got[m.Destination], eventIDOf(p.Json))
			}
		})
	}}
}

func (o *outboxRecorder) to(dest string) []string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return slices.Clone(o.got[dest])
}

// eventIDOf is the reference hash id of a PDU of room version 10.
func eventIDOf(pdu []byte) string {
	ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersionV10).NewEventFromTrustedJSON(pdu, false)
	if err != nil {
		return ""
	}
	return ev.EventID()
}

// joinThrough has user, of another server, join room through this one
// (make_join, then send_join of the event signed by a key of user's
// server), and returns the join's event id.
func joinThrough(t *testing.T, h *Service, room, user string) string {
	t.Helper()
	tmpl := askKind[*wire.MakeMembershipReply](t, h, KindRoom, room, &wire.MakeMembership{RoomId: room, UserId: user, Membership: "join"})
	if tmpl.Error != nil {
		t.Fatalf("make_join for %s: %v", user, tmpl.Error)
	}
	var proto gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(tmpl.Event, &proto); err != nil {
		t.Fatal(err)
	}
	_, key, _ := ed25519.GenerateKey(nil)
	origin := spec.ServerName(mxid.ServerOf(user))
	ev, err := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(tmpl.RoomVersion)).NewEventBuilderFromProtoEvent(&proto).
		Build(time.Now(), origin, "ed25519:test", key)
	if err != nil {
		t.Fatal(err)
	}
	r := askKind[*wire.SendMembershipReply](t, h, KindRoom, room, &wire.SendMembership{RoomId: room, Origin: string(origin), Pdu: ev.JSON(), Membership: "join"})
	if r.Error != nil || r.Rejected != "" {
		t.Fatalf("send_join for %s: %v %s", user, r.Error, r.Rejected)
	}
	return ev.EventID()
}

// A join another server sends through this one goes on to the room's
// other servers; when the node stops before their outboxes took it, the
// room sends it again after the restart, and not back to its origin.
func TestRelayedJoinIsSentAgainAfterARestart(t *testing.T) {
	dir := t.TempDir()
	first := &outboxRecorder{got: map[string][]string{}}
	h, st := newHostOpts(t, dir, config.Default(), Options{Kinds: []host.Kind{first.kind()}})
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	joinThrough(t, h, room, "@carol:third.test")
	join := joinThrough(t, h, room, "@bob:remote.test")
	eventually(t, "bob's join relayed to third.test", func() bool { return slices.Contains(first.to("third.test"), join) })
	h.Stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}

	again := &outboxRecorder{got: map[string][]string{}}
	h, st = newHostOpts(t, dir, config.Default(), Options{Kinds: []host.Kind{again.kind()}})
	defer func() { h.Stop(); _ = st.Close() }()
	eventually(t, "bob's join relayed again after the restart", func() bool { return slices.Contains(again.to("third.test"), join) })
	if got := again.to("remote.test"); slices.Contains(got, join) {
		t.Errorf("bob's join went back to its origin: %v", got)
	}
}
