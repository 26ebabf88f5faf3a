package raft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// A group whose only replica is this node (one voter, no learners) needs
// no consensus: whatever its log holds durably is committed. Such a group
// is driven without its RawNode once it leads with everything applied: a
// round's proposals become entries of its term at once, written with the
// round's log frame and its hard state, and applied in the same round
// once the frame is durable. That is one round per batch, where raft
// takes two (one to write, one to apply what the Advance committed), and
// none of raft's copies. The log is the same as raft writes it, so a
// restart reads it back into a RawNode as always.
//
// A membership change wakes the group: a RawNode is built again from the
// group's MemoryStorage and campaigns, at a new term; the change is
// proposed once it leads with everything applied. Meanwhile the group's
// status stays that of its leader, this node (no other could have been
// elected), and proposals wait in its queue. A group that falls back to
// this node alone goes solo again.

// solo reports whether g is driven without its RawNode.
func (g *group) solo() bool { return g.rn == nil }

// soloConf reports whether cs makes self the group's only replica.
func soloConf(cs *pb.ConfState, self uint64) bool {
	v := cs.GetVoters()
	return len(v) == 1 && v[0] == self && len(cs.GetLearners()) == 0 &&
		len(cs.GetVotersOutgoing()) == 0 && len(cs.GetLearnersNext()) == 0
}

// settled reports whether g's RawNode leads with nothing to hand out and
// every entry of its log applied, and no proposal of this node pending.
func (d *Driver) settled(g *group) bool {
	if g.rn.HasReady() || len(g.proposed) > 0 || len(g.waiting) > 0 || len(g.queued) > 0 {
		return false
	}
	st := g.rn.BasicStatus()
	last, err := g.ms.LastIndex()
	return err == nil && st.RaftState == raft.StateLeader && st.LeadTransferee == raft.None &&
		st.GetCommit() == last && g.applied == last
}

// woken reports whether g's RawNode, built again, leads and has applied
// an entry of its term (the one it appended on taking the lead): raft
// takes a membership change then, whatever else is in flight.
func (d *Driver) woken(g *group) bool {
	st := g.rn.BasicStatus()
	term, err := g.ms.Term(g.applied)
	return err == nil && st.RaftState == raft.StateLeader && term == st.GetTerm()
}

// afterRound moves a group with a RawNode on after a round: a woken
// group proposes the changes that woke it, and a settled group of this
// node alone drops its RawNode. Driver loop only.
func (d *Driver) afterRound(g *group) {
	if g.solo() || g.removed {
		return
	}
	if g.waking {
		if !d.woken(g) {
			return
		}
		g.waking = false
		ops := g.onLead
		g.onLead = nil
		for _, op := range ops {
			op()
		}
		d.publish(g) // the term the campaign took
	}
	if !soloConf(g.cs, d.opts.NodeID) || !d.settled(g) {
		return
	}
	g.term = g.rn.BasicStatus().GetTerm()
	g.last, _ = g.ms.LastIndex()
	g.rn = nil
	g.confirms = g.confirms[:0]
}

// wake has op run once g, driven alone, can take a membership change:
// g's RawNode is built again from its MemoryStorage, at its applied
// index, and campaigns; op runs once it leads with everything applied.
// Driver loop only.
func (d *Driver) wake(g *group, op func()) error {
	if !g.solo() { // waking already
		g.onLead = append(g.onLead, op)
		return nil
	}
	rn, err := raft.NewRawNode(d.raftConfig(g, g.applied))
	if err != nil {
		return err
	}
	g.rn, g.waking, g.onLead = rn, true, []func(){op}
	_ = rn.Campaign()
	d.touch(g)
	return nil
}

// proposeSolo makes g's queued proposals entries of its term, in entries
// of at most MaxEntryBytes, to be written by the round. Driver loop only.
func (d *Driver) proposeSolo(g *group) {
	queued := g.queued
	for len(queued) > 0 {
		n := d.entryLen(queued)
		g.last++
		w := &waiter{id: d.nextID(), props: queued[:n:n], index: g.last, term: g.term}
		g.soloEnts = append(g.soloEnts, &pb.Entry{
			Term: new(g.term), Index: new(g.last), Type: pb.EntryNormal.Enum(), Data: encodeEntry(w.id, w.props),
		})
		g.waiting = append(g.waiting, w)
		queued = queued[n:]
	}
	g.queued = nil
}

// soloReady returns the Ready raft would hand out for g's new entries:
// written, synced, and then committed and applied in the same round.
func (d *Driver) soloReady(g *group) (raft.Ready, bool) {
	ents := g.soloEnts
	if len(ents) == 0 {
		return raft.Ready{}, false
	}
	g.soloEnts = nil
	hs := &pb.HardState{Term: new(g.term), Vote: new(g.hs.GetVote()), Commit: new(g.last)}
	return raft.Ready{HardState: hs, Entries: ents, CommittedEntries: ents, MustSync: true}, true
}

// soloRound is the round of groups all driven alone, ordered as the
// storage commit log orders its own: the round's entries are written,
// not synced, and applied; the proposals that came meanwhile are written
// and applied too; then one fdatasync makes all of them durable, and
// only then are their proposers told. A proposal that arrives while a
// round applies thus shares its sync rather than waiting for the next.
// The state machine may so hold entries a crash takes from the log; they
// were never acknowledged, and newGroup starts such a group's log after
// them.
func (d *Driver) soloRound(rs []ready) error {
	if err := d.persistSolo(rs); err != nil {
		return err
	}
	if err := d.applyState(rs, false); err != nil {
		return err
	}
	if late := d.takeLate(); len(late) > 0 {
		if err := d.persistSolo(late); err != nil {
			return err
		}
		if err := d.applyState(late, false); err != nil {
			return err
		}
		rs = append(rs, late...)
	}
	if err := d.log.sync(); err != nil {
		return fmt.Errorf("write the raft log: %w", err)
	}
	entries := 0
	for _, r := range rs {
		entries += len(r.rd.Entries)
	}
	d.written(true, true, entries)
	d.settleReadies(rs, false)
	for _, r := range rs {
		d.publish(r.g)
	}
	return nil
}

// persistSolo writes the entries and hard states of groups driven alone,
// without syncing, and hands them to the groups' MemoryStorage.
func (d *Driver) persistSolo(rs []ready) error {
	for _, r := range rs {
		d.log.addEntries(r.g.id, r.rd.Entries)
		d.log.addHardState(r.g.id, r.rd.HardState)
	}
	if err := d.log.write(false); err != nil {
		return fmt.Errorf("write the raft log: %w", err)
	}
	for _, r := range rs {
		if err := r.g.ms.Append(r.rd.Entries); err != nil {
			return fmt.Errorf("group %d: %w", r.g.id, err)
		}
		r.g.hs = r.rd.HardState
		if err := r.g.ms.SetHardState(r.rd.HardState); err != nil {
			return err
		}
	}
	return nil
}

// takeLate takes the proposals queued since the round began and returns
// the readies of those to groups driven alone; the others wait for the
// next round.
func (d *Driver) takeLate() []ready {
	var late []ready
drain:
	for range maxDrain {
		select {
		case p := <-d.props:
			d.queueProposal(p)
		default:
			break drain
		}
	}
	for _, g := range d.touched {
		if g.solo() && len(g.queued) > 0 {
			d.proposeSolo(g)
			if rd, ok := d.soloReady(g); ok {
				late = append(late, ready{g: g, rd: rd})
			}
		}
	}
	return late
}

// skipTo returns the log of a group driven alone whose state machine
// applied entries up to index, past ms's last: it starts at index, at
// the latest term the log knows, with hard state hs committed there.
func skipTo(ms *raft.MemoryStorage, index uint64, hs *pb.HardState, cs *pb.ConfState) (*raft.MemoryStorage, *pb.SnapshotMetadata, *pb.HardState, error) {
	last, err := ms.LastIndex()
	if err != nil {
		return nil, nil, nil, err
	}
	term, err := ms.Term(last)
	if err != nil {
		return nil, nil, nil, err
	}
	term = max(term, hs.GetTerm())
	snap := &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: cs}
	out := raft.NewMemoryStorage()
	if err := out.ApplySnapshot(&pb.Snapshot{Metadata: snap}); err != nil {
		return nil, nil, nil, err
	}
	hs = &pb.HardState{Term: new(term), Vote: new(hs.GetVote()), Commit: new(index)}
	return out, snap, hs, out.SetHardState(hs)
}
