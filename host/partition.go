package host

import (
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"persona/wire"
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
	// waiting holds the messages that wait for an owner to be known.
	waiting   []pending
	holdTimer *time.Timer
	// remotes are the partition actors of other nodes, by address.
	remotes map[string]*actor.PID
}

type key struct{ kind, id string }

type slot struct {
	pid      *actor.PID
	stopping bool
	held     []held
	handoff  *handoff
}

type held struct {
	msg    any
	sender *actor.PID
}

// passivate is sent by an idle actor to its partition.
type passivate struct{}

// StopWhenIdle tells an actor that asked to stop (Idle, on its
// IdleTimeout) that no more messages will reach it: it stops itself with
// ctx.Stop(ctx.Self()), or, if it turned busy meanwhile, calls StayActive.
type StopWhenIdle struct{}

// resume is sent by an actor that got stopWhenIdle but turned busy
// meanwhile: the partition routes to it again, held messages first.
type resume struct{}

// Idle answers an actor's IdleTimeout: an idle actor asks its partition to
// stop it (a Request, since the partition knows the actor by the sender)
// and later gets StopWhenIdle; a busy one sets idle to PassivateAfter and
// looks again then, since the watch is disarmed once it fires.
func (h *Host) Idle(ctx actor.Context, idle *IdleWatch, busy bool) {
	if busy {
		idle.Set(h.opts.PassivateAfter)
		return
	}
	ctx.Request(ctx.Parent(), &passivate{})
}

// StayActive answers StopWhenIdle for an actor that turned busy after it
// asked to stop and may wait on messages the partition now holds (a user's
// room acks): it asks to be routed to again, and sets idle to
// PassivateAfter to stop later.
func (h *Host) StayActive(ctx actor.Context, idle *IdleWatch) {
	ctx.Request(ctx.Parent(), &resume{})
	idle.Set(h.opts.PassivateAfter)
}

func newPartition(h *Host, index int) *partition {
	return &partition{h: h, index: index, actors: map[key]*slot{}, byPID: map[string]key{}, remotes: map[string]*actor.PID{}}
}

// Receive routes a message, local or from another node, to its actor's
// owner (route), and handles the passivation protocol.
func (p *partition) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *envelope:
		p.route(ctx, pending{kind: m.kind, id: m.id, msg: m.msg, sender: ctx.Sender()})
	case *wire.Envelope:
		p.route(ctx, pending{kind: m.Kind, id: m.Id, env: m, sender: ctx.Sender()})
	case *placementChanged:
		p.placementChanged(ctx, m)
	case *holdTick:
		p.holdTimer = nil
		p.reroute(ctx)
	case *actor.Stopping:
		if p.holdTimer != nil {
			p.holdTimer.Stop()
		}
	case *passivate:
		if k, ok := p.byPID[ctx.Sender().Id]; ok {
			p.actors[k].stopping = true
			ctx.Send(ctx.Sender(), &StopWhenIdle{})
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
		if p.h.opts.Metrics != nil {
			p.h.opts.Metrics.Passivated(k.kind)
		}
		if len(s.held) > 0 && !p.h.Local(p.index) { // released: the owner takes them
			for _, h := range s.held {
				p.route(ctx, pending{kind: k.kind, id: k.id, msg: h.msg, sender: h.sender})
			}
			return
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

// deliver passes a message for a partition this node owns to its actor,
// activating it, or holding the message while the actor stops. A message
// from another node is decoded first; one of a type this node does not
// know is dropped.
func (p *partition) deliver(ctx actor.Context, m pending) {
	if m.env != nil {
		msg, err := decode(m.env)
		if err != nil {
			p.h.opts.Metrics.Envelope("dropped_unknown_type")
			p.h.opts.Log.Error("a message from another node cannot be read: dropped", "kind", m.kind, "err", err)
			return
		}
		p.h.opts.Metrics.Envelope("received")
		m.msg = msg
	}
	k := key{m.kind, m.id}
	s := p.actors[k]
	switch {
	case s == nil:
		s = p.activate(ctx, k)
		if s == nil {
			return
		}
	case s.stopping:
		s.held = append(s.held, held{m.msg, m.sender})
		return
	}
	forward(ctx, s.pid, m.msg, m.sender)
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
	kind, ok := p.h.kinds[k.kind]
	if !ok {
		p.h.opts.Log.Error("message for unknown actor kind", "kind", k.kind)
		return nil
	}
	depth := p.h.depths[k.kind]
	var opts []actor.PropsOption
	switch kind.Mailbox {
	case MailboxPriority:
		opts = []actor.PropsOption{actor.WithMailbox(actor.UnboundedPriority(depth))}
	case MailboxWorkers:
		lane := &lane{w: p.h.workers, urgent: kind.Urgent, throughput: p.h.opts.WorkerThroughput}
		opts = []actor.PropsOption{actor.WithMailbox(actor.Unbounded(depth, lane)), actor.WithDispatcher(lane)}
	default:
		opts = []actor.PropsOption{actor.WithMailbox(actor.Unbounded(depth))}
	}
	idle := newIdleWatch(p.h.system.Root)
	ho := &handoff{root: p.h.system.Root}
	opts = append(opts, actor.WithReceiverMiddleware(idle.receive, ho.receive))
	pid := ctx.Spawn(actor.PropsFromProducer(func() actor.Actor { return kind.New(k.id, idle) }, opts...))
	s := &slot{pid: pid, handoff: ho}
	p.actors[k] = s
	p.byPID[pid.Id] = k
	if p.h.opts.Metrics != nil {
		p.h.opts.Metrics.Activated(k.kind)
	}
	return s
}
