package actors

import (
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/wire"
)

// TestMovedPartitionGetsItsUpdateAgain: a profile update lost on its way to
// a room (as one in flight when the room's partition changes owners is) is
// sent again as soon as the host says that partition moved, long before
// resend_after; a move of another partition resends nothing.
func TestMovedPartitionGetsItsUpdateAgain(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Propagation.ResendAfter = time.Hour // the timer alone would not resend within the test
	h, st := newHostWith(t, t.TempDir(), cfg)
	t.Cleanup(func() { h.Stop(); st.Close() })
	var lose atomic.Bool
	var lost atomic.Int32
	h.rt.SetNetwork(func(_, _ string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.ProfileUpdates); ok && lose.Load() {
			lost.Add(1)
			return
		}
		deliver()
	})
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 0)
	eventually(t, "the room in alice's list", func() bool {
		return len(ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms) == 1
	})
	lose.Store(true)
	setName(t, h, alice, "A-001", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "the update lost", func() bool { return lost.Load() == 1 })
	lose.Store(false)

	p := h.Partition(room)
	h.rt.PlacementChanged([]int{(p + 1) % h.rt.Partitions()})
	time.Sleep(100 * time.Millisecond)
	if v := metricValue(t, h, "persona_delivery_retries_total"); v != 0 {
		t.Fatalf("a move of another partition resent %v updates", v)
	}
	h.rt.PlacementChanged([]int{p})
	eventually(t, "A-001 in the room", func() bool { return memberName(t, h, room, alice) == "A-001" })
	if v := metricValue(t, h, "persona_delivery_retries_total"); v != 1 {
		t.Fatalf("persona_delivery_retries_total = %v, want 1", v)
	}
}
