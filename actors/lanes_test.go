package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// The user's actor writes in two lanes of the store's committer: profile
// writes (a client waits) in the urgent one, which goes first, the rest in
// the background one. These tests queue batches of both lanes behind a
// held round and check that what lands last is what should.

// TestAFlushKeepsAVersionRestoredMeanwhile: a version leaves the history
// while a flush is under way, so its deletion waits for the next flush; a
// late join puts it back into the history (its own batch writes it back)
// before that flush. The flush must not delete it: the join's room lacks
// it, and after a crash the version would be lost for that room.
func TestAFlushKeepsAVersionRestoredMeanwhile(t *testing.T) {
	t.Parallel()
	h, st := newHostWith(t, t.TempDir(), config.Default())
	t.Cleanup(func() { h.Stop(); st.Close() })
	u := &user{h: h, id: "@ghost:" + server} // no actor of its own: the batch alone
	v := &wire.MemberUpdate{Version: 5, SetsDisplayname: true, Displayname: "A-005"}
	raw, _ := proto.Marshal(v)
	var restored storage.Batch // what onMembership wrote when it restored v
	restored.Set(u.key("hist", storage.Uint64(5)), raw)
	restored.Set(u.wakeKey(), nil)
	if err := st.CommitSync(&restored); err != nil {
		t.Fatal(err)
	}
	u.d = deliveries{history: []*wire.MemberUpdate{v}, marked: true, dirty: map[string]bool{
		"\x00hist" + storage.Uint64(5): true, // from the round that ended before the restore
		"\x00kept" + storage.Uint64(5): true,
		"\x00wake":                     true,
	}}
	b, unmark := u.flushBatch()
	if unmark {
		t.Error("the wake mark goes with a version back in the history")
	}
	if err := st.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	for _, k := range [][]byte{u.key("hist", storage.Uint64(5)), u.wakeKey()} {
		if _, err := st.Get(k); err != nil {
			t.Errorf("%q after the flush: %v", k, err)
		}
	}
	if _, err := st.Get(u.key("kept", storage.Uint64(5))); err == nil {
		t.Error("the restored version is still kept")
	}
}

// TestWakeMarkOutlivesTheEndOfTheRoundBefore: a round of propagation ends
// by deleting the user's wake mark, and the next profile write sets it
// again, in the urgent lane, which goes before batches queued earlier in
// the background lane. The mark must be there once both are written, or a
// restart would not resume the write's fan-out: the round's deletion does
// not land after the write's mark.
func TestWakeMarkOutlivesTheEndOfTheRoundBefore(t *testing.T) {
	r := newWakeRace(t)
	r.holdCommitter()
	r.endRound() // its batch waits
	done := r.rename(r.alice, "A-002")
	time.Sleep(100 * time.Millisecond) // alice's write reaches the committer
	r.finish(done)
}

// TestWakeMarkOutlivesARoundEndingDuringAWrite: the round ends while the
// next profile write is on its way to disk, so the end's deletion of the
// wake mark comes after the write's mark; the mark is there once both are
// written.
func TestWakeMarkOutlivesARoundEndingDuringAWrite(t *testing.T) {
	r := newWakeRace(t)
	r.holdCommitter()
	done := r.rename(r.alice, "A-002")
	time.Sleep(100 * time.Millisecond) // alice's write reaches the committer
	r.endRound()
	r.finish(done)
}

// wakeRace is alice in one room with a rename, A-001, applied there but
// not acknowledged yet, on a store whose committer can be held on a round.
// The tests built on it are not parallel: their sleeps let writes reach
// the held committer, which a loaded machine does not promise.
type wakeRace struct {
	t                *testing.T
	h                *Service
	st               *storage.Store
	alice, bob, room string
	v1               uint64 // A-001's version
	gate, dropAcks   atomic.Bool
	dropNotices      atomic.Bool // the rooms' membership notices are lost
	hit, release     chan struct{}
	heldBy           chan error
}

func newWakeRace(t *testing.T) *wakeRace {
	r := &wakeRace{t: t, hit: make(chan struct{}), release: make(chan struct{})}
	var err error
	r.st, err = storage.Open(t.TempDir(), storage.Options{OnRound: func(int, int, time.Duration, time.Duration) {
		if r.gate.CompareAndSwap(true, false) { // hold one round: batches queue behind it
			r.hit <- struct{}{}
			<-r.release
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = server
	cfg.Propagation.ResendAfter = 50 * time.Millisecond
	if r.h, err = New(r.st, cfg, metrics.New(r.st), nil); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.h.Stop(); r.st.Close() })
	r.alice, r.bob = registerUser(t, r.h, "alice"), registerUser(t, r.h, "bob")
	r.room = createRoom(t, r.h, r.alice, 0)
	network := func(kind, id string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.UpdateAcks); ok && r.dropAcks.Load() {
			return
		}
		if _, ok := msg.(*wire.MembershipChanged); ok && r.dropNotices.Load() {
			return
		}
		deliver()
	}
	r.h.rt.SetNetwork(network)
	r.dropAcks.Store(true) // A-001's ack is lost: alice's actor will send it again
	setName(t, r.h, r.alice, "A-001", wire.Propagate_PROPAGATE_DEFAULT)
	_, r.v1 = profileOf(t, r.h, r.alice)
	eventually(t, "A-001 in the room", func() bool { return memberName(t, r.h, r.room, r.alice) == "A-001" })
	return r
}

// rename sets user's displayname without waiting for it; the channel
// gets the request's error or the write's.
func (r *wakeRace) rename(user, name string) chan error {
	done := make(chan error, 1)
	go func() {
		v, _ := json.Marshal(name)
		reply, err := r.h.Request(context.Background(), KindUser, user, &wire.SetProfileField{UserId: user, Key: "displayname", ValueJson: v})
		if w, ok := reply.(*wire.WriteReply); ok && w.GetError() != nil {
			err = fmt.Errorf("rename %s to %s: %v", user, name, w.GetError())
		}
		done <- err
	}()
	return done
}

// holdCommitter holds the committer on a round of bob's.
func (r *wakeRace) holdCommitter() {
	r.gate.Store(true)
	r.heldBy = r.rename(r.bob, "B-001")
	<-r.hit
}

// endRound lets A-001's resend be acknowledged (a duplicate: no commit),
// which ends the round; acks are lost again afterwards, so that A-002's
// round does not end.
func (r *wakeRace) endRound() {
	r.dropAcks.Store(false)
	waitPropagated(r.t, r.h, r.alice)
	r.dropAcks.Store(true)
}

// finish releases the committer and checks that, with A-002 in the
// history, the wake mark is there.
func (r *wakeRace) finish(alice chan error) {
	t := r.t
	close(r.release)
	for _, done := range []chan error{r.heldBy, alice} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	u := &user{h: r.h, id: r.alice}
	eventually(t, "A-001 out of alice's history", func() bool {
		_, err := r.st.Get(u.key("hist", storage.Uint64(r.v1)))
		return err != nil
	})
	eventually(t, "A-002 in alice's history", func() bool {
		_, err := r.st.Get(u.key("hist", storage.Uint64(r.v1+1)))
		return err == nil
	})
	if _, err := r.st.Get(u.wakeKey()); err != nil {
		t.Fatalf("alice's wake mark with A-002's fan-out unfinished: %v", err)
	}
}

// TestAFlushKeepsTheWakeMarkOfASnapshotOwedMeanwhile: a round ends while a
// flush is under way, so the wake mark's deletion waits for the next
// flush; a join owed a snapshot sets the mark again before it (the history
// stays empty). The flush must leave the mark: a restart resends the
// snapshot only if it is there.
func TestAFlushKeepsTheWakeMarkOfASnapshotOwedMeanwhile(t *testing.T) {
	t.Parallel()
	h, st := newHostWith(t, t.TempDir(), config.Default())
	t.Cleanup(func() { h.Stop(); st.Close() })
	u := &user{h: h, id: "@ghost:" + server}
	u.d = deliveries{marked: true, dirty: map[string]bool{"\x00wake": true}} // marked by onMembership
	if _, unmark := u.flushBatch(); unmark {
		t.Fatal("the flush deletes the wake mark of a snapshot owed")
	}
	u.d.marked = false // the snapshot's round ended
	if _, unmark := u.flushBatch(); !unmark {
		t.Fatal("the flush keeps the wake mark once nothing is owed")
	}
}

// TestForgetLandsAfterTheLeave: the user's actor writes a room's cursor
// when the room's notice of a leave comes, and again when the user forgets
// the room. With both writes queued, the forget must land last (it goes in
// no lane ahead of the leave's), or the stored cursor is not forgotten and
// the room comes back to initial syncs after a restart.
func TestForgetLandsAfterTheLeave(t *testing.T) {
	r := newWakeRace(t)
	r.dropNotices.Store(true) // the leave's notice comes later, while the committer is held
	if rep := askKind[*wire.SendReply](t, r.h, KindRoom, r.room, &wire.ChangeMembership{RoomId: r.room, Sender: r.alice, Target: r.alice, Action: "leave"}); rep.Error != nil {
		t.Fatal(rep.Error)
	}
	r.holdCommitter()
	r.dropNotices.Store(false) // the room sends the notice again: alice's actor writes the cursor
	eventually(t, "alice's actor hears of the leave", func() bool {
		for _, m := range ask[*wire.RoomsReply](t, r.h, r.alice, &wire.GetRooms{UserId: r.alice}).Rooms {
			if m.RoomId == r.room {
				return m.Membership == "leave"
			}
		}
		return false
	})
	forgot := make(chan error, 1)
	go func() {
		_, err := r.h.Request(context.Background(), KindUser, r.alice, &wire.ForgetRoom{UserId: r.alice, RoomId: r.room})
		forgot <- err
	}()
	time.Sleep(100 * time.Millisecond) // the forget reaches the committer
	close(r.release)
	for _, done := range []chan error{r.heldBy, forgot} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond) // the leave's write too, whichever lane it is in
	u := &user{h: r.h, id: r.alice}
	raw, err := r.st.Get(u.key("room", r.room))
	if err != nil {
		t.Fatal(err)
	}
	var c roomCursor
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatal(err)
	}
	if c.Membership != "leave" || !c.Forgotten {
		t.Fatalf("alice's stored cursor for the room: %+v, want left and forgotten", c)
	}
}
