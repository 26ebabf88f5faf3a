package actors

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"

	"persona/config"
	"persona/wire"
)

// clientView is what a client reads of an event.
type clientView struct {
	ID       string          `json:"event_id"`
	Type     string          `json:"type"`
	Content  json.RawMessage `json:"content"`
	Redacts  string          `json:"redacts"`
	Unsigned struct {
		PrevContent     json.RawMessage `json:"prev_content"`
		RedactedBecause *struct {
			ID      string `json:"event_id"`
			Redacts string `json:"redacts"`
		} `json:"redacted_because"`
	} `json:"unsigned"`
}

func viewOf(t *testing.T, raw []byte) clientView {
	t.Helper()
	var v clientView
	if err := json.Unmarshal(raw, &v); err != nil {
		t.Fatalf("%s: %v", raw, err)
	}
	return v
}

// A room's redactions: a member redacts its own event and no other, a
// moderator anyone's, and an event the room does not hold only with the
// power to redact. A redacted event reads as the room version's redaction
// algorithm leaves it everywhere a client reads it (/event, /messages,
// /sync, /context, the state), with the redaction as
// unsigned.redacted_because, the event that replaced a redacted state
// event shows its redacted content as prev_content, and every PDU of the
// room, the redacted ones and the redactions, still passes
// gomatrixserverlib's checks and auth rules; across a restart too.
func TestRedactions(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "11"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			testRedactions(t, version)
		})
	}
}

func testRedactions(t *testing.T, version string) {
	dir := t.TempDir()
	_, key, _ := ed25519.GenerateKey(nil)
	opts := Options{Signing: Signing{KeyID: "ed25519:test", Key: key}}
	h, st := newHostOpts(t, dir, config.Default(), opts)
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	room := "!redact" + version + ":" + server
	prof, v := profileOf(t, h, alice)
	create := fmt.Sprintf(`{"preset":"public_chat","room_version":%q}`, version)
	if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.CreateRoom{RoomId: room, Creator: alice, RequestJson: []byte(create), CreatorProfileJson: prof, CreatorProfileVersion: v}); r.Error != nil {
		t.Fatal(r.Error)
	}
	bp, bv := profileOf(t, h, bob)
	if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: bob, Target: bob, Action: "join", ProfileJson: bp, ProfileVersion: bv}); r.Error != nil {
		t.Fatal(r.Error)
	}
	send := func(sender, typ string, state bool, content string) string {
		t.Helper()
		r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.SendEvent{RoomId: room, Sender: sender, Type: typ, IsState: state, ContentJson: []byte(content), TxnId: "s-" + content})
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		return r.EventId
	}
	redact := func(sender, id, txn string) *wire.SendReply {
		t.Helper()
		return askKind[*wire.SendReply](t, h, KindRoom, room, &wire.RedactEvent{RoomId: room, Sender: sender, DeviceId: "D", TxnId: txn, EventId: id, ContentJson: []byte(`{"reason":"spam"}`)})
	}
	mustRedact := func(sender, id, txn string) string {
		t.Helper()
		r := redact(sender, id, txn)
		if r.Error != nil {
			t.Fatalf("%s redacts %s: %v", sender, id, r.Error)
		}
		return r.EventId
	}
	event := func(id string) clientView {
		t.Helper()
		r := askKind[*wire.EventReply](t, h, KindRoom, room, &wire.GetEvent{RoomId: room, UserId: bob, EventId: id})
		if r.Error != nil {
			t.Fatalf("read %s: %v", id, r.Error)
		}
		return viewOf(t, r.EventJson)
	}
	wantRedacted := func(where string, ev clientView, content, by string) {
		t.Helper()
		if string(ev.Content) != content || ev.Unsigned.RedactedBecause == nil || ev.Unsigned.RedactedBecause.ID != by || ev.Unsigned.PrevContent != nil {
			t.Fatalf("%s: %s reads %s, redacted_because %+v, prev_content %s; want %s by %s", where, ev.ID, ev.Content, ev.Unsigned.RedactedBecause, ev.Unsigned.PrevContent, content, by)
		}
	}

	bobs := send(bob, "m.room.message", false, `{"msgtype":"m.text","body":"bob's secret"}`)
	alices := send(alice, "m.room.message", false, `{"msgtype":"m.text","body":"alice's"}`)
	topic1 := send(alice, "m.room.topic", true, `{"topic":"first"}`)
	topic2 := send(alice, "m.room.topic", true, `{"topic":"second"}`)
	topic3 := send(alice, "m.room.topic", true, `{"topic":"third"}`)

	if r := redact(bob, alices, "b0"); r.Error == nil || r.Error.Kind != wire.Error_FORBIDDEN {
		t.Fatalf("bob redacts alice's event without power: %v", r)
	}
	if r := redact(bob, "$unknown", "b1"); r.Error == nil || r.Error.Kind != wire.Error_NOT_FOUND {
		t.Fatalf("bob redacts an event the room does not hold without power: %v", r)
	}
	if r := redact(alice, mustCreateID(t, h, room, alice), "a0"); r.Error == nil || r.Error.Kind != wire.Error_FORBIDDEN {
		t.Fatalf("the create event was redacted: %v", r)
	}
	if r := askKind[*wire.SendReply](t, h, KindRoom, "!nowhere:"+server, &wire.RedactEvent{RoomId: "!nowhere:" + server, Sender: bob, EventId: bobs}); r.Error == nil || r.Error.Kind != wire.Error_FORBIDDEN {
		t.Fatalf("a redaction in a room that does not exist: %v", r)
	}

	byBob := mustRedact(bob, bobs, "b2")
	if again := mustRedact(bob, bobs, "b2"); again != byBob {
		t.Fatalf("the same transaction redacted again: %s, then %s", byBob, again)
	}
	if other := send(bob, "m.room.message", false, `{"body":"b2"}`); other == byBob {
		t.Fatal("a /send transaction with a redaction's txn id got the redaction")
	}
	byAlice1 := mustRedact(alice, topic1, "a1")
	byAlice2 := mustRedact(alice, topic3, "a2")
	bobJoin := stateEventID(t, h, room, bob, "m.room.member", bob)
	byAlice3 := mustRedact(alice, bobJoin, "a3")
	byAlice4 := mustRedact(alice, "$not-here-yet", "a4")

	check := func(when string) {
		t.Helper()
		wantRedacted(when+": /event", event(bobs), `{}`, byBob)
		wantRedacted(when+": /event of the older topic", event(topic1), `{}`, byAlice1)
		wantRedacted(when+": /event of the member event", event(bobJoin), `{"membership":"join"}`, byAlice3)
		if ev := event(alices); string(ev.Content) == "{}" || ev.Unsigned.RedactedBecause != nil {
			t.Fatalf("%s: alice's event was redacted: %s", when, ev.Content)
		}
		red := event(byBob)
		if red.Type != "m.room.redaction" || red.Redacts != bobs {
			t.Fatalf("%s: the redaction reads %+v", when, red)
		}
		var rc struct{ Redacts, Reason string }
		if err := json.Unmarshal(red.Content, &rc); err != nil || rc.Redacts != bobs || rc.Reason != "spam" {
			t.Fatalf("%s: the redaction's content %s", when, red.Content)
		}
		if ev := event(byAlice4); ev.Redacts != "$not-here-yet" {
			t.Fatalf("%s: the redaction of an event the room lacks reads %+v", when, ev)
		}
		if t2 := event(topic2); string(t2.Unsigned.PrevContent) != "{}" || t2.Unsigned.RedactedBecause != nil {
			t.Fatalf("%s: the topic after the redacted one shows prev_content %s", when, t2.Unsigned.PrevContent)
		}
		state := askKind[*wire.StateReply](t, h, KindRoom, room, &wire.GetState{RoomId: room, UserId: bob, Type: "m.room.topic"})
		if state.Error != nil || len(state.EventsJson) != 1 {
			t.Fatalf("%s: topic state %v", when, state.Error)
		}
		wantRedacted(when+": the topic in the state", viewOf(t, state.EventsJson[0]), `{}`, byAlice2)
		if got := memberName(t, h, room, bob); got != "" {
			t.Fatalf("%s: bob's redacted member event still names him %q", when, got)
		}
		if m := askKind[*wire.StateReply](t, h, KindRoom, room, &wire.GetState{RoomId: room, UserId: bob, Members: true, Membership: "join"}); len(m.EventsJson) != 2 {
			t.Fatalf("%s: %d joined members after a member event was redacted, want 2", when, len(m.EventsJson))
		}
		msgs := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: bob, Dir: "b", Limit: 100})
		sync := askKind[*wire.RoomSyncReply](t, h, KindRoom, room, &wire.RoomSync{RoomId: room, UserId: bob, Limit: 100})
		ctx := askKind[*wire.ContextReply](t, h, KindRoom, room, &wire.GetContext{RoomId: room, UserId: bob, EventId: alices, Limit: 4})
		for name, evs := range map[string][][]byte{"/messages": msgs.Chunk, "/sync": sync.Timeline, "/context": append(ctx.EventsBefore, ctx.EventsAfter...)} {
			seen := false
			for _, raw := range evs {
				if ev := viewOf(t, raw); ev.ID == bobs {
					wantRedacted(when+": "+name, ev, `{}`, byBob)
					seen = true
				}
			}
			if !seen {
				t.Fatalf("%s: %s lacks bob's redacted event", when, name)
			}
		}
		pdus := askKind[*wire.PDUsReply](t, h, KindRoom, room, &wire.GetPDUs{RoomId: room, EventIds: []string{bobs}})
		var asServed struct {
			Content   json.RawMessage `json:"content"`
			Signature json.RawMessage `json:"signatures"`
		}
		if len(pdus.Pdus) != 1 || json.Unmarshal(pdus.Pdus[0], &asServed) != nil || string(asServed.Content) != "{}" || asServed.Signature == nil {
			t.Fatalf("%s: other servers get bob's redacted event as %q", when, pdus.Pdus)
		}
		checkRoomPDUs(t, h, room, version, key.Public().(ed25519.PublicKey), 17)
	}
	check("at once")
	h.Stop()
	st.Close()
	h, st = newHostOpts(t, dir, config.Default(), opts)
	defer func() { h.Stop(); st.Close() }()
	check("after a restart")
}

// mustCreateID is the id of the room's create event.
func mustCreateID(t *testing.T, h *Service, room, user string) string {
	return stateEventID(t, h, room, user, "m.room.create", "")
}

// stateEventID is the id of the current state event (typ, key) as user
// reads it.
func stateEventID(t *testing.T, h *Service, room, user, typ, key string) string {
	t.Helper()
	r := askKind[*wire.StateReply](t, h, KindRoom, room, &wire.GetState{RoomId: room, UserId: user, Type: typ, StateKey: key})
	if r.Error != nil || len(r.EventsJson) == 0 {
		t.Fatalf("state %s %q: %v", typ, key, r.Error)
	}
	return viewOf(t, r.EventsJson[0]).ID
}
