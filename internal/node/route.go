package node

import (
	"slices"
	"sync/atomic"

	"persona/cluster"
	"persona/host"
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
	terms  []uint64 // the term this node leads each of its partitions in
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

// Fence implements host.Fencer: the term this node leads partition p
// in, the fence its group applied before the node took the partition
// (replication.catchUp); host.NoFence if it does not own p.
func (o *owners) Fence(p int) uint64 {
	t := o.table.Load()
	if t == nil || p >= len(t.owners) || t.owners[p].Name != t.self || t.terms[p] == 0 {
		return host.NoFence
	}
	return t.terms[p]
}

// update makes now the owners and returns the partitions whose owner or
// its address changed: all of them the first time.
func (o *owners) update(self string, now []cluster.Owner, terms []uint64) []int {
	old := o.table.Swap(&ownerTable{self: self, owners: now, terms: terms})
	var moved []int
	for p, own := range now {
		if old == nil || p >= len(old.owners) || old.owners[p] != own {
			moved = append(moved, p)
		}
	}
	return moved
}

// renewed returns the partitions this node owned and owns now, but in
// another term: another node led them meanwhile, unseen here.
func (o *owners) renewed(self string, now []cluster.Owner, terms []uint64) []int {
	old := o.table.Load()
	if old == nil {
		return nil
	}
	var out []int
	for p, own := range now {
		if own.Name == self && p < len(old.owners) && old.owners[p].Name == self && old.terms[p] != terms[p] {
			out = append(out, p)
		}
	}
	return out
}

// updateOwners reads the owners from the partitions' groups and, if any
// changed, tells the host (which routes its held messages and has the
// user actors resend what the moved partitions may have lost) and the
// outbox (which resumes the queues of the partitions that arrived). It reports
// whether every partition has an owner.
func (n *Node) updateOwners() (all bool) {
	now, terms := n.repl.owners(n.members, n.cfg.Actors.Partitions)
	all = !slices.ContainsFunc(now, func(o cluster.Owner) bool { return o.Name == "" })
	if n.owners == nil {
		return all
	}
	self := n.members.Name()
	if renewed := n.owners.renewed(self, now, terms); len(renewed) > 0 {
		// Their actors may hold what another leader has replaced since:
		// the partitions go unowned for a moment, which releases them.
		gap := slices.Clone(now)
		for _, p := range renewed {
			gap[p] = cluster.Owner{}
		}
		n.log.Info("partitions led again in a new term: their actors start afresh", "partitions", len(renewed))
		n.placementChanged(n.owners.update(self, gap, terms))
	}
	if moved := n.owners.update(self, now, terms); len(moved) > 0 {
		n.log.Info("owners of partitions changed", "partitions", len(moved))
		n.placementChanged(moved)
	}
	return all
}

// placementChanged tells the host and the outbox that the partitions
// moved changed owners.
func (n *Node) placementChanged(moved []int) {
	n.host.PlacementChanged(moved)
	if n.outbox != nil {
		n.outbox.PlacementChanged(moved)
	}
}

// peers is the host's Peers in a cluster: the actor addresses of the other
// members alive or suspected, as this node's view of the membership names
// them. It names none until the membership starts.
type peers struct {
	members atomic.Pointer[cluster.Membership]
}

// Peers implements host.Peers.
func (ps *peers) Peers() []string {
	m := ps.members.Load()
	if m == nil {
		return nil
	}
	self := m.Name()
	var out []string
	for _, mem := range m.Members() {
		if mem.Name != self && mem.ActorAddr != "" && (mem.State == cluster.StateAlive || mem.State == cluster.StateSuspect) {
			out = append(out, mem.ActorAddr)
		}
	}
	return out
}
