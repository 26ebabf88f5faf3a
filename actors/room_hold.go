package actors

import (
	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/wire"
)

// A room appends only with stream positions at hand: stream.take never
// waits for a reservation, since a room that waited would hold the worker
// every room of the node shares while a replicated write is under way. A
// message that may append, coming while the room's partition has fewer
// than streamReadyMargin positions reserved (the partition just came to
// this node, or its reservation failed), is held, and every later one
// that may append with it, in order; reads are answered meanwhile. The
// stream calls back (streamReady) once a reservation lands, fails or the
// partition moves: the held messages are then handled in order. After a
// failure or a move, a held request is answered with a wire.Reroute, so
// that its requester sends it again (to the new owner, or here once the
// reservation written again lands); other held messages wait for that
// reservation, and are lost with the room if the partition moved away, as
// a move loses them (the delivery rule's resend covers them).
//
// A room that is to read itself again from storage (reloadDue: a write
// failed, or a batch aborted while earlier ones were in flight) holds
// every message, reads included, since its memory may show events never
// written; once it has read itself again, it handles them as above.

// streamReady is the stream's call back to a room holding messages.
type streamReady struct{ err error }

// heldMessage is a message held until positions are at hand, with the
// requester it answers.
type heldMessage struct {
	msg    proto.Message
	sender *actor.PID
}

// heldCtx is the context a held message is handled in: the room's turn
// now, the message and requester of then.
type heldCtx struct {
	actor.Context
	msg    proto.Message
	sender *actor.PID
}

func (c heldCtx) Message() any       { return c.msg }
func (c heldCtx) Sender() *actor.PID { return c.sender }

// Respond answers the held message's requester, if any.
func (c heldCtx) Respond(v any) {
	if c.sender != nil {
		c.Send(c.sender, v)
	}
}

// readOnly reports whether a room answers m without appending.
func readOnly(m proto.Message) bool {
	switch m.(type) {
	case *wire.GetState, *wire.RoomSummary, *wire.SearchMembers, *wire.GetMessages, *wire.GetEvent, *wire.GetPDUs,
		*wire.GetLacking, *wire.GetRoomVersion, *wire.FederationRead, *wire.GetServers, *wire.GetContext, *wire.RoomSync:
		return true
	}
	return false
}

// hold keeps m for later if the room is to read itself again first
// (reloadDue), or if m may append and positions are not at hand or
// messages are held already; it reports whether it did.
func (r *room) hold(ctx actor.Context, m proto.Message) bool {
	if !r.reloadDue() && (readOnly(m) || (len(r.held) == 0 && r.positionsAtHand(ctx))) {
		return false
	}
	r.held = append(r.held, heldMessage{msg: m, sender: ctx.Sender()})
	return true
}

// positionsAtHand reports whether the room's partition has positions for
// a write; if not, the stream calls the room back once it may have.
func (r *room) positionsAtHand(ctx actor.Context) bool {
	if r.awaiting {
		return false
	}
	if r.onReady == nil { // once, not per message: this runs for every write
		self, rt := ctx.Self(), r.h.rt
		r.onReady = func(err error) { rt.Post(self, &streamReady{err: err}) }
	}
	if r.h.stream.ready(r.part, r.onReady) {
		return true
	}
	r.awaiting = true
	return false
}

// onStreamReady handles the held messages (handleHeld); after a failure
// it first sends the held requests that may append back to their
// requesters.
func (r *room) onStreamReady(ctx actor.Context, m *streamReady) {
	r.awaiting = false
	if m.err != nil {
		r.h.log.Warn("room holds its writes: no stream positions", "room", r.id, "held", len(r.held), "err", m.err)
		kept := r.held[:0]
		for _, h := range r.held {
			if h.sender != nil && !readOnly(h.msg) {
				ctx.Send(h.sender, &wire.Reroute{})
				continue
			}
			kept = append(kept, h)
		}
		clear(r.held[len(kept):])
		r.held = kept
	}
	r.handleHeld(ctx)
}

// handleHeld handles the held messages in order, unless the room is to
// read itself again first: reads at once, the others while positions are
// at hand. Those left stay held, in order, as does everything from a
// message whose failed append makes the room read itself again.
func (r *room) handleHeld(ctx actor.Context) {
	held := r.held
	r.held = nil
	for i, h := range held {
		if r.reloadDue() {
			r.held = append(r.held, held[i:]...)
			return
		}
		if !readOnly(h.msg) && !r.positionsAtHand(ctx) {
			r.held = append(r.held, h)
			continue
		}
		r.receiveMessage(heldCtx{Context: ctx, msg: h.msg, sender: h.sender}, h.msg)
	}
}
