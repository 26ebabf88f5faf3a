package node

import (
	"errors"
	"slices"
	"time"

	"persona/cluster"
)

// follower is the goroutine that keeps the partitions this node gossips as
// followed those placement gives it, and the host's owners of partitions
// those the membership names.
type follower struct {
	cancel func()
	done   chan struct{}
}

// ownersRefresh is how often the owners are read again without a
// membership event: a suspicion lapses without one.
const ownersRefresh = time.Second

// followPlacement learns the owners of the partitions, tells the cluster
// this node is ready and holds the partitions placement gives it (gossiped
// as followed: none is led until replication runs), then reads both again
// whenever a membership change moves them, until stopPlacement.
func (n *Node) followPlacement() {
	events, cancel := n.members.Subscribe() // before the first placement, so no change is missed
	rf := n.cfg.Cluster.ReplicationFactor
	n.updateOwners() // before the others route here
	local := n.members.Local()
	local.Ready, local.Followed = true, n.members.Placement(rf)
	if err := n.members.SetLocal(local); err != nil {
		n.log.Warn("tell the cluster this node is ready", "err", err)
	}
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
			case <-tick.C:
				n.updateOwners()
				continue
			}
			n.updateOwners()
			local := n.members.Local()
			followed := n.members.Placement(rf)
			if slices.Equal(local.Followed, followed) {
				continue
			}
			n.log.Info("partitions placed on this node changed", "from", len(local.Followed), "to", len(followed))
			local.Followed = followed
			if err := n.members.SetLocal(local); err != nil && !errors.Is(err, cluster.ErrLeft) {
				n.log.Warn("gossip the partitions placed on this node", "err", err)
			}
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
