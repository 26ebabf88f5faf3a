package raft

import (
	"context"
	"slices"

	"go.etcd.io/raft/v3"
)

// Role is what a node is in a group.
type Role uint8

// The roles a replica can have. A pre-candidate (raft's pre-vote) counts
// as a candidate.
const (
	Follower Role = iota
	Candidate
	Leader
)

// String returns the role's name.
func (r Role) String() string {
	switch r {
	case Leader:
		return "leader"
	case Candidate:
		return "candidate"
	default:
		return "follower"
	}
}

func roleOf(s raft.StateType) Role {
	switch s {
	case raft.StateLeader:
		return Leader
	case raft.StateCandidate, raft.StatePreCandidate:
		return Candidate
	default:
		return Follower
	}
}

// Status is a group's state on this node as of the driver's last round,
// or of a membership change applied during this one (before its caller
// hears back).
type Status struct {
	Group    uint64
	Role     Role
	Leader   uint64 // the leader this node knows of; 0 for none
	Term     uint64
	Applied  uint64   // index of the last entry applied here
	Voters   []uint64 // the voting replicas, as of Applied
	Learners []uint64
}

// Event tells of a change in a group on this node: its role, the leader
// it knows of, its term while it leads, or the removal of its replica
// (Removed; no event for the group follows).
type Event struct {
	Group   uint64
	Role    Role
	Leader  uint64
	Term    uint64
	Removed bool
}

// Status returns group's status on this node, or ErrUnknownGroup.
func (d *Driver) Status(group uint64) (Status, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.pub[group]
	if !ok {
		return Status{}, ErrUnknownGroup
	}
	return s, nil
}

// Statuses returns the status of every group this node holds, by group.
func (d *Driver) Statuses() []Status {
	d.mu.Lock()
	out := make([]Status, 0, len(d.pub))
	for _, s := range d.pub {
		out = append(out, s)
	}
	d.mu.Unlock()
	slices.SortFunc(out, func(a, b Status) int { return cmpUint(a.Group, b.Group) })
	return out
}

// sorted returns a sorted copy of ids.
func sorted(ids []uint64) []uint64 {
	out := slices.Clone(ids)
	slices.Sort(out)
	return out
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// publish makes g's status visible to Status, tells OnEvent of a change
// of role or leader, and wakes the waiters of waitStatus when something a
// waiter may wait for changed. Driver loop only.
func (d *Driver) publish(g *group) {
	s := Status{Group: g.id, Role: Leader, Leader: d.opts.NodeID, Term: g.term, Applied: g.applied}
	if !g.solo() && !g.waking { // a waking group leads on, for none other can
		st := g.rn.BasicStatus()
		s.Role, s.Leader, s.Term = roleOf(st.RaftState), st.Lead, st.GetTerm()
	}
	d.mu.Lock()
	old, had := d.pub[g.id]
	if had && g.pubCS == g.cs {
		s.Voters, s.Learners = old.Voters, old.Learners // the same membership: no copy
	} else {
		s.Voters, s.Learners = sorted(g.cs.GetVoters()), sorted(g.cs.GetLearners())
		g.pubCS = g.cs
	}
	d.pub[g.id] = s
	if s.Role != Leader || !had || old.Term != s.Term {
		delete(d.leases, g.id) // a lease is a term's: a new one starts with the answers to it
		g.confirms = g.confirms[:0]
	}
	changed := !had || old.Role != s.Role || old.Leader != s.Leader || old.Term != s.Term ||
		!slices.Equal(old.Voters, s.Voters) || !slices.Equal(old.Learners, s.Learners)
	if changed {
		close(d.changed)
		d.changed = make(chan struct{})
	}
	d.mu.Unlock()
	// A leader in a new term is told too: a group driven alone that took
	// a replica leads on, in the term its campaign took (solo.go).
	if (!had || old.Role != s.Role || old.Leader != s.Leader || old.Term != s.Term && s.Role == Leader) && d.opts.OnEvent != nil {
		d.opts.OnEvent(Event{Group: g.id, Role: s.Role, Leader: s.Leader, Term: s.Term})
	}
}

// unpublish removes group from Status and tells OnEvent of the removal.
// Driver loop only.
func (d *Driver) unpublish(group uint64) {
	d.mu.Lock()
	delete(d.pub, group)
	delete(d.leases, group)
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
	if d.opts.OnEvent != nil {
		d.opts.OnEvent(Event{Group: group, Removed: true})
	}
}

// WaitLeader waits until this node knows a leader of group (itself or
// another) and returns it; ErrUnknownGroup if the node holds no replica
// of it.
func (d *Driver) WaitLeader(ctx context.Context, group uint64) (uint64, error) {
	var lead uint64
	gone := false
	err := d.waitStatus(ctx, group, func(s Status, ok bool) bool {
		lead, gone = s.Leader, !ok
		return !ok || s.Leader != 0
	})
	if err == nil && gone {
		err = ErrUnknownGroup
	}
	return lead, err
}

// waitStatus waits until cond holds for group's status (ok false: the
// group is gone), ctx ends or the driver stops.
func (d *Driver) waitStatus(ctx context.Context, group uint64, cond func(s Status, ok bool) bool) error {
	for {
		d.mu.Lock()
		s, ok := d.pub[group]
		ch := d.changed
		d.mu.Unlock()
		if cond(s, ok) {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-d.done:
			return d.closedErr()
		}
	}
}

// Lags returns, for each group this node leads, how many entries its
// furthest-behind replica (voter or learner) lacks: the leader's last
// index less that replica's matched index (0 when every replica has
// every entry).
func (d *Driver) Lags(ctx context.Context) (map[uint64]uint64, error) {
	out := map[uint64]uint64{}
	err := d.call(ctx, func(reply chan<- error) {
		for id, g := range d.groups {
			if g.solo() {
				out[id] = 0 // no other voter
				continue
			}
			st := g.rn.Status()
			if st.RaftState != raft.StateLeader {
				continue
			}
			last, _ := g.ms.LastIndex()
			var lag uint64
			for _, v := range slices.Concat(g.cs.GetVoters(), g.cs.GetLearners()) {
				if pr, ok := st.Progress[v]; ok && pr.Match < last {
					lag = max(lag, last-pr.Match)
				}
			}
			out[id] = lag
		}
		reply <- nil
	})
	return out, err
}
