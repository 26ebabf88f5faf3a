package node_test

import (
	"context"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"persona/internal/testnode"
)

// get_missing_events and backfill give a server the events its users could
// not see, by the room's history visibility, redacted: in a "joined" room, a
// message sent before the server's first user joined comes without its
// body, one sent after comes whole.
func TestServerReadsFollowHistoryVisibility(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat",
		InitialState: []*event.Event{{Type: event.StateHistoryVisibility, StateKey: new(string),
			Content: event.Content{Raw: map[string]any{"history_visibility": "joined"}}}}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	before, err := alice.SendText(ctx, room, "before bob")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	after, err := alice.SendText(ctx, room, "after bob")
	if err != nil {
		t.Fatal(err)
	}

	var create string
	state, err := alice.State(ctx, room)
	if err != nil {
		t.Fatal(err)
	}
	create = string(state[event.StateCreate][""].ID)
	origin, dest := spec.ServerName(b.Config.ServerName), spec.ServerName(a.Config.ServerName)
	fed := b.Federation().Client()
	missing, err := fed.LookupMissingEvents(ctx, origin, dest, string(room),
		fclient.MissingEvents{Limit: 20, EarliestEvents: []string{create}, LatestEvents: []string{string(after.EventID)}}, "10")
	if err != nil {
		t.Fatal(err)
	}
	back, err := fed.Backfill(ctx, origin, dest, string(room), 20, []string{string(after.EventID)})
	if err != nil {
		t.Fatal(err)
	}
	var backfilled gomatrixserverlib.EventJSONs
	for _, raw := range back.PDUs {
		backfilled = append(backfilled, spec.RawJSON(raw))
	}
	for name, events := range map[string][]gomatrixserverlib.PDU{
		"get_missing_events": missing.Events.UntrustedEvents("10"),
		"backfill":           backfilled.UntrustedEvents("10"),
	} {
		bodies := map[string]string{}
		for _, ev := range events {
			if ev.Type() == "m.room.message" {
				bodies[ev.EventID()] = string(ev.Content())
			}
		}
		if got := bodies[string(before.EventID)]; got != "{}" {
			t.Errorf("%s: the message before bob's join is %q, want it redacted", name, got)
		}
		if name == "backfill" && bodies[string(after.EventID)] == "{}" {
			t.Errorf("%s: the message after bob's join is redacted", name)
		}
	}
}
