package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// AddGroup starts a replica of group on this node and returns once the
// log holds it. With peers (this node among them), the group starts with
// those voters, as every one of them must start it; without, the replica
// waits, empty, for a leader to add it (AddReplica) and send it a
// snapshot. A group this node holds already is left as it is. The state
// machine must hold nothing of the group.
func (d *Driver) AddGroup(ctx context.Context, group uint64, peers []uint64) error {
	return d.call(ctx, func(reply chan<- error) {
		if d.groups[group] != nil {
			reply <- nil
			return
		}
		if applied, err := d.sm.Applied(group); err != nil || applied > 0 {
			reply <- fmt.Errorf("raft: add group %d: the state machine holds its state up to index %d (%v): remove it first", group, applied, err)
			return
		}
		gl := &groupLog{}
		if len(peers) > 0 {
			gl.snap = &pb.SnapshotMetadata{Index: new(uint64(bootstrapIndex)), Term: new(uint64(1)), ConfState: &pb.ConfState{Voters: peers}}
		}
		g, err := d.newGroup(group, gl)
		if err != nil {
			reply <- fmt.Errorf("raft: add group %d: %w", group, err)
			return
		}
		d.groups[group] = g
		d.log.addSnapshot(group, g.snap)
		d.afterWrite = append(d.afterWrite, reply)
		d.touch(g)
		d.publish(g)
	})
}

// RemoveGroup stops this node's replica of group and forgets it; the
// state machine's state of the group is left to the caller. It returns
// once the log holds the removal. Proposals waiting on the group fail
// with ErrUnknownGroup. It does not change the group's membership: that
// is RemoveReplica, on the leader.
func (d *Driver) RemoveGroup(ctx context.Context, group uint64) error {
	return d.call(ctx, func(reply chan<- error) {
		g := d.groups[group]
		if g == nil {
			reply <- ErrUnknownGroup
			return
		}
		remove := func() {
			d.dropGroup(g, ErrUnknownGroup)
			d.log.addRemove(group)
			d.afterWrite = append(d.afterWrite, reply)
		}
		if g.restoring != nil && !g.restored {
			// The state machine is writing the group's state: the caller
			// drops that state next, once the restore is done.
			g.afterRestore = append(g.afterRestore, remove)
			return
		}
		remove()
	})
}

// dropGroup forgets g, failing what waits on it with err.
func (d *Driver) dropGroup(g *group, err error) {
	g.removed = true
	g.failWaiting(err)
	delete(d.groups, g.id)
	d.unpublish(g.id)
}

// AddLearner makes node a learner of group, a replica that receives
// the entries and does not vote, and returns once the change is applied
// here. A new replica joins this way, then AddReplica makes it a voter
// once it has caught up: a voter added empty would count towards the
// quorum, and the group could commit nothing while it restores its
// snapshot and more voters than the quorum allows are down. As for
// AddReplica, only the leader takes it, node must have started an empty
// replica, and one membership change goes at a time.
func (d *Driver) AddLearner(ctx context.Context, group, node uint64) error {
	return d.changeReplicas(ctx, group, pb.ConfChangeAddLearnerNode, node)
}

// ErrBehind is the answer of AddReplica for a learner, and of
// TransferLeader for a voter, that does not keep up with the leader (it
// is behind, or has not answered lately): it may be asked again later.
var ErrBehind = errors.New("raft: the replica does not keep up with the leader")

// keepUpSlack is how many committed entries a replica that keeps up may
// lack: about what is in flight to a follower.
const keepUpSlack = 256

// keepsUp tells whether node, a replica of g, which this node leads,
// answered within the last election timeout and lacks at most
// keepUpSlack committed entries. Driver loop only.
func (d *Driver) keepsUp(g *group, node uint64) bool {
	st := g.rn.Status()
	pr, ok := st.Progress[node]
	return ok && pr.RecentActive && pr.State == tracker.StateReplicate && pr.Match+keepUpSlack >= st.HardState.GetCommit()
}

// AddReplica makes node a voter of group and returns once the change is
// applied here. Only the leader takes it (else *NotLeaderError). A
// learner becomes a voter once it keeps up (ErrBehind before); a
// node that is no replica yet must have started an empty replica
// (AddGroup without peers), joins as a voter at once and catches up from
// a snapshot (AddLearner first avoids counting it before). One membership
// change at a time: another one not yet applied makes this one fail with
// ErrDropped.
func (d *Driver) AddReplica(ctx context.Context, group, node uint64) error {
	return d.changeReplicas(ctx, group, pb.ConfChangeAddNode, node)
}

// RemoveReplica removes node from group's replicas and returns once the
// change is applied here. Only the leader takes it (else
// *NotLeaderError); a leader that removes itself steps down once the
// change is applied. The removed node forgets its replica if it applies
// the change; if it is gone or cut off, RemoveGroup on it does.
func (d *Driver) RemoveReplica(ctx context.Context, group, node uint64) error {
	return d.changeReplicas(ctx, group, pb.ConfChangeRemoveNode, node)
}

func (d *Driver) changeReplicas(ctx context.Context, group uint64, typ pb.ConfChangeType, node uint64) error {
	if node == 0 {
		return fmt.Errorf("raft: group %d: node 0 is no node", group)
	}
	return d.call(ctx, func(reply chan<- error) {
		g := d.groups[group]
		if g == nil {
			reply <- ErrUnknownGroup
			return
		}
		if typ == pb.ConfChangeAddLearnerNode && slices.Contains(g.cs.GetVoters(), node) {
			reply <- fmt.Errorf("raft: group %d: node %d is a voter already", group, node)
			return
		}
		propose := func() { d.proposeConfChange(g, typ, node, reply) }
		if g.solo() || g.waking {
			if err := d.wake(g, propose); err != nil {
				reply <- fmt.Errorf("raft: group %d: %w", group, err)
			}
			return
		}
		propose()
	})
}

// proposeConfChange proposes to g, led here, the change of node's
// membership, whose outcome goes to reply. Driver loop only.
func (d *Driver) proposeConfChange(g *group, typ pb.ConfChangeType, node uint64, reply chan<- error) {
	if st := g.rn.BasicStatus(); st.RaftState != raft.StateLeader {
		reply <- &NotLeaderError{Group: g.id, Leader: st.Lead}
		return
	}
	if typ == pb.ConfChangeAddNode && slices.Contains(g.cs.GetLearners(), node) && !d.keepsUp(g, node) {
		reply <- ErrBehind
		return
	}
	id := d.nextID()
	cc := &pb.ConfChangeV2{
		Changes: []*pb.ConfChangeSingle{{Type: typ.Enum(), NodeId: new(node)}},
		Context: binary.AppendUvarint(nil, id),
	}
	if err := g.rn.ProposeConfChange(cc); err != nil {
		reply <- ErrDropped
		return
	}
	g.proposed = append(g.proposed, &waiter{id: id, props: []*proposal{{group: g.id, done: func(err error) { reply <- err }}}})
	d.touch(g)
}

// KeepsUp tells whether node, a replica of group, which this node leads
// (else *NotLeaderError), answered within the last election timeout and
// lacks at most a few hundred committed entries. Ask it before
// TransferLeader: raft sends a transferee the entries it lacks and waits
// for it, taking no proposal meanwhile, up to an election timeout; for a
// replica cut off or down, that is a second without writes for nothing.
func (d *Driver) KeepsUp(ctx context.Context, group, node uint64) (bool, error) {
	var ok bool
	err := d.call(ctx, func(reply chan<- error) {
		g := d.groups[group]
		switch {
		case g == nil:
			reply <- ErrUnknownGroup
		case g.solo() || g.waking:
			ok = node == d.opts.NodeID
			reply <- nil
		case g.rn.BasicStatus().RaftState != raft.StateLeader:
			reply <- &NotLeaderError{Group: group, Leader: g.rn.BasicStatus().Lead}
		default:
			ok = d.keepsUp(g, node)
			reply <- nil
		}
	})
	return ok, err
}

// TransferLeader asks group's leader, this node, to hand leadership to
// node to, and returns once this node knows to leads. It returns
// *NotLeaderError on another replica. Raft gives up a transfer that has
// not ended within an election timeout; ctx bounds the wait.
func (d *Driver) TransferLeader(ctx context.Context, group, to uint64) error {
	err := d.call(ctx, func(reply chan<- error) {
		g := d.groups[group]
		if g == nil {
			reply <- ErrUnknownGroup
			return
		}
		if g.solo() || g.waking {
			if to == d.opts.NodeID {
				reply <- nil
			} else {
				reply <- fmt.Errorf("raft: group %d: node %d is not a voter", group, to)
			}
			return
		}
		st := g.rn.BasicStatus()
		if st.Lead == to {
			reply <- nil
			return
		}
		if !slices.Contains(g.cs.GetVoters(), to) {
			reply <- fmt.Errorf("raft: group %d: node %d is not a voter", group, to)
			return
		}
		if st.RaftState != raft.StateLeader {
			reply <- &NotLeaderError{Group: group, Leader: st.Lead}
			return
		}
		d.endLease(g) // to campaigns at once, votes granted within this lease
		g.rn.TransferLeader(to)
		d.touch(g)
		reply <- nil
	})
	if err != nil {
		return err
	}
	gone := false
	err = d.waitStatus(ctx, group, func(s Status, ok bool) bool {
		gone = !ok
		return !ok || s.Leader == to
	})
	if err == nil && gone {
		return ErrUnknownGroup
	}
	return err
}
