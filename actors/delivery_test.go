package actors

import (
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/wire"
)

// TestUpdatesAfterFoldsBeyondTheBacklog checks what a lagging room is sent:
// every later version in order within max_backlog, one snapshot beyond it
// (the last value of each key, the global value before the first), shared
// by rooms that lag alike and rebuilt when a version is added.
func TestUpdatesAfterFoldsBeyondTheBacklog(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Propagation.MaxBacklog = 2
	u := &user{h: &Service{cfg: cfg}}
	rename := func(v uint64, old, name string) *wire.MemberUpdate {
		return &wire.MemberUpdate{Version: v, SetsDisplayname: true, OldDisplayname: old, Displayname: name}
	}
	u.d.history = []*wire.MemberUpdate{rename(3, "a", "b"), rename(4, "b", "c"), rename(5, "c", "d"),
		{Version: 6, SetsAvatarUrl: true, OldAvatarUrl: "mxc://s/1", AvatarUrl: "mxc://s/2"}}

	ups, snap, skipped := u.updatesAfter(4)
	if snap || skipped != 0 || len(ups) != 2 || ups[0].Version != 5 || ups[1].Version != 6 {
		t.Fatalf("within the backlog: got %v snapshot=%v skipped=%d", ups, snap, skipped)
	}
	if ups, _, _ := u.updatesAfter(6); len(ups) != 0 {
		t.Fatalf("caught up: got %v", ups)
	}

	ups, snap, skipped = u.updatesAfter(2)
	if !snap || skipped != 3 || len(ups) != 1 {
		t.Fatalf("beyond the backlog: got %v snapshot=%v skipped=%d", ups, snap, skipped)
	}
	f := ups[0]
	if f.Version != 6 || f.OldDisplayname != "a" || f.Displayname != "d" || !f.SetsAvatarUrl || f.AvatarUrl != "mxc://s/2" || f.OldAvatarUrl != "mxc://s/1" {
		t.Fatalf("folded: %v", f)
	}
	if again, _, _ := u.updatesAfter(1); again[0] != f {
		t.Fatal("a room lagging alike got a fold of its own")
	}
	if from3, _, _ := u.updatesAfter(3); !from3[0].SetsDisplayname || from3[0].OldDisplayname != "b" {
		t.Fatalf("fold from version 4: %v", from3[0])
	}

	u.d.history = append(u.d.history, rename(7, "d", "e"))
	ups, _, skipped = u.updatesAfter(2)
	if ups[0].Version != 7 || ups[0].Displayname != "e" || ups[0].OldDisplayname != "a" || skipped != 4 {
		t.Fatalf("after a new version: %v skipped=%d", ups[0], skipped)
	}
}

// A room whose acks were lost applied versions its user's cursor does not
// show, and the user's resend from that cursor folds them with later ones
// (beyond max_backlog). The fold's old values are the global ones before
// the cursor, not the room's: a propagate_to=unchanged fold judged against
// them left the room at an older name while its ack said it had the last.
// The room must end with the last name.
func TestFoldFromALaggingCursorReachesTheRoom(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Propagation.MaxBacklog = 2
	cfg.Propagation.ResendAfter = 100 * time.Millisecond
	h, st := newHostWith(t, t.TempDir(), cfg)
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	var lose atomic.Bool // the room's acks, while set
	lose.Store(true)
	h.rt.SetNetwork(func(kind, id string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.UpdateAcks); ok && lose.Load() {
			return
		}
		deliver()
	})
	setName(t, h, alice, "A1", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "A1 in the room", func() bool { return memberName(t, h, room, alice) == "A1" })
	setName(t, h, alice, "A2", wire.Propagate_PROPAGATE_DEFAULT)
	setName(t, h, alice, "A3", wire.Propagate_PROPAGATE_UNCHANGED)
	time.Sleep(3 * cfg.Propagation.ResendAfter) // resends from the cursor before A1, their acks lost too
	lose.Store(false)
	waitPropagated(t, h, alice)
	if name := memberName(t, h, room, alice); name != "A3" {
		t.Fatalf("the room has %q once every version is acknowledged, want A3", name)
	}
}
