package node_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"persona/internal/testnode"
)

// signedFrom builds and signs, as b, the event proto with its type, state
// key and content replaced.
func signedFrom(t *testing.T, b *testnode.Node, ver gomatrixserverlib.RoomVersion, proto gomatrixserverlib.ProtoEvent, typ string, stateKey *string, content map[string]any) gomatrixserverlib.PDU {
	t.Helper()
	raw, err := json.Marshal(content)
	if err != nil {
		t.Fatal(err)
	}
	proto.Type, proto.StateKey, proto.Content = typ, stateKey, raw
	id := b.Federation().Identity()
	ev, err := gomatrixserverlib.MustGetRoomVersion(ver).NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), id.ServerName, id.KeyID, id.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// statusOf is the HTTP status of a federation client's error (200 for none).
func statusOf(err error) int {
	var h gomatrix.HTTPError
	switch {
	case err == nil:
		return 200
	case errors.As(err, &h):
		return h.Code
	}
	return -1
}

// send_join and send_leave take only a join (a leave) of its sender, of the
// server that sends it: anything else is refused before the room's auth
// rules, 400 for the wrong event and 403 for a sender of another server.
func TestSendMembershipTakesOnlyItsMembership(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice := a.Register("alice")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := string(created.RoomID)
	origin, dest := spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName)
	bob := "@bob:" + b.Config.ServerName
	other := "@doris:" + b.Config.ServerName
	stranger := "@carol:" + a.Config.ServerName
	made, err := b.Federation().Client().MakeJoin(ctx, origin, dest, room, bob)
	if err != nil {
		t.Fatal(err)
	}
	proto := made.JoinEvent
	member := func(user, membership string) (string, *string, map[string]any) {
		return spec.MRoomMember, &user, map[string]any{"membership": membership}
	}
	cases := []struct {
		name       string
		membership string
		typ        string
		stateKey   *string
		content    map[string]any
		want       int
	}{
		{"a message to send_join", "join", "m.room.message", nil, map[string]any{"body": "hi"}, 400},
		{"a leave to send_join", "join", "", nil, nil, 400},
		{"a join of another user", "join", "", nil, nil, 400},
		{"a join of another server's user", "join", "", nil, nil, 403},
		{"a message to send_leave", "leave", "m.room.message", nil, map[string]any{"body": "hi"}, 400},
		{"a join to send_leave", "leave", "", nil, nil, 400},
	}
	cases[1].typ, cases[1].stateKey, cases[1].content = member(bob, "leave")
	cases[2].typ, cases[2].stateKey, cases[2].content = member(other, "join")
	cases[3].typ, cases[3].stateKey, cases[3].content = member(stranger, "join")
	cases[5].typ, cases[5].stateKey, cases[5].content = member(bob, "join")
	for _, tc := range cases {
		p := proto
		if tc.name == "a join of another server's user" {
			p.SenderID = stranger
		}
		ev := signedFrom(t, b, made.RoomVersion, p, tc.typ, tc.stateKey, tc.content)
		if tc.membership == "join" {
			_, err = b.Federation().Client().SendJoin(ctx, origin, dest, ev)
		} else {
			err = b.Federation().Client().SendLeave(ctx, origin, dest, ev)
		}
		if got := statusOf(err); got != tc.want {
			t.Errorf("%s: status %d (%v), want %d", tc.name, got, err, tc.want)
		}
	}

	ev := signedFrom(t, b, made.RoomVersion, proto, spec.MRoomMember, &bob, map[string]any{"membership": "join"})
	if _, err := b.Federation().Client().SendJoin(ctx, origin, dest, ev); err != nil {
		t.Fatalf("bob's own join: %v", err)
	}
	waitFor(t, 10*time.Second, "bob in A's room", func() bool {
		var content map[string]any
		return alice.StateEvent(ctx, created.RoomID, event.StateMember, bob, &content) == nil && content["membership"] == "join"
	})
}
