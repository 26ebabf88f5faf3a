package node_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"
	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// redactedOn reports whether cli reads ev as redacted by the redaction by:
// no content, and by as its redacted_because.
func redactedOn(ctx context.Context, cli *mautrix.Client, room id.RoomID, ev, by id.EventID) bool {
	got, err := cli.GetEvent(ctx, room, ev)
	return err == nil && len(got.Content.Raw) == 0 && got.Unsigned.RedactedBecause != nil && got.Unsigned.RedactedBecause.ID == by
}

// A redaction on one server strips the event on the other: a moderator of
// A redacts a message of B's user, B's user redacts their own message, and
// each server then holds the other's event redacted, serves it redacted to
// the other over federation (its id unchanged), and keeps the events no
// redaction named.
func TestRedactionsAcrossServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	sendOn := func(cli *mautrix.Client, text string) id.EventID {
		t.Helper()
		resp, err := cli.SendText(ctx, room, text)
		if err != nil {
			t.Fatal(err)
		}
		return resp.EventID
	}
	spam, own, kept := sendOn(bob, "spam from B"), sendOn(bob, "regretted on B"), sendOn(alice, "kept on A")
	for _, ev := range []id.EventID{spam, own, kept} {
		waitFor(t, 20*time.Second, "both servers to hold "+string(ev), func() bool {
			_, errA := alice.GetEvent(ctx, room, ev)
			_, errB := bob.GetEvent(ctx, room, ev)
			return errA == nil && errB == nil
		})
	}

	byAlice, err := alice.RedactEvent(ctx, room, spam, mautrix.ReqRedact{Reason: "spam"})
	if err != nil {
		t.Fatalf("alice, who created the room, redacts bob's message: %v", err)
	}
	if _, err := bob.RedactEvent(ctx, room, kept); err == nil {
		t.Fatal("bob, without power, redacted alice's message")
	}
	byBob, err := bob.RedactEvent(ctx, room, own)
	if err != nil {
		t.Fatal(err)
	}
	for _, side := range []struct {
		name string
		cli  *mautrix.Client
	}{{"A", alice}, {"B", bob}} {
		waitFor(t, 20*time.Second, side.name+" to hold bob's message redacted by alice", func() bool {
			return redactedOn(ctx, side.cli, room, spam, byAlice.EventID)
		})
		waitFor(t, 20*time.Second, side.name+" to hold bob's own redaction", func() bool {
			return redactedOn(ctx, side.cli, room, own, byBob.EventID)
		})
		got, err := side.cli.GetEvent(ctx, room, kept)
		if err != nil || got.Unsigned.RedactedBecause != nil || got.Content.Raw["body"] != "kept on A" {
			t.Fatalf("%s: alice's message reads %v, %v", side.name, got, err)
		}
	}

	// Each server serves the other's event redacted, as its id still says.
	for _, tc := range []struct {
		asker, holder *testnode.Node
		ev            id.EventID
	}{{b, a, spam}, {a, b, own}} {
		fed := tc.asker.Federation().Client()
		txn, err := fed.GetEvent(ctx, spec.ServerName(tc.asker.Config.ServerName), spec.ServerName(tc.holder.Config.ServerName), string(tc.ev))
		if err != nil || len(txn.PDUs) != 1 {
			t.Fatalf("/event %s from %s: %v", tc.ev, tc.holder.Config.ServerName, err)
		}
		pdu, err := gomatrixserverlib.MustGetRoomVersion("10").NewEventFromUntrustedJSON(txn.PDUs[0])
		if err != nil {
			t.Fatalf("/event %s: %v", tc.ev, err)
		}
		var served struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(txn.PDUs[0], &served)
		if pdu.EventID() != string(tc.ev) || string(served.Content) != "{}" {
			t.Fatalf("%s serves %s as %s with content %s", tc.holder.Config.ServerName, tc.ev, pdu.EventID(), served.Content)
		}
	}
}

// A redaction that comes before the event it redacts is kept, and the
// event is held redacted once it comes: B sends a redaction of an event
// it has not sent yet, then the event.
func TestRedactionBeforeItsEvent(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	s := newSharedRoom(t, ctx, nil)
	p, alice, room, sender := s.peerEvents, s.alice, s.id, s.bob
	create, power, join := s.create, s.power, s.join
	auth := []string{create, power, join}

	late := p.build(sender, "m.room.message", nil, map[string]any{"msgtype": "m.text", "body": "sent after its redaction"}, []string{join}, auth)
	raw, _ := json.Marshal(map[string]any{"reason": "first"})
	proto := gomatrixserverlib.ProtoEvent{SenderID: sender, RoomID: string(room), Type: "m.room.redaction", Redacts: late.EventID(),
		Content: raw, PrevEvents: []string{join}, AuthEvents: auth, Depth: 100}
	identity := s.b.Federation().Identity()
	redaction, err := gomatrixserverlib.MustGetRoomVersion("10").NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), identity.ServerName, identity.KeyID, identity.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	if verdict := p.send(redaction); verdict != "" {
		t.Fatalf("the redaction of an event A lacks was refused: %s", verdict)
	}
	if verdict := p.send(late); verdict != "" {
		t.Fatalf("the event after its redaction was refused: %s", verdict)
	}
	if !redactedOn(ctx, alice, room, id.EventID(late.EventID()), id.EventID(redaction.EventID())) {
		got, err := alice.GetEvent(ctx, room, id.EventID(late.EventID()))
		t.Fatalf("A holds the event that came after its redaction as %+v, %v", got, err)
	}
}
