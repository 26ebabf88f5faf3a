package actors

import (
	"github.com/asynkron/protoactor-go/actor"
)

// partition activates the actors of one partition and forwards their
// messages, keeping each sender's order. It passivates idle actors without
// losing a message: an actor asks to stop, the partition stops routing to it
// and holds its new messages until it has stopped, then starts it again.
type partition struct {
	h      *Host
	index  int
	actors map[key]*slot
	byPID  map[string]key
}

type key struct{ kind, id string }

type slot struct {
	pid      *actor.PID
	stopping bool
	held     []held
}

type held struct {
	msg    any
	sender *actor.PID
}

// passivate is sent by an idle actor to its partition.
type passivate struct{}

// stopWhenIdle tells an actor that no more messages will reach it.
type stopWhenIdle struct{}

// resume is sent by an actor that got stopWhenIdle but turned busy
// meanwhile: the partition routes to it again, held messages first.
type resume struct{}

// idle answers an actor's ReceiveTimeout: an idle actor asks its partition
// to stop it (a Request, since the partition knows the actor by the
// sender); a busy one looks again after passivate_after, because protoactor
// disarms the timeout once it fires.
func (h *Host) idle(ctx actor.Context, busy bool) {
	if busy {
		ctx.SetReceiveTimeout(h.cfg.Actors.PassivateAfter)
		return
	}
	ctx.Request(ctx.Parent(), &passivate{})
}

// stayActive answers stopWhenIdle for an actor that turned busy after it
// asked to stop and may wait on messages the partition now holds (a user's
// room acks): it asks to be routed to again, and to stop later.
func (h *Host) stayActive(ctx actor.Context) {
	ctx.Request(ctx.Parent(), &resume{})
	ctx.SetReceiveTimeout(h.cfg.Actors.PassivateAfter)
}

func newPartition(h *Host, index int) *partition {
	return &partition{h: h, index: index, actors: map[key]*slot{}, byPID: map[string]key{}}
}

func (p *partition) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *envelope:
		k := key{m.kind, m.id}
		s := p.actors[k]
		switch {
		case s == nil:
			s = p.activate(ctx, k)
			if s == nil {
				return
			}
		case s.stopping:
			s.held = append(s.held, held{m.msg, ctx.Sender()})
			return
		}
		forward(ctx, s.pid, m.msg, ctx.Sender())
	case *ListRoomAliases:
		ctx.Respond(p.answerRoomAliases(m))
	case *passivate:
		if k, ok := p.byPID[ctx.Sender().Id]; ok {
			p.actors[k].stopping = true
			ctx.Send(ctx.Sender(), &stopWhenIdle{})
		}
	case *resume:
		if k, ok := p.byPID[ctx.Sender().Id]; ok && p.actors[k].stopping {
			s := p.actors[k]
			s.stopping = false
			for _, h := range s.held {
				forward(ctx, s.pid, h.msg, h.sender)
			}
			s.held = nil
		}
	case *actor.Terminated:
		k, ok := p.byPID[m.Who.Id]
		if !ok {
			return
		}
		delete(p.byPID, m.Who.Id)
		s := p.actors[k]
		delete(p.actors, k)
		if p.h.metrics != nil {
			p.h.metrics.Passivated(k.kind)
		}
		if len(s.held) > 0 {
			ns := p.activate(ctx, k)
			if ns == nil {
				return
			}
			for _, h := range s.held {
				forward(ctx, ns.pid, h.msg, h.sender)
			}
		}
	}
}

// forward passes msg on to pid, keeping its sender. A message without one
// travels bare, so that the mailbox sees its priority.
func forward(ctx actor.Context, pid *actor.PID, msg any, sender *actor.PID) {
	if sender == nil {
		ctx.Send(pid, msg)
		return
	}
	ctx.RequestWithCustomSender(pid, msg, sender)
}

func (p *partition) activate(ctx actor.Context, k key) *slot {
	produce, ok := p.h.kinds[k.kind]
	if !ok {
		p.h.log.Error("message for unknown actor kind", "kind", k.kind)
		return nil
	}
	opts := []actor.PropsOption{actor.WithMailbox(actor.Unbounded(p.h.depths[k.kind]))}
	switch k.kind {
	case KindUser:
		opts = []actor.PropsOption{actor.WithMailbox(actor.UnboundedPriority(p.h.depths[k.kind]))}
	case KindRoom:
		lane := &roomLane{w: p.h.rooms}
		opts = []actor.PropsOption{actor.WithMailbox(actor.Unbounded(p.h.depths[k.kind], lane)), actor.WithDispatcher(lane)}
	}
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return produce(k.id) }, opts...))
	s := &slot{pid: pid}
	p.actors[k] = s
	p.byPID[pid.Id] = k
	if p.h.metrics != nil {
		p.h.metrics.Activated(k.kind)
	}
	return s
}
