package raft

import (
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// A leader's lease is the time until which no other replica can have been
// elected: a follower campaigns only after an election timeout without
// hearing from the leader, so once a quorum of voters (the leader among
// them) answered the leader's messages, none of them votes for another
// before the quorum's oldest answer plus an election timeout. The lease
// ends half an election timeout after that answer, leaving the other half
// to messages late on the network and to clocks running at other rates.
// A leader that serves reads from its own state without asking the group
// does so only within its lease (LeaseValid): a leader paused or cut off
// while the others elected another sees its lease lapse before it learns
// that it was deposed.

// noteAnswer records that voter from answered the leader of g now, and
// renews g's lease. Driver loop only.
func (d *Driver) noteAnswer(g *group, m *pb.Message) {
	if t := m.GetType(); t != pb.MsgHeartbeatResp && t != pb.MsgAppResp {
		return
	}
	if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader || m.GetTerm() != st.GetTerm() {
		return // an answer to another term's leader
	}
	if g.answered == nil {
		g.answered = map[uint64]time.Time{}
	}
	g.answered[m.GetFrom()] = time.Now()
	d.renewLease(g)
}

// renewLease sets g's lease from its voters' last answers, this node
// answering itself now. Driver loop only.
func (d *Driver) renewLease(g *group) {
	voters := g.cs.GetVoters()
	if !slices.Contains(voters, d.opts.NodeID) {
		return
	}
	now := time.Now()
	times := make([]time.Time, 0, len(voters))
	for _, v := range voters {
		if v == d.opts.NodeID {
			times = append(times, now)
		} else if t, ok := g.answered[v]; ok {
			times = append(times, t)
		}
	}
	quorum := len(voters)/2 + 1
	if len(times) < quorum {
		return
	}
	slices.SortFunc(times, func(a, b time.Time) int { return b.Compare(a) }) // newest first
	until := times[quorum-1].Add(time.Duration(d.opts.ElectionTicks) * d.opts.TickInterval / 2)
	d.mu.Lock()
	d.leases[g.id] = until
	d.mu.Unlock()
}

// LeaseValid reports whether this node leads group and its lease runs: no
// other replica can lead the group now, so the state this node applied is
// the group's latest committed state but for its own entries in flight.
// A group of one voter, this node, always has its lease.
func (d *Driver) LeaseValid(group uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	s, ok := d.pub[group]
	if !ok || s.Role != Leader {
		return false
	}
	if len(s.Voters) == 1 && s.Voters[0] == d.opts.NodeID {
		return true
	}
	return time.Now().Before(d.leases[group])
}
