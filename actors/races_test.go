package actors

// Races between a client's requests and a fan-out in progress.

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/storage"
	"persona/wire"
)

// The committer answers a write before the user's actor has handled the
// news that it is durable; the news goes first in the actor's mailbox, so
// a read sent after the answer sees the write, even while the actor is
// busy with its own fan-out's acks.
func TestReadAfterAnswerSeesTheWriteDuringAFanOut(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	alice := registerUser(t, h, "alice")
	for i := range 200 {
		createRoom(t, h, alice, i)
	}
	eventually(t, "room list", func() bool {
		return len(ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms) == 200
	})
	for i := range 100 {
		name := fmt.Sprint("A", i)
		setName(t, h, alice, name, wire.Propagate_PROPAGATE_DEFAULT)
		prof, v := profileOf(t, h, alice)
		if want := fmt.Sprintf(`{"displayname":%q}`, name); string(prof) != want || v != uint64(i+2) {
			t.Fatalf("read after write %d: %s v%d, want %s v%d", i, prof, v, want, i+2)
		}
	}
	waitPropagated(t, h, alice)
}

// A join carries the profile the server read before it asked the room. A
// rename that lands in between, and finishes its fan-out before the user's
// actor hears of the join, must still reach the joined room.
func TestJoinWithAnOlderProfileGetsTheNewer(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	createRoom(t, h, alice, 0)
	room := createRoom(t, h, bob, 1)
	old, v := profileOf(t, h, alice) // read for the join
	setName(t, h, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h, alice)
	r, err := h.Request(context.Background(), KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v})
	if err != nil || r.(*wire.SendReply).Error != nil {
		t.Fatalf("join: %v %v", err, r)
	}
	eventually(t, "the rename in the room joined with the older profile", func() bool {
		return memberName(t, h, room, alice) == "Alice 2"
	})
	// A join gets the profile current when it lands, as one that read it
	// then would have, even after a change kept out of the user's rooms.
	setName(t, h, alice, "Alice 3", wire.Propagate_PROPAGATE_NONE)
	other := createRoom(t, h, bob, 2)
	if r, err := h.Request(context.Background(), KindRoom, other, &wire.ChangeMembership{RoomId: other, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v}); err != nil || r.(*wire.SendReply).Error != nil {
		t.Fatalf("join: %v %v", err, r)
	}
	eventually(t, "the current profile in the second room", func() bool {
		return memberName(t, h, other, alice) == "Alice 3"
	})
	if n := memberName(t, h, room, alice); n != "Alice 2" {
		t.Fatalf("the change kept out of rooms reached the first room: %q", n)
	}
}

// A join whose own content sets a displayname keeps it: the room records it
// as the user's own, so neither the current profile sent with the ack of a
// join that raced a rename, nor a later rename, replaces it.
func TestJoinWithItsOwnNameKeepsIt(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	room := createRoom(t, h, bob, 1)
	old, v := profileOf(t, h, alice) // read for the join
	setName(t, h, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	r, err := h.Request(context.Background(), KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join",
		ProfileJson: old, ProfileVersion: v, ContentJson: []byte(`{"displayname":"Al here"}`)})
	if err != nil || r.(*wire.SendReply).Error != nil {
		t.Fatalf("join: %v %v", err, r)
	}
	setName(t, h, alice, "Alice 3", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h, alice)
	if n := memberName(t, h, room, alice); n != "Al here" {
		t.Fatalf("the join's own displayname became %q", n)
	}
	setName(t, h, alice, "Alice 4", wire.Propagate_PROPAGATE_ALL)
	eventually(t, "propagate_to=all replacing the room's own name", func() bool {
		return memberName(t, h, room, alice) == "Alice 4"
	})
}

// A join's snapshot is owed until the room acknowledges it: after a stop
// right after the join, or a few milliseconds later, the room ends with the
// profile the join should have carried, and a propagate_to=unchanged rename
// after the restarts finds that profile there. (A stop is orderly: the
// window between the cursor's commit and the snapshot's delivery that a
// crash could hit is not reproduced here.)
func TestJoinSnapshotSurvivesARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	createRoom(t, h, alice, 0)
	var rooms []string
	for i := range 5 {
		rooms = append(rooms, createRoom(t, h, bob, i+1))
	}
	old, v := profileOf(t, h, alice) // read for the joins
	setName(t, h, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h, alice)
	for i, room := range rooms {
		if r, err := h.Request(context.Background(), KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v}); err != nil || r.(*wire.SendReply).Error != nil {
			t.Fatalf("join: %v %v", err, r)
		}
		if i%2 == 0 { // at once, or after a moment: the snapshot on its way
			time.Sleep(time.Duration(i) * time.Millisecond)
		}
		h.Stop()
		st.Close()
		h, st = newTestHost(t, dir, time.Minute)
	}
	t.Cleanup(func() { h.Stop(); st.Close() })
	for _, room := range rooms {
		eventually(t, "the snapshot in "+room, func() bool { return memberName(t, h, room, alice) == "Alice 2" })
	}
	setName(t, h, alice, "Alice 3", wire.Propagate_PROPAGATE_UNCHANGED)
	for _, room := range rooms {
		eventually(t, "the unchanged rename in "+room, func() bool { return memberName(t, h, room, alice) == "Alice 3" })
	}
}

// TestRenameAppliedOnceAcrossARestart: a rename's version is stored with
// its member event's index entry, not the member record, so after a
// restart the room must still know it applied it: the same version sent
// again changes nothing.
func TestRenameAppliedOnceAcrossARestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	setName(t, h, alice, "A-001", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h, alice)
	_, v := profileOf(t, h, alice)
	h.Stop()
	st.Close()
	h, st = newTestHost(t, dir, time.Minute)
	t.Cleanup(func() { h.Stop(); st.Close() })
	h.Send(KindRoom, room, &wire.ProfileUpdates{RoomId: room, UserId: alice, Updates: []*wire.MemberUpdate{
		{Version: v, Mode: wire.Propagate_PROPAGATE_DEFAULT, SetsDisplayname: true, OldDisplayname: "alice", Displayname: "applied twice"},
	}})
	setName(t, h, alice, "A-002", wire.Propagate_PROPAGATE_DEFAULT) // after the resend, in the same room's mailbox order
	eventually(t, "A-002", func() bool { return memberName(t, h, room, alice) == "A-002" })
	checkMemberHistory(t, h, room, alice, alice, 1, "join")
	r := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: alice, Dir: "b", Limit: 100})
	for _, raw := range r.Chunk {
		if strings.Contains(string(raw), "applied twice") {
			t.Fatalf("the version was applied again after the restart: %s", raw)
		}
	}
}

// TestJoinSnapshotSurvivesALostDeliveryAndACrash lands a crash exactly
// between the durable cursor that owes a join its snapshot and the
// snapshot's arrival: the delivery is lost on the way, the node stops with
// nothing else in flight, and after the restart the cursor alone must
// bring the room the newer name, before any later version.
func TestJoinSnapshotSurvivesALostDeliveryAndACrash(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	room := createRoom(t, h, bob, 1)
	var mu sync.Mutex
	lost := 0
	drop := func(kind, id string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.ProfileUpdates); ok && id == room {
			mu.Lock()
			lost++
			mu.Unlock()
			return
		}
		deliver()
	}
	h.rt.SetNetwork(drop)
	old, v := profileOf(t, h, alice) // read for the join
	setName(t, h, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v}); r.Error != nil {
		t.Fatal(r.Error)
	}
	eventually(t, "the snapshot sent and lost", func() bool { mu.Lock(); defer mu.Unlock(); return lost > 0 })
	if name := memberName(t, h, room, alice); name != "alice" {
		t.Fatalf("the room has %q before the snapshot arrived", name)
	}
	h.Stop()
	st.Close()
	h, st = newTestHost(t, dir, time.Minute)
	t.Cleanup(func() { h.Stop(); st.Close() })
	eventually(t, "the snapshot after the restart", func() bool { return memberName(t, h, room, alice) == "Alice 2" })
	setName(t, h, alice, "Alice 3", wire.Propagate_PROPAGATE_UNCHANGED)
	eventually(t, "the unchanged rename", func() bool { return memberName(t, h, room, alice) == "Alice 3" })
}

// TestFirstJoinRacingRenamesGetsEachVersion: a join that carries a profile
// older than renames still in the user's history (another room has not
// acknowledged them yet) gets those renames in order, each recorded, not
// the latest alone.
func TestFirstJoinRacingRenamesGetsEachVersion(t *testing.T) {
	t.Parallel()
	h, room, alice, bob := firstJoinRacing(t, wire.Propagate_PROPAGATE_DEFAULT, false)
	if names, want := memberNames(t, h, room, bob, alice), []string{"alice", "A-001", "A-002"}; !slices.Equal(names, want) {
		t.Fatalf("alice's member events in the joined room: %v, want %v", names, want)
	}
	checkJoinSnapshots(t, h, 0, 0)
}

// TestJoinAfterAnInviteRacingRenamesGetsEachVersion: an invite applies no
// version, so the join that follows is a first join too: it gets each
// version in order, not the latest profile alone as a rejoin does.
func TestJoinAfterAnInviteRacingRenamesGetsEachVersion(t *testing.T) {
	t.Parallel()
	h, room, alice, bob := firstJoinRacing(t, wire.Propagate_PROPAGATE_DEFAULT, true)
	// The invite here carries no profile (the API's invites do).
	if names, want := memberNames(t, h, room, bob, alice), []string{"<nil>", "alice", "A-001", "A-002"}; !slices.Equal(names, want) {
		t.Fatalf("alice's member events in the joined room (invite, join, renames): %v, want %v", names, want)
	}
	checkJoinSnapshots(t, h, 0, 0)
}

// A first join racing a rename still in the history and then a change
// kept out of rooms gets the profile current when its notice lands, as
// TestJoinWithAnOlderProfileGetsTheNewer's joins do: the join may have
// come after both, and would then have carried the change.
func TestFirstJoinRacingAChangeKeptOutOfRoomsGetsTheCurrentProfile(t *testing.T) {
	t.Parallel()
	h, room, alice, _ := firstJoinRacing(t, wire.Propagate_PROPAGATE_NONE, false)
	if got := memberName(t, h, room, alice); got != "A-002" {
		t.Fatalf("the joined room ends with %q", got)
	}
	checkJoinSnapshots(t, h, 1, 0)
}

// checkJoinSnapshots checks the counts of joins sent the current profile
// alone because of a mode, and because the versions were unknown.
func checkJoinSnapshots(t *testing.T, h *Service, mode, unknown float64) {
	t.Helper()
	for reason, want := range map[string]float64{"mode": mode, "unknown": unknown} {
		name := `persona_join_snapshots_total{reason="` + reason + `"}`
		if got := metricValue(t, h, name); got != want {
			t.Errorf("%s = %g, want %g", name, got, want)
		}
	}
}

// firstJoinRacing makes alice join bob's room (invited first, if invite)
// with a profile read before two writes, "A-001" in the default mode and
// "A-002" in mode second, while rooms' acks are lost: the writes stay in
// alice's history. It returns once the room shows "A-002" and every room
// has caught up.
func firstJoinRacing(t *testing.T, second wire.Propagate, invite bool) (h *Service, room, alice, bob string) {
	t.Helper()
	cfg := config.Default()
	cfg.Propagation.ResendAfter = 50 * time.Millisecond
	h, st := newHostWith(t, t.TempDir(), cfg)
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice, bob = registerUser(t, h, "alice"), registerUser(t, h, "bob")
	createRoom(t, h, alice, 0)
	room = createRoom(t, h, bob, 1)
	var hold atomic.Bool
	network := func(kind, id string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.UpdateAcks); ok && hold.Load() {
			return
		}
		deliver()
	}
	h.rt.SetNetwork(network)
	hold.Store(true)
	if invite {
		if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: bob, Target: alice, Action: "invite"}); r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	old, v := profileOf(t, h, alice) // read for the join
	setName(t, h, alice, "A-001", wire.Propagate_PROPAGATE_DEFAULT)
	setName(t, h, alice, "A-002", second)
	if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v}); r.Error != nil {
		t.Fatal(r.Error)
	}
	eventually(t, "A-002 in the joined room", func() bool { return memberName(t, h, room, alice) == "A-002" })
	hold.Store(false)
	waitPropagated(t, h, alice)
	return h, room, alice, bob
}

// TestLateJoinNoticeGetsEachVersion: a room's notice of a first join is
// lost until the renames made meanwhile have reached every other room and
// left the user's history. When the notice comes again, the room still
// gets each version after the one its join event carried, in order: the
// user's actor keeps the last max_backlog versions that left the history.
// Beyond max_backlog it gets the latest alone.
func TestLateJoinNoticeGetsEachVersion(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		backlog  int
		restart  bool // the node restarts before the notice comes again
		want     []string
		snapshot float64 // joins sent the current profile alone, the versions unknown
	}{
		{64, false, []string{"alice", "A-001", "A-002", "A-003"}, 0},
		{2, false, []string{"alice", "A-003"}, 1},
		{64, true, []string{"alice", "A-001", "A-002", "A-003"}, 0},
	} {
		t.Run(fmt.Sprintf("max_backlog %d restart %v", tc.backlog, tc.restart), func(t *testing.T) {
			t.Parallel()
			cfg := config.Default()
			cfg.Propagation.ResendAfter = 50 * time.Millisecond
			cfg.Propagation.MaxBacklog = tc.backlog
			dir := t.TempDir()
			h, st := newHostWith(t, dir, cfg)
			t.Cleanup(func() { h.Stop(); st.Close() })
			alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
			own := createRoom(t, h, alice, 0)
			room := createRoom(t, h, bob, 1)
			var hold atomic.Bool // the room's notices of alice's join are lost
			network := func(kind, id string, msg proto.Message, deliver func()) {
				if m, ok := msg.(*wire.MembershipChanged); ok && m.RoomId == room && hold.Load() {
					return
				}
				deliver()
			}
			h.rt.SetNetwork(network)
			hold.Store(true)
			old, v := profileOf(t, h, alice) // read for the join
			if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: "join", ProfileJson: old, ProfileVersion: v}); r.Error != nil {
				t.Fatal(r.Error)
			}
			for _, name := range []string{"A-001", "A-002", "A-003"} {
				setName(t, h, alice, name, wire.Propagate_PROPAGATE_DEFAULT)
			}
			eventually(t, "A-003 in alice's own room", func() bool { return memberName(t, h, own, alice) == "A-003" })
			waitPropagated(t, h, alice)
			if got := memberName(t, h, room, alice); got != "alice" {
				t.Fatalf("the room whose notice is lost shows %q", got)
			}
			if tc.restart { // the versions kept for a late join are durable
				h.Stop()
				st.Close()
				h, st = newHostWith(t, dir, cfg)
			}
			hold.Store(false)
			eventually(t, "A-003 in the joined room", func() bool { return memberName(t, h, room, alice) == "A-003" })
			waitPropagated(t, h, alice)
			if names := memberNames(t, h, room, bob, alice); !slices.Equal(names, tc.want) {
				t.Fatalf("alice's member events in the joined room: %v, want %v", names, tc.want)
			}
			checkJoinSnapshots(t, h, 0, tc.snapshot)
		})
	}
}

// memberNames lists the displaynames of user's member events in room's
// timeline (its first page), oldest first, as reader sees them.
func memberNames(t *testing.T, h *Service, room, reader, user string) []string {
	t.Helper()
	r := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: reader, Dir: "f", Limit: 100})
	var names []string
	for _, raw := range r.Chunk {
		var ev struct {
			Type     string         `json:"type"`
			StateKey string         `json:"state_key"`
			Content  map[string]any `json:"content"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.Type == "m.room.member" && ev.StateKey == user {
			names = append(names, fmt.Sprint(ev.Content["displayname"]))
		}
	}
	return names
}

// TestKeptVersionsStayWithinTheBacklog: storage keeps the last max_backlog
// versions that left the history, and drops the older ones, also when
// max_backlog is lowered across a restart.
func TestKeptVersionsStayWithinTheBacklog(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Propagation.MaxBacklog = 3
	dir := t.TempDir()
	h, st := newHostWith(t, dir, cfg)
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice := registerUser(t, h, "alice")
	createRoom(t, h, alice, 0)
	kept := func() []string {
		var names []string
		prefix := storage.Key("p", partitionName(h.Partition(alice)), "u", alice, "kept")
		if err := st.Scan(storage.Prefix(string(prefix)), nil, func(_, v []byte) error {
			var upd wire.MemberUpdate
			if err := proto.Unmarshal(v, &upd); err != nil {
				return err
			}
			names = append(names, upd.Displayname)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return names
	}
	rename := func(names ...string) {
		for _, name := range names {
			setName(t, h, alice, name, wire.Propagate_PROPAGATE_DEFAULT)
			waitPropagated(t, h, alice)
		}
	}
	rename("A-001", "A-002", "A-003", "A-004", "A-005")
	eventually(t, "the last three versions kept", func() bool { return slices.Equal(kept(), []string{"A-003", "A-004", "A-005"}) })
	h.Stop()
	st.Close()
	cfg.Propagation.MaxBacklog = 1
	h, st = newHostWith(t, dir, cfg)
	rename("A-006")
	eventually(t, "the last version kept", func() bool { return slices.Equal(kept(), []string{"A-006"}) })
}
