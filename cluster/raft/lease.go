package raft

import (
	"encoding/binary"
	"time"

	"go.etcd.io/raft/v3"
)

// A leader's lease is the time until which no other replica can have been
// elected: a follower campaigns only after an election timeout without
// hearing from the leader, so once a quorum of voters (the leader among
// them) answered a heartbeat the leader sent at time t, none of them votes
// for another before t plus an election timeout. The lease ends half an
// election timeout after t, leaving the other half to clocks running at
// other rates. Each heartbeat interval the driver asks raft to confirm its
// leadership (ReadIndex: a heartbeat round that carries a context of its
// own), and the answer, once a quorum acknowledged it, renews the lease
// from the time that round was sent, never from when the answers arrived:
// answers a leader finds waiting after it was paused or cut off were sent
// before, and renew nothing.
//
// A leadership transfer breaks that premise: the transferee campaigns at
// once, and the voters grant it their votes whatever they heard from the
// leader. A leader that hands its leadership over therefore ends its lease
// first, and neither asks for nor takes confirmations while the transfer
// is under way; one that raft gives up renews it from the next round.
//
// A leader that serves reads from its own state without asking the group
// does so only within its lease (LeaseValid).

// maxConfirms bounds the confirmations of leadership a group keeps waiting.
const maxConfirms = 64

// confirm is a confirmation of leadership asked for at sent.
type confirm struct {
	id   uint64
	sent time.Time
}

// askConfirms asks each group this node leads with other voters to confirm
// its leadership. Driver loop only, on heartbeat ticks.
func (d *Driver) askConfirms() {
	now := time.Now()
	for _, g := range d.groups {
		if g.solo() || len(g.cs.GetVoters()) < 2 {
			g.confirms = g.confirms[:0]
			continue
		}
		if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader || st.LeadTransferee != raft.None {
			g.confirms = g.confirms[:0]
			continue
		}
		id := d.nextID()
		if len(g.confirms) == maxConfirms {
			g.confirms = append(g.confirms[:0], g.confirms[1:]...)
		}
		g.confirms = append(g.confirms, confirm{id: id, sent: now})
		g.rn.ReadIndex(binary.AppendUvarint(nil, id))
		d.touch(g)
	}
}

// confirmed renews g's lease from the confirmations rd answers. Driver
// loop only.
func (d *Driver) confirmed(g *group, rd *raft.Ready) {
	if g.rn.BasicStatus().LeadTransferee != raft.None {
		return // the transfer ended the lease
	}
	for _, rs := range rd.ReadStates {
		id, n := binary.Uvarint(rs.RequestCtx)
		if n <= 0 {
			continue
		}
		for i, c := range g.confirms {
			if c.id != id {
				continue
			}
			until := c.sent.Add(time.Duration(d.opts.ElectionTicks) * d.opts.TickInterval / 2)
			d.mu.Lock()
			if until.After(d.leases[g.id]) {
				d.leases[g.id] = until
			}
			d.mu.Unlock()
			g.confirms = append(g.confirms[:0], g.confirms[i+1:]...)
			break
		}
	}
}

// endLease ends g's lease now, and forgets the confirmations asked for
// before. Driver loop only.
func (d *Driver) endLease(g *group) {
	g.confirms = g.confirms[:0]
	d.mu.Lock()
	delete(d.leases, g.id)
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
