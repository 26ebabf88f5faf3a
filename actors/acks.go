package actors

import (
	"sync"
	"time"

	"persona/wire"
)

// acker coalesces the acks rooms send to user actors: acks for one user
// within Options.AckWindow travel as one UpdateAcks message.
type acker struct {
	mu      sync.Mutex
	pending map[string][]*wire.UpdateAck
	armed   bool
}

// ack queues a room's ack for its user's actor.
func (h *Service) ack(a *wire.UpdateAck) {
	h.acks.mu.Lock()
	if h.acks.pending == nil {
		h.acks.pending = map[string][]*wire.UpdateAck{}
	}
	h.acks.pending[a.UserId] = append(h.acks.pending[a.UserId], a)
	arm := !h.acks.armed
	h.acks.armed = true
	h.acks.mu.Unlock()
	if arm {
		time.AfterFunc(h.opts.AckWindow, h.flushAcks)
	}
}

func (h *Service) flushAcks() {
	h.acks.mu.Lock()
	pending := h.acks.pending
	h.acks.pending, h.acks.armed = nil, false
	h.acks.mu.Unlock()
	for user, acks := range pending {
		h.Send(KindUser, user, &wire.UpdateAcks{UserId: user, Acks: acks})
	}
}
