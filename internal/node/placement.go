package node

import (
	"errors"
	"slices"

	"persona/cluster"
)

// follower is the goroutine that keeps the partitions this node gossips as
// followed those placement gives it.
type follower struct {
	cancel func()
	done   chan struct{}
}

// followPlacement tells the cluster this node is ready and holds the
// partitions placement gives it (gossiped as followed: none is led until
// replication runs), then gossips them again whenever a membership change
// moves them, until stopPlacement.
func (n *Node) followPlacement() {
	events, cancel := n.members.Subscribe() // before the first placement, so no change is missed
	rf := n.cfg.Cluster.ReplicationFactor
	local := n.members.Local()
	local.Ready, local.Followed = true, n.members.Placement(rf)
	if err := n.members.SetLocal(local); err != nil {
		n.log.Warn("tell the cluster this node is ready", "err", err)
	}
	f := &follower{cancel: cancel, done: make(chan struct{})}
	n.placement = f
	go func() {
		defer close(f.done)
		for range events {
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
