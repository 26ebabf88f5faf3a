package host

import (
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cespare/xxhash/v2"

	"persona/wire"
)

// Placement tells the host which node owns each partition: the node whose
// partition actor activates the partition's actors. The host asks it for
// every message it routes, from its partition actors: Owner must be cheap
// and must not block. A host without one owns every partition.
type Placement interface {
	// Owner returns the actor-system address (host:port) of partition p's
	// owner and whether the owner is this node. known is false while no
	// owner is known (the placement is changing): the host then holds the
	// partition's messages, up to Options.HoldFor.
	Owner(p int) (addr string, local, known bool)
}

// Fencer is a Placement that fences each partition's writes
// (storage.Batch.Fence): Fence returns the fence under which this node's
// actors of partition p write now, or NoFence while this node does not
// own p.
type Fencer interface {
	Fence(p int) uint64
}

// NoFence is the fence of a partition this node does not own: a batch
// stamped with it is never applied.
const NoFence = ^uint64(0)

// Fence returns the fence under which an actor of partition p that loads
// its state now writes: the Placement's, if it is a Fencer, else 0 (no
// fence). An actor reads it before it reads its state, and stamps each
// batch it commits with it.
func (h *Host) Fence(p int) uint64 {
	if f, ok := h.opts.Placement.(Fencer); ok {
		return f.Fence(p)
	}
	return 0
}

// Moved tells the actors of a kind with Kind.Moved that partitions changed
// owners. A message sent to an actor of such a partition may have been
// lost (protoactor's remote delivers at most once, and nothing across an
// owner change), so an actor that keeps what it sent until it is
// acknowledged sends it again.
type Moved struct {
	// Partitions are the partitions whose owner changed, ascending.
	Partitions []int
}

// Has reports whether partition p is among those moved.
func (m *Moved) Has(p int) bool {
	_, ok := slices.BinarySearch(m.Partitions, p)
	return ok
}

// placementChanged tells a partition actor that Placement's answers
// changed: it routes its held messages again, and tells its actors of
// kinds with Kind.Moved which partitions moved.
type placementChanged struct {
	moved []int
	away  []int // those of moved this node did not own when the change was told
}

// holdTick makes a partition actor route its held messages again and drop
// those held too long.
type holdTick struct{}

// PartitionOf returns the partition of an identity among partitions:
// Host.Partition of a host with that many.
func PartitionOf(id string, partitions int) int {
	return int(xxhash.Sum64String(id) % uint64(partitions))
}

// PlacementChanged tells the host that Options.Placement now answers
// otherwise for the partitions moved (ascending; an owner became known is
// a change too). Every partition actor routes again the messages it held
// for want of an owner, those of the partitions this node does not own
// now stop their actors, and the actors of kinds with Kind.Moved get a
// *Moved. It does not wait.
func (h *Host) PlacementChanged(moved []int) {
	moved = slices.Clone(moved)
	var away []int
	for _, p := range moved {
		if !h.Local(p) {
			away = append(away, p)
		}
	}
	for _, pid := range h.parts {
		h.system.Root.Send(pid, &placementChanged{moved: moved, away: away})
	}
}

// Local reports whether this node owns partition p: it hosts the
// partition's actors, and its storage holds the partition's state.
func (h *Host) Local(p int) bool {
	_, local, known := h.owner(p)
	return local && known
}

// owner answers Placement.Owner, or that every partition is local when
// the host has no Placement.
func (h *Host) owner(p int) (addr string, local, known bool) {
	if h.opts.Placement == nil {
		return "", true, true
	}
	return h.opts.Placement.Owner(p)
}

// pending is a message a partition actor routes: a local one (msg) or an
// envelope from another node (env), with its sender and, once held, the
// time it is dropped at.
type pending struct {
	kind, id string
	msg      any
	env      *wire.Envelope
	sender   *actor.PID
	until    time.Time
}

// route delivers a message to its actor when this node owns the
// partition, sends it to the owner when another node does and can be
// reached, and holds it while no owner is known or reachable.
func (p *partition) route(ctx actor.Context, m pending) {
	addr, local, ok := p.target()
	switch {
	case local:
		p.deliver(ctx, m)
	case ok:
		p.send(ctx, addr, m)
	default:
		p.hold(ctx, m)
	}
}

// target returns where the partition's messages go now: here (local), or
// to the owner at addr (ok), or nowhere yet: no owner known, or the one
// known not reachable (Host.reachable).
func (p *partition) target() (addr string, local, ok bool) {
	addr, local, known := p.h.owner(p.index)
	if local {
		return addr, true, true
	}
	return addr, false, known && p.h.reachable(addr)
}

// holdRecheck is how often a partition actor that holds messages asks
// the Placement again. An owner can become known without a change being
// told: a new leader owns its partition once its lease runs, which no
// PlacementChanged announces.
const holdRecheck = 50 * time.Millisecond

// hold keeps m until an owner is known and reachable, up to Options.HoldFor and
// Options.MaxHeld messages a partition, asking the Placement again every
// holdRecheck.
func (p *partition) hold(ctx actor.Context, m pending) {
	if len(p.waiting) >= p.h.opts.MaxHeld {
		p.h.opts.Metrics.Envelope("dropped_no_owner")
		p.h.opts.Log.Warn("no owner known or reachable for a partition and too many messages held: dropped one", "partition", p.index, "kind", m.kind)
		p.refuse(ctx, m)
		return
	}
	if m.until.IsZero() {
		m.until = time.Now().Add(p.h.opts.HoldFor)
		p.h.opts.Metrics.Envelope("held")
	}
	p.waiting = append(p.waiting, m)
	if p.holdTimer == nil {
		self, root := ctx.Self(), p.h.system.Root
		p.holdTimer = time.AfterFunc(min(time.Until(m.until), holdRecheck), func() { root.Send(self, &holdTick{}) })
	}
}

// refuse answers a request the host drops with a wire.Reroute, so that
// its requester sends it again while its time lasts rather than wait all
// of it for an answer that cannot come. Other messages are lost, as a
// move loses them.
func (p *partition) refuse(ctx actor.Context, m pending) {
	if m.sender != nil {
		ctx.Send(m.sender, &wire.Reroute{})
	}
}

// reroute routes the held messages again: those whose owner is now known
// go, those held past their time are dropped, the others wait on.
func (p *partition) reroute(ctx actor.Context) {
	if p.holdTimer != nil {
		p.holdTimer.Stop()
		p.holdTimer = nil
	}
	ws := p.waiting
	p.waiting = nil
	now := time.Now()
	for _, m := range ws {
		if _, _, ok := p.target(); !ok && now.After(m.until) {
			p.h.opts.Metrics.Envelope("dropped_no_owner")
			p.h.opts.Log.Warn("no owner known or reachable for a partition in time: dropped a message", "partition", p.index, "kind", m.kind)
			p.refuse(ctx, m)
			continue
		}
		p.route(ctx, m)
	}
}

// release stops every actor of a partition this node no longer owns: the
// state they hold in memory may fall behind the new owner's, and must not
// serve again should the partition come back. The requests they had not
// yet processed are answered with a wire.Reroute (handoff), so that their
// requesters send them to the new owner; other messages are lost as a
// move loses them (the delivery rule's resend covers them); what waited
// for an actor to stop goes to the new owner.
func (p *partition) release(ctx actor.Context) {
	if len(p.actors) == 0 {
		return
	}
	p.h.opts.Log.Info("released the actors of a partition another node owns now", "partition", p.index, "actors", len(p.actors))
	for _, s := range p.actors {
		s.stopping = true // what comes for it waits until it stopped, then goes where the partition is
		s.handoff.moved.Store(true)
		ctx.Poison(s.pid) // after what its mailbox holds, which handoff answers
	}
}

// placementChanged routes the held messages again, releases the actors of
// this partition if it moved to another node, and tells the actors of
// kinds with Kind.Moved what moved.
func (p *partition) placementChanged(ctx actor.Context, m *placementChanged) {
	p.reroute(ctx)
	if len(m.moved) == 0 {
		return
	}
	if slices.Contains(m.away, p.index) {
		p.release(ctx)
	}
	moved := &Moved{Partitions: m.moved}
	for k, s := range p.actors {
		if p.h.kinds[k.kind].Moved && !s.stopping {
			ctx.Send(s.pid, moved)
		}
	}
}
