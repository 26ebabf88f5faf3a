package node

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"persona/cluster"
)

// follower is the goroutine that keeps the host's owners of partitions
// the leaders of their raft groups, and the one that gossips the node
// ready.
type follower struct {
	cancel func()
	done   sync.WaitGroup
}

// ownersRefresh is how often the owners are read again without a
// membership event or a change of leader: a suspicion lapses without one.
const ownersRefresh = time.Second

// followPlacement reads the owners of the partitions (the leaders of their
// groups) on every membership event, every change of a group's leader and
// every ownersRefresh, until stopPlacement, and tells the cluster this
// node is ready once every partition has an owner: the cluster was founded
// or joined, and each group elected a leader that caught up. The
// partitions this node leads and follows are gossiped by the replicas
// controller.
//
// Gossiping ready waits until memberlist has passed it on (hundreds of
// milliseconds): it runs beside the loop, which goes on reading the
// owners meanwhile. The others route to the node, and hand it the
// leadership of its partitions, as soon as they hear; a node that kept
// its owners of before would send those partitions' messages back to
// their old leaders, which send them on to it, until the hops run out.
//
// A member an event shows turned alive and ready is told the presence
// this node decides (catchUpPresence).
func (n *Node) followPlacement() {
	events, cancel := n.members.Subscribe() // before the first reading, so no change is missed
	present := newReadyMembers(n.members.Members(), n.members.Name())
	f := &follower{cancel: cancel}
	var ready, telling atomic.Bool
	tell := func() {
		defer f.done.Done()
		defer telling.Store(false)
		if err := errLeftIgnored(n.members.UpdateLocal(func(m *cluster.Meta) { m.Ready = true })); err != nil {
			n.log.Warn("tell the cluster this node is ready", "err", err)
			return // the next update tries again
		}
		ready.Store(true)
		n.log.Info("every partition has an owner: ready")
	}
	update := func() {
		if all := n.updateOwners(); all && !ready.Load() && telling.CompareAndSwap(false, true) {
			f.done.Add(1)
			go tell()
		}
	}
	update()
	n.placement = f
	f.done.Add(1)
	go func() {
		defer f.done.Done()
		tick := time.NewTicker(ownersRefresh)
		defer tick.Stop()
		for {
			select {
			case ev, ok := <-events:
				if !ok {
					return
				}
				n.catchUpPresence(present, ev)
			case <-n.repl.changed:
			case <-tick.C:
			}
			update()
		}
	}()
}

// stopPlacement ends followPlacement's goroutines, if started, and waits
// for them.
func (n *Node) stopPlacement() {
	if n.placement != nil {
		n.placement.cancel()
		n.placement.done.Wait()
		n.placement = nil
	}
}

// errLeftIgnored is err unless it only says the node left the cluster.
func errLeftIgnored(err error) error {
	if errors.Is(err, cluster.ErrLeft) {
		return nil
	}
	return err
}
