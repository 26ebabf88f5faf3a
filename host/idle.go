package host

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// IdleTimeout tells an actor that the duration it last gave its IdleWatch
// passed without a message reaching it. The watch is then disarmed until
// the actor sets it again.
type IdleTimeout struct{}

// IdleWatch tells one actor when it has been idle: the host makes one per
// activation and hands it to the Kind's New. It stands in for protoactor's
// receive timeout, whose timer goroutine writes the actor's context while
// the actor reads it.
//
// The watch is a receiver middleware of its actor, so its state is read and
// written on the actor's turn only. Its timer posts an idleTick through the
// actor system's root, which any goroutine may use; the tick is handled on
// the actor's turn, where the watch compares the time since the last
// message with the duration set, and either arms itself for the rest or
// gives the actor IdleTimeout. The actor never sees the tick.
type IdleWatch struct {
	root  *actor.RootContext
	self  *actor.PID
	d     time.Duration // 0: disarmed
	gen   uint64        // the tick of the current arming carries it
	timer *time.Timer
	last  time.Duration // when the idle time being watched began, as sinceStart
}

// start is when the process started: a watch keeps the time of the last
// message as the monotonic time since then, in 8 bytes rather than a
// time.Time's 24, for every idle actor in memory.
var start = time.Now()

// sinceStart returns the monotonic time since start.
func sinceStart() time.Duration { return time.Since(start) }

// idleTick is posted by the watch's timer; gen tells a tick of an earlier
// arming, which the watch ignores.
type idleTick struct{ gen uint64 }

func newIdleWatch(root *actor.RootContext) *IdleWatch { return &IdleWatch{root: root} }

// Set arms the watch: the actor gets IdleTimeout once d passes without a
// message reaching it, measured from the end of the message it handles now.
// It replaces any duration set before. Set may be called from the actor's
// Receive only; d must be positive.
func (w *IdleWatch) Set(d time.Duration) {
	if d <= 0 {
		panic("host: IdleWatch.Set with a duration <= 0")
	}
	w.disarm()
	w.d, w.last = d, sinceStart()
	gen, root, self := w.gen, w.root, w.self
	w.timer = time.AfterFunc(d, func() { root.Send(self, &idleTick{gen: gen}) })
}

// disarm stops the timer; a tick already posted is ignored.
func (w *IdleWatch) disarm() {
	if w.timer != nil {
		w.timer.Stop()
		w.timer = nil
	}
	w.gen++
	w.d = 0
}

// receive is the actor's receiver middleware: it notes when each message
// was handled, handles the watch's ticks and disarms the watch when the
// actor stops or restarts.
func (w *IdleWatch) receive(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		switch m := env.Message.(type) {
		case *idleTick:
			w.tick(c, next, m)
			return
		case *actor.Started:
			w.self = c.Self()
		case *actor.Stopping, *actor.Stopped, *actor.Restarting:
			w.disarm()
		}
		next(c, env)
		w.last = sinceStart()
	}
}

// tick gives the actor IdleTimeout if the watch's duration has passed since
// the last message, or arms the timer again for the rest of it.
func (w *IdleWatch) tick(c actor.ReceiverContext, next actor.ReceiverFunc, m *idleTick) {
	if m.gen != w.gen || w.d == 0 {
		return
	}
	if rest := w.d - (sinceStart() - w.last); rest > 0 {
		w.timer.Reset(rest)
		return
	}
	w.disarm()
	next(c, actor.WrapEnvelope(&IdleTimeout{}))
}
