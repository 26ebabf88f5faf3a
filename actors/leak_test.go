package actors

import (
	"testing"

	"go.uber.org/goleak"

	"persona/config"
	"persona/wire"
)

// A stopped service and a closed store leave no goroutine behind, after
// registrations, a room and a rename's fan-out. protoactor's dead-letter
// throttle is the one exception: a message that meets a stopping actor
// starts a goroutine that ends by itself after the throttle interval (1 s),
// which can outlast goleak's retries.
func TestStopLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
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
