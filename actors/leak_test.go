package actors

import (
	"testing"

	"go.uber.org/goleak"

	"persona/config"
	"persona/wire"
)

// A stopped service and a closed store leave no goroutine behind, after
// registrations, a room and a rename's fan-out.
func TestStopLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent())
	h, st := newHostWith(t, t.TempDir(), config.Default())
	alice := registerUser(t, h, "alice")
	createRoom(t, h, alice, 2)
	setName(t, h, alice, "Alice", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "the rename to reach the rooms", func() bool {
		return ask[*wire.PendingReply](t, h, alice, &wire.GetPending{UserId: alice}).Behind == 0
	})
	h.Stop()
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
}
