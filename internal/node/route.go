package node

import (
	"slices"
	"sync/atomic"

	"persona/cluster"
)

// owners is the host's Placement in a cluster: the owner of each partition
// as this node's view of the membership names it (cluster.Membership.Owners:
// the first replica, until replication elects leaders). No owner is known
// until the node turns ready; meanwhile the host holds what it routes.
type owners struct {
	table atomic.Pointer[ownerTable]
	// lease reports whether this node's lease of partition p's group runs:
	// a partition it leads is its own only then (replication.go).
	lease func(p int) bool
}

// ownerTable is one view of the owners: this node's name and every
// partition's owner.
type ownerTable struct {
	self   string
	owners []cluster.Owner
}

// Owner implements host.Placement.
func (o *owners) Owner(p int) (addr string, local, known bool) {
	t := o.table.Load()
	if t == nil || p >= len(t.owners) {
		return "", false, false
	}
	own := t.owners[p]
	if own.Name == "" {
		return "", false, false
	}
	if own.Name == t.self && o.lease != nil && !o.lease(p) {
		return "", false, false // deposed, or about to learn so: hold until the group says
	}
	return own.ActorAddr, own.Name == t.self, true
}

// update makes now the owners and returns the partitions whose owner or
// its address changed: all of them the first time.
func (o *owners) update(self string, now []cluster.Owner) []int {
	old := o.table.Swap(&ownerTable{self: self, owners: now})
	var moved []int
	for p, own := range now {
		if old == nil || p >= len(old.owners) || old.owners[p] != own {
			moved = append(moved, p)
		}
	}
	return moved
}

// updateOwners reads the owners from the partitions' groups and, if any
// changed, tells the host (which routes its held messages and has the
// user actors resend what the moved partitions may have lost) and the
// outbox (which resumes the queues of the partitions that arrived). It reports
// whether every partition has an owner.
func (n *Node) updateOwners() (all bool) {
	now := n.repl.owners(n.members, n.cfg.Actors.Partitions)
	all = !slices.ContainsFunc(now, func(o cluster.Owner) bool { return o.Name == "" })
	if n.owners == nil {
		return all
	}
	if moved := n.owners.update(n.members.Name(), now); len(moved) > 0 {
		n.log.Info("owners of partitions changed", "partitions", len(moved))
		n.host.PlacementChanged(moved)
		if n.outbox != nil {
			n.outbox.PlacementChanged(moved)
		}
	}
	return all
}
