package actors

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/config"
	"persona/storage"
	"persona/wire"
)

// Every event a room holds is a PDU that gomatrixserverlib, the library
// Dendrite is built on, accepts as another server would: its id is the
// reference hash, its content hash and our signature verify, it follows
// the room's last event, its auth_events are the state the spec's
// selection names, and the auth rules allow it against the state before
// it. The room's life covers creation, a join, renames (propagation), a
// per-room name, messages, a leave, and a restart between writes.
func TestRoomEventsArePDUsTheAuthRulesAllow(t *testing.T) {
	t.Parallel()
	for _, version := range []string{"10", "11", "12"} {
		t.Run("v"+version, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			_, key, _ := ed25519.GenerateKey(nil)
			opts := Options{Signing: Signing{KeyID: "ed25519:test", Key: key}}
			h, st := newHostOpts(t, dir, config.Default(), opts)
			alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
			room := "!pdu" + version + ":" + server
			prof, v := profileOf(t, h, alice)
			create := fmt.Sprintf(`{"preset":"public_chat","room_version":%q,"name":"PDUs <&> \u2028"}`, version)
			created := time.Now().UnixMilli()
			if version == "12" {
				var err error
				if room, err = RoomIDForVersion12(server, alice, []byte(create), created); err != nil {
					t.Fatal(err)
				}
			}
			if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.CreateRoom{RoomId: room, Creator: alice, RequestJson: []byte(create), CreatorProfileJson: prof, CreatorProfileVersion: v, CreatedMs: created}); r.Error != nil {
				t.Fatal(r.Error)
			}
			bp, bv := profileOf(t, h, bob)
			if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: bob, Target: bob, Action: "join", ProfileJson: bp, ProfileVersion: bv}); r.Error != nil {
				t.Fatal(r.Error)
			}
			setName(t, h, alice, "Alice <1>", wire.Propagate_PROPAGATE_DEFAULT)
			waitPropagated(t, h, alice)
			send := func(h *Service, sender, typ, stateKey string, content string) {
				t.Helper()
				m := &wire.SendEvent{RoomId: room, Sender: sender, Type: typ, ContentJson: []byte(content), IsState: stateKey != "-"}
				if m.IsState {
					m.StateKey = stateKey
				}
				if r := askKind[*wire.SendReply](t, h, KindRoom, room, m); r.Error != nil {
					t.Fatal(r.Error)
				}
			}
			send(h, bob, "m.room.message", "-", `{"msgtype":"m.text","body":"héllo \u0001"}`)
			send(h, bob, "m.room.member", bob, `{"membership":"join","displayname":"Bob here"}`)
			h.Stop()
			st.Close()
			h, st = newHostOpts(t, dir, config.Default(), opts)
			defer func() { h.Stop(); st.Close() }()
			setName(t, h, bob, "Bob again", wire.Propagate_PROPAGATE_ALL)
			waitPropagated(t, h, bob)
			pl := `{"users":{"` + alice + `":100,"` + bob + `":50},"users_default":0,"events":{},"state_default":50,"events_default":0,"ban":50,"kick":50,"redact":50,"invite":0}`
			if version == "12" { // the creator's power is above the power levels
				if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.power_levels", IsState: true, ContentJson: []byte(pl)}); r.Error == nil {
					t.Fatal("a v12 room took power levels that name its creator")
				}
				pl = `{"users":{"` + bob + `":50},"users_default":0,"events":{},"state_default":50,"events_default":0,"ban":50,"kick":50,"redact":50,"invite":0}`
			}
			send(h, alice, "m.room.power_levels", "", pl)
			send(h, alice, "m.room.topic", "", `{"topic":"after the power levels"}`)
			if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: bob, Target: bob, Action: "leave"}); r.Error != nil {
				t.Fatal(r.Error)
			}
			checkRoomPDUs(t, h, room, version, key.Public().(ed25519.PublicKey), 14)
		})
	}
}

// checkRoomPDUs reads the whole of room as PDUs and checks each against
// gomatrixserverlib, as the test above says; want is the event count.
func checkRoomPDUs(t *testing.T, h *Service, room, version string, pub ed25519.PublicKey, want int) {
	t.Helper()
	msgs := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: "@alice:" + server, Dir: "f", Limit: 100})
	if msgs.Error != nil {
		t.Fatal(msgs.Error)
	}
	var ids []string
	for _, raw := range msgs.Chunk {
		var ev struct {
			ID string `json:"event_id"`
		}
		_ = json.Unmarshal(raw, &ev)
		ids = append(ids, ev.ID)
	}
	if len(ids) != want {
		t.Fatalf("%d events, want %d", len(ids), want)
	}
	got := askKind[*wire.PDUsReply](t, h, KindRoom, room, &wire.GetPDUs{RoomId: room, EventIds: ids})
	if got.Error != nil || len(got.Pdus) != len(ids) {
		t.Fatalf("PDUs: %d of %d, %v", len(got.Pdus), len(ids), got.Error)
	}
	verImpl := gomatrixserverlib.MustGetRoomVersion(gomatrixserverlib.RoomVersion(version))
	querier := func(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) { return spec.NewUserID(string(s), true) }
	state := map[gomatrixserverlib.StateKeyTuple]gomatrixserverlib.PDU{}
	var prev gomatrixserverlib.PDU
	for i, raw := range got.Pdus {
		ev, err := verImpl.NewEventFromUntrustedJSON(raw)
		if err != nil {
			t.Fatalf("event %d: %v\n%s", i, err, raw)
		}
		if ev.EventID() != ids[i] {
			t.Fatalf("event %d: the library computes id %s, the room says %s", i, ev.EventID(), ids[i])
		}
		var asSent struct {
			Content json.RawMessage `json:"content"`
		}
		_ = json.Unmarshal(raw, &asSent)
		if string(ev.Content()) != string(asSent.Content) { // a bad content hash makes the library redact the event
			t.Fatalf("event %d: content hash does not verify", i)
		}
		redacted, err := verImpl.RedactEventJSON(raw)
		if err != nil {
			t.Fatal(err)
		}
		if err := gomatrixserverlib.VerifyJSON(server, "ed25519:test", pub, redacted); err != nil {
			t.Fatalf("event %d: signature: %v", i, err)
		}
		if prev == nil {
			if len(ev.PrevEventIDs()) != 0 || ev.Depth() != 1 || ev.Type() != "m.room.create" {
				t.Fatalf("first event: %s prev %v depth %d", ev.Type(), ev.PrevEventIDs(), ev.Depth())
			}
		} else if !slices.Equal(ev.PrevEventIDs(), []string{prev.EventID()}) || ev.Depth() != prev.Depth()+1 {
			t.Fatalf("event %d: prev %v depth %d after %s at %d", i, ev.PrevEventIDs(), ev.Depth(), prev.EventID(), prev.Depth())
		}
		var wantAuth []string
		for _, tuple := range gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples() {
			if e := state[tuple]; e != nil {
				wantAuth = append(wantAuth, e.EventID())
			}
		}
		if !sameSet(ev.AuthEventIDs(), wantAuth) {
			t.Fatalf("event %d (%s): auth_events %v, the spec's selection %v", i, ev.Type(), ev.AuthEventIDs(), wantAuth)
		}
		var before []gomatrixserverlib.PDU
		for _, e := range state {
			before = append(before, e)
		}
		provider, err := gomatrixserverlib.NewAuthEvents(before)
		if err != nil {
			t.Fatal(err)
		}
		if err := gomatrixserverlib.Allowed(ev, provider, querier); err != nil {
			t.Fatalf("event %d (%s by %s): the auth rules refuse it: %v", i, ev.Type(), ev.SenderID(), err)
		}
		if ev.StateKey() != nil {
			state[gomatrixserverlib.StateKeyTuple{EventType: ev.Type(), StateKey: *ev.StateKey()}] = ev
		}
		prev = ev
	}
}

// A data directory written before room events were PDUs is refused at
// start with a message that says what to do; an empty one is marked and
// opens again.
func TestOlderDataDirectoryIsRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	h.Stop()
	var b, old storage.Batch // a key range each
	b.Delete(formatKey)
	old.Set(storage.Key("p", partitionName(0), "r", "!old:"+server, "meta"), []byte(`{"creator":"@a:`+server+`","version":"10"}`))
	for _, b := range []*storage.Batch{&b, &old} {
		if err := st.CommitSync(b); err != nil {
			t.Fatal(err)
		}
	}
	_, err := NewWith(st, config.Default(), nil, nil, Options{})
	if err != ErrOldFormat {
		t.Fatalf("an older data directory: %v, want ErrOldFormat", err)
	}
	b = storage.Batch{}
	b.Set(formatKey, []byte("pdu/99"))
	if err := st.CommitSync(&b); err != nil {
		t.Fatal(err)
	}
	if _, err := NewWith(st, config.Default(), nil, nil, Options{}); err == nil {
		t.Fatal("a layout from a newer persona was opened")
	}
	st.Close()
	h, st = newTestHost(t, t.TempDir(), time.Minute) // a new one is marked, and opens again
	h.Stop()
	if v, err := st.Get(formatKey); err != nil || string(v) != dataFormat {
		t.Fatalf("format of a new store: %q %v", v, err)
	}
	st.Close()
}
