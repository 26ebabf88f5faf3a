package host

import (
	"context"
	"errors"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/wire"
)

// handoff is an actor's receiver middleware for the move of its partition
// to another node. Once moved, the requests still queued in the actor's
// mailbox are answered with a wire.Reroute instead of reaching the actor
// (its state may fall behind the new owner's), so that their requesters
// send them again to the owner; other messages from outside are dropped,
// as a move loses them (the delivery rule's resend covers them). The
// host's own messages (a write landing, a timer, the actor's lifecycle)
// still reach the actor until it stops, so that it answers the writes it
// has under way.
type handoff struct {
	moved atomic.Bool
	root  *actor.RootContext
}

func (h *handoff) receive(next actor.ReceiverFunc) actor.ReceiverFunc {
	return func(c actor.ReceiverContext, env *actor.MessageEnvelope) {
		if h.moved.Load() {
			switch env.Message.(type) {
			case *actor.PoisonPill:
			case proto.Message:
				if env.Sender != nil {
					h.root.Send(env.Sender, &wire.Reroute{})
				}
				return
			}
		}
		next(c, env)
	}
}

// rerouteBackoff is the first and the longest wait before a request
// answered with a wire.Reroute is sent again: long enough for this node
// to learn the partition's new owner, short against the request's time.
const (
	rerouteFirst = 10 * time.Millisecond
	rerouteMost  = 200 * time.Millisecond
)

// request sends msg to the actor kind/id of partition p until it gets an
// answer other than a wire.Reroute or a dead letter (the request was not
// delivered), waiting a little longer before each try, until deadline
// (then ErrTimeout) or ctx's end.
func (h *Host) request(ctx context.Context, p int, kind, id string, msg proto.Message, deadline time.Time) (any, error) {
	wait := rerouteFirst
	for {
		res, err := h.system.Root.RequestFuture(h.parts[p], &envelope{kind: kind, id: id, msg: msg}, time.Until(deadline)).Result()
		_, again := res.(*wire.Reroute)
		// A dead letter is a request protoactor could not deliver: to a
		// node its remote is not connected to, or to an actor stopped.
		again = again || errors.Is(err, actor.ErrDeadLetter)
		if !again {
			return res, err
		}
		h.opts.Metrics.Envelope("rerouted")
		if time.Until(deadline) <= wait {
			return nil, ErrTimeout
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
		wait = min(2*wait, rerouteMost)
	}
}
