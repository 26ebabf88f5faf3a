package api_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// syncOnce is one /sync with no filter.
func syncOnce(t *testing.T, cli *mautrix.Client, since string, timeoutMs int) *mautrix.RespSync {
	t.Helper()
	resp, err := cli.SyncRequest(context.Background(), timeoutMs, since, "", false, "")
	if err != nil {
		t.Fatalf("sync as %s since %q: %v", cli.UserID, since, err)
	}
	if !strings.HasPrefix(resp.NextBatch, "t") {
		t.Fatalf("next_batch = %q", resp.NextBatch)
	}
	return resp
}

// bodies are the message bodies of a timeline.
func bodies(evs []*event.Event) []string {
	var out []string
	for _, ev := range evs {
		if ev.Type == event.EventMessage {
			_ = ev.Content.ParseRaw(ev.Type)
			out = append(out, ev.Content.AsMessage().Body)
		}
	}
	return out
}

func TestSync(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob, carol := n.Register("alice"), n.Register("bob"), n.Register("carol")
	ctx := context.Background()
	room := createRoom(t, alice, bob)
	if _, err := bob.SendText(ctx, room, "hello"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
		t.Fatal(err)
	}

	first := syncOnce(t, alice, "", 0)
	joined := first.Rooms.Join[room]
	if joined == nil || !contains(bodies(joined.Timeline.Events), "hello") || *joined.Summary.JoinedMemberCount != 2 {
		t.Fatalf("initial sync room = %+v", joined)
	}
	if !hasPresence(first, alice.UserID, event.PresenceOnline) {
		t.Fatalf("initial sync presence = %+v", first.Presence.Events)
	}

	quiet := syncOnce(t, alice, first.NextBatch, 0)
	if len(quiet.Rooms.Join) != 0 || len(quiet.Presence.Events) != 0 {
		t.Fatalf("incremental sync with nothing new = %+v", quiet.Rooms.Join)
	}

	t.Run("timeline limit filter", func(t *testing.T) {
		resp, err := alice.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":1}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		tl := resp.Rooms.Join[room].Timeline
		if len(tl.Events) != 1 || !tl.Limited || tl.PrevBatch == "" {
			t.Fatalf("limited timeline = %+v", tl)
		}
	})

	t.Run("long poll wakes on an event", func(t *testing.T) {
		got := make(chan *mautrix.RespSync, 1)
		start := time.Now()
		go func() {
			resp, err := alice.SyncRequest(ctx, 10000, quiet.NextBatch, "", false, "")
			if err != nil {
				t.Error(err)
			}
			got <- resp
		}()
		time.Sleep(300 * time.Millisecond)
		if _, err := bob.SendText(ctx, room, "wake"); err != nil {
			t.Fatal(err)
		}
		resp := <-got
		if took := time.Since(start); took > 5*time.Second {
			t.Fatalf("long poll took %v", took)
		}
		if resp == nil || resp.Rooms.Join[room] == nil || fmt.Sprint(bodies(resp.Rooms.Join[room].Timeline.Events)) != "[wake]" {
			t.Fatalf("woken sync = %+v", resp)
		}
	})

	t.Run("long poll times out", func(t *testing.T) {
		now := syncOnce(t, alice, "", 0).NextBatch
		start := time.Now()
		resp := syncOnce(t, alice, now, 400)
		if took := time.Since(start); took < 350*time.Millisecond || len(resp.Rooms.Join) != 0 {
			t.Fatalf("timed-out sync after %v = %+v", took, resp.Rooms.Join)
		}
	})

	t.Run("invite then join", func(t *testing.T) {
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		invited := syncOnce(t, carol, "", 0)
		inv := invited.Rooms.Invite[room]
		if inv == nil || !hasState(inv.State.Events, event.StateMember, carol.UserID.String()) || !hasState(inv.State.Events, event.StateRoomName, "") ||
			!hasState(inv.State.Events, event.StateMember, alice.UserID.String()) { // the inviter's, to name them
			t.Fatalf("invite section = %+v", invited.Rooms.Invite)
		}
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		after := syncOnce(t, carol, invited.NextBatch, 0)
		j := after.Rooms.Join[room]
		if j == nil || len(after.Rooms.Invite) != 0 || !hasState(append(j.State.Events, j.Timeline.Events...), event.StateCreate, "") {
			t.Fatalf("sync after join = %+v", after.Rooms)
		}
	})

	t.Run("leave section", func(t *testing.T) {
		before := syncOnce(t, bob, "", 0)
		if _, err := bob.LeaveRoom(ctx, room); err != nil {
			t.Fatal(err)
		}
		after := syncOnce(t, bob, before.NextBatch, 0)
		left := after.Rooms.Leave[room]
		if left == nil || after.Rooms.Join[room] != nil || !hasMembership(left.Timeline.Events, bob.UserID, event.MembershipLeave) {
			t.Fatalf("sync after leave = %+v", after.Rooms)
		}
		// Events after the leave stay hidden.
		if _, err := alice.SendText(ctx, room, "after bob"); err != nil {
			t.Fatal(err)
		}
		later := syncOnce(t, bob, after.NextBatch, 0)
		if len(later.Rooms.Leave)+len(later.Rooms.Join) != 0 {
			t.Fatalf("sync after leaving = %+v", later.Rooms)
		}
	})
}

// TestSyncNoGapsNoRepeats syncs incrementally while messages are sent: every
// message arrives exactly once. It needs the room's sync to leave out events
// above upto even when they commit while the room reads.
func TestSyncNoGapsNoRepeats(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	room := createRoom(t, alice, bob)
	const total = 40
	since := syncOnce(t, alice, "", 0).NextBatch
	sendErr := make(chan error, 1)
	go func() {
		for i := range total {
			if _, err := bob.SendText(ctx, room, fmt.Sprint(i)); err != nil {
				sendErr <- err
				return
			}
		}
		sendErr <- nil
	}()
	seen := map[id.EventID]bool{}
	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < total && time.Now().Before(deadline) {
		resp, err := alice.SyncRequest(ctx, 2000, since, `{"room":{"timeline":{"limit":100}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		since = resp.NextBatch
		if j := resp.Rooms.Join[room]; j != nil {
			if j.Timeline.Limited {
				t.Fatalf("timeline limited although every sync follows the last")
			}
			for _, ev := range j.Timeline.Events {
				if seen[ev.ID] {
					t.Fatalf("event %s delivered twice", ev.ID)
				}
				seen[ev.ID] = true
			}
		}
	}
	if err := <-sendErr; err != nil {
		t.Fatal(err)
	}
	if len(seen) != total {
		t.Fatalf("saw %d of %d events", len(seen), total)
	}
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

func hasState(evs []*event.Event, typ event.Type, stateKey string) bool {
	for _, ev := range evs {
		if ev.Type == typ && ev.StateKey != nil && *ev.StateKey == stateKey {
			return true
		}
	}
	return false
}

func hasMembership(evs []*event.Event, user id.UserID, m event.Membership) bool {
	for _, ev := range evs {
		if ev.Type == event.StateMember && ev.GetStateKey() == user.String() {
			_ = ev.Content.ParseRaw(ev.Type)
			if ev.Content.AsMember().Membership == m {
				return true
			}
		}
	}
	return false
}

func hasPresence(resp *mautrix.RespSync, user id.UserID, p event.Presence) bool {
	for _, ev := range resp.Presence.Events {
		_ = ev.Content.ParseRaw(event.EphemeralEventPresence)
		if ev.Sender == user && ev.Content.AsPresence().Presence == p {
			return true
		}
	}
	return false
}

// TestSyncTimelineLimitZero: a filter's timeline.limit 0 asks for no
// timeline: the room comes with its state, limited, in joined and left rooms.
func TestSyncTimelineLimitZero(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	room := createRoom(t, alice, bob)
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	filter := `{"room":{"timeline":{"limit":0},"include_leave":true}}`
	for cli, section := range map[*mautrix.Client]string{alice: "join", bob: "leave"} {
		resp, err := cli.SyncRequest(ctx, 0, "", filter, false, "")
		if err != nil {
			t.Fatal(err)
		}
		var tl mautrix.SyncTimeline
		var state []*event.Event
		if section == "join" && resp.Rooms.Join[room] != nil {
			tl, state = resp.Rooms.Join[room].Timeline, resp.Rooms.Join[room].State.Events
		} else if section == "leave" && resp.Rooms.Leave[room] != nil {
			tl, state = resp.Rooms.Leave[room].Timeline, resp.Rooms.Leave[room].State.Events
		} else {
			t.Fatalf("%s: room not in %s: %+v", cli.UserID, section, resp.Rooms)
		}
		if len(tl.Events) != 0 || !tl.Limited || !hasState(state, event.StateCreate, "") || !hasState(state, event.StateMember, bob.UserID.String()) {
			t.Errorf("%s, %s: %d timeline events, limited %v, %d state events; want none, limited, the state with bob's member event", cli.UserID, section, len(tl.Events), tl.Limited, len(state))
		}
	}
}

// TestSyncAfterOwnMemberEvents: a user's member events that change no
// membership (a per-room name) do not hold back the user's syncs: the
// messages after them come in the next incremental sync.
func TestSyncAfterOwnMemberEvents(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	room := createRoom(t, alice, bob)
	since := syncOnce(t, alice, "", 0).NextBatch
	content := map[string]any{"membership": "join", "displayname": "Alice here"}
	if _, err := alice.SendStateEvent(ctx, room, event.StateMember, alice.UserID.String(), content); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := bob.SendText(ctx, room, fmt.Sprint("after ", i)); err != nil {
			t.Fatal(err)
		}
		resp := syncOnce(t, alice, since, 0)
		if j := resp.Rooms.Join[room]; j == nil || !contains(bodies(j.Timeline.Events), fmt.Sprint("after ", i)) {
			t.Fatalf("sync %d after a per-room name: %+v", i, resp.Rooms.Join)
		}
		since = resp.NextBatch
	}
}
