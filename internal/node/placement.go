package node

import (
	"errors"
	"time"

	"persona/cluster"
)

// follower is the goroutine that keeps the host's owners of partitions
// the leaders of their raft groups.
type follower struct {
	cancel func()
	done   chan struct{}
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
func (n *Node) followPlacement() {
	events, cancel := n.members.Subscribe() // before the first reading, so no change is missed
	ready := false
	update := func() {
		if all := n.updateOwners(); all && !ready {
			if err := errLeftIgnored(n.members.UpdateLocal(func(m *cluster.Meta) { m.Ready = true })); err != nil {
				n.log.Warn("tell the cluster this node is ready", "err", err)
				return
			}
			ready = true
			n.log.Info("every partition has an owner: ready")
		}
	}
	update()
	f := &follower{cancel: cancel, done: make(chan struct{})}
	n.placement = f
	go func() {
		defer close(f.done)
		tick := time.NewTicker(ownersRefresh)
		defer tick.Stop()
		for {
			select {
			case _, ok := <-events:
				if !ok {
					return
				}
			case <-n.repl.changed:
			case <-tick.C:
			}
			update()
		}
	}()
}

// stopPlacement ends followPlacement's goroutine, if started, and waits
// for it.
func (n *Node) stopPlacement() {
	if n.placement != nil {
		n.placement.cancel()
		<-n.placement.done
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
