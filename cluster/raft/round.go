package raft

import (
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// round handles the Ready of every group touched since the last round:
// the committed entries that earlier rounds made durable, applied in one
// call (their proposers need not wait for this round's sync); the
// messages of the groups this node leads, one batch per peer; the
// snapshots restored since (snapshot.go), every group's entries and hard
// state written to the log, synced once if raft asks for durability;
// then the other messages; then the other committed entries, applied in
// one call. An error is fatal: the log or the state machine failed.
func (d *Driver) round() error {
	if d.bgErr != nil {
		return d.bgErr
	}
	rs := d.readies[:0]
	for _, g := range d.touched {
		g.touched = false
		switch {
		case g.removed:
		case g.solo():
			if rd, ok := d.soloReady(g); ok {
				rs = append(rs, ready{g: g, rd: rd})
			}
		case g.restoring != nil: // its Ready waits for the restore (snapshot.go)
			if g.restored {
				rs = append(rs, ready{g: g, rd: *g.restoring})
				g.restoring, g.restored = nil, false
			}
		case g.rn.HasReady():
			rd := g.rn.Ready()
			d.confirmed(g, &rd)
			if !raft.IsEmptySnap(rd.Snapshot) {
				d.restore(g, rd)
				continue
			}
			rs = append(rs, ready{g: g, rd: rd, lead: g.rn.BasicStatus().RaftState == raft.StateLeader})
		}
	}
	clear(d.touched)
	d.touched = d.touched[:0]
	defer func() { clear(rs); d.readies = rs[:0] }()
	if len(rs) == 0 && !d.log.pending() {
		return nil
	}
	if len(rs) > 0 && !slices.ContainsFunc(rs, func(r ready) bool { return !r.g.solo() }) {
		return d.soloRound(rs)
	}

	for i := range rs {
		rs[i].early = rs[i].stableCommits()
	}
	if err := d.apply(rs, true); err != nil {
		return err
	}
	// A leader's messages go before its log write (the raft thesis, 10.2.1;
	// etcd does the same): its followers append while it syncs, and an
	// entry commits once a quorum, the leader among it, has it durable.
	unreachable := d.send(rs, true)
	if err := d.persist(rs); err != nil {
		return err
	}
	unreachable = append(unreachable, d.send(rs, false)...)
	if err := d.apply(rs, false); err != nil {
		return err
	}
	for _, r := range rs {
		if r.g.solo() {
			continue
		}
		r.g.rn.Advance(r.rd)
		if r.g.rn.HasReady() {
			d.touch(r.g) // what Advance stepped (its own votes and appends) made more work
		}
		for _, m := range r.rd.Messages {
			if m.GetType() == pb.MsgSnap {
				// Queued to be written: once it is, the follower has it
				// (a lost one shows as a refused append, and raft sends
				// the snapshot again).
				r.g.rn.ReportSnapshot(m.GetTo(), raft.SnapshotFinish)
			}
		}
	}
	for _, in := range unreachable {
		d.receive(in)
	}
	for _, r := range rs {
		if r.g.removed {
			d.dropGroup(r.g, ErrUnknownGroup)
			d.log.addRemove(r.g.id) // written with the next round
			continue
		}
		d.publish(r.g)
		d.afterRound(r.g)
	}
	return nil
}

// persist makes the round's snapshots, entries and hard states durable,
// then hands them to the groups' MemoryStorage.
func (d *Driver) persist(rs []ready) error {
	sync := len(d.afterWrite) > 0
	entries := 0
	for _, r := range rs {
		g, rd := r.g, r.rd
		if !raft.IsEmptySnap(rd.Snapshot) { // restored already (snapshot.go)
			d.log.addSnapshot(g.id, rd.Snapshot.GetMetadata())
			sync = true
		}
		d.log.addEntries(g.id, rd.Entries)
		entries += len(rd.Entries)
		if rd.HardState != nil {
			d.log.addHardState(g.id, rd.HardState)
		}
		sync = sync || rd.MustSync
	}
	wrote := d.log.pending()
	if err := d.log.write(sync); err != nil {
		return fmt.Errorf("write the raft log: %w", err)
	}
	d.written(wrote, sync, entries)

	for _, r := range rs {
		g, rd := r.g, r.rd
		if !raft.IsEmptySnap(rd.Snapshot) {
			m := rd.Snapshot.GetMetadata()
			if err := g.ms.ApplySnapshot(&pb.Snapshot{Metadata: m}); err != nil {
				return fmt.Errorf("group %d: %w", g.id, err)
			}
			g.snap, g.durable, g.cs, g.confs = m, m, m.GetConfState(), nil
			g.applied, g.smApplied = m.GetIndex(), m.GetIndex() // the state is the snapshot's now
			g.settleSnapshot(m.GetIndex())
			d.mu.Lock()
			d.stats.SnapshotsRestored++
			d.mu.Unlock()
		}
		if err := g.ms.Append(rd.Entries); err != nil {
			return fmt.Errorf("group %d: %w", g.id, err)
		}
		if rd.HardState != nil {
			g.hs = rd.HardState
			if err := g.ms.SetHardState(rd.HardState); err != nil {
				return err
			}
		}
		g.dropOverwritten(rd.Entries)
		d.placeProposed(g, rd.Entries)
	}
	return nil
}

// written tells the calls waiting for the round's log write, and counts
// it: wrote, whether anything was written; synced, whether it was synced.
func (d *Driver) written(wrote, synced bool, entries int) {
	for _, ch := range d.afterWrite {
		ch <- nil
	}
	clear(d.afterWrite)
	d.afterWrite = d.afterWrite[:0]
	d.mu.Lock()
	if wrote {
		d.stats.Rounds++
	}
	if wrote && synced {
		d.stats.Syncs++
	}
	d.stats.Entries += uint64(entries)
	d.mu.Unlock()
}

// send hands the transport each peer's messages of the round's readies
// whose group this node leads (lead), or of the others, as one batch per
// peer. It returns the batches the transport could not take, to be
// reported once the groups have advanced.
func (d *Driver) send(rs []ready, lead bool) []inbound {
	out := map[uint64][]Envelope{}
	snaps := uint64(0)
	for _, r := range rs {
		if r.lead != lead {
			continue
		}
		for _, m := range r.rd.Messages {
			out[m.GetTo()] = append(out[m.GetTo()], Envelope{Group: r.g.id, Msg: m})
			if m.GetType() == pb.MsgSnap {
				snaps++
			}
		}
	}
	if snaps > 0 {
		d.mu.Lock()
		d.stats.SnapshotsSent += snaps
		d.mu.Unlock()
	}
	var failed []inbound
	for to, msgs := range out {
		if err := d.tr.Send(to, msgs); err != nil {
			failed = append(failed, inbound{peer: to, msgs: msgs, failed: true})
		}
	}
	return failed
}

// stableCommits tells whether every committed entry of r was in the log
// before this round, so that it may be applied before the round's write:
// no snapshot, and none of them among the entries to write. Membership
// changes are applied after the write: their callers look at the
// group's status next, which the end of the round, soon after, updates
// (a removed replica's group is dropped there).
func (r *ready) stableCommits() bool {
	ents := r.rd.CommittedEntries
	if len(ents) == 0 || !raft.IsEmptySnap(r.rd.Snapshot) {
		return false
	}
	for _, e := range ents {
		if e.GetType() != pb.EntryNormal {
			return false
		}
	}
	last := ents[len(ents)-1].GetIndex()
	if stable, err := r.g.ms.LastIndex(); err != nil || last > stable {
		return false
	}
	return len(r.rd.Entries) == 0 || r.rd.Entries[0].GetIndex() > last
}

// apply applies the committed entries of the readies whose early flag is
// early: membership changes to raft, commands to the state machine in one
// Apply, then tells the proposers.
func (d *Driver) apply(rs []ready, early bool) error {
	if err := d.applyState(rs, early); err != nil {
		return err
	}
	d.settleReadies(rs, early)
	return nil
}

// applyState applies the committed entries of the readies whose early
// flag is early, without telling their proposers.
func (d *Driver) applyState(rs []ready, early bool) error {
	updates := d.updates[:0]
	defer func() { clear(updates); d.updates = updates[:0] }()
	applied := 0
	for _, r := range rs {
		g, ents := r.g, r.rd.CommittedEntries
		if len(ents) == 0 || r.early != early {
			continue
		}
		applied += len(ents)
		var cmds [][]byte
		for _, e := range ents {
			switch e.GetType() {
			case pb.EntryNormal:
				if e.GetIndex() > g.smApplied && len(e.GetData()) > 0 {
					var err error
					if cmds, err = appendCommands(cmds, e.GetData()); err != nil {
						return fmt.Errorf("group %d: entry %d: %w", g.id, e.GetIndex(), err)
					}
				}
			case pb.EntryConfChange, pb.EntryConfChangeV2:
				if err := d.applyConfChange(g, e); err != nil {
					return fmt.Errorf("group %d: entry %d: %w", g.id, e.GetIndex(), err)
				}
			}
		}
		last := ents[len(ents)-1].GetIndex()
		g.applied = last
		if last > g.smApplied {
			updates = append(updates, Update{Group: g.id, Index: last, Commands: cmds})
		}
	}
	if len(updates) > 0 {
		if err := d.sm.Apply(updates); err != nil {
			return fmt.Errorf("apply: %w", err)
		}
	}
	d.mu.Lock()
	d.stats.Applied += uint64(applied)
	d.mu.Unlock()
	return nil
}

// settleReadies tells the proposers of the applied entries of the
// readies whose early flag is early.
func (d *Driver) settleReadies(rs []ready, early bool) {
	props, entries := 0, 0
	for _, r := range rs {
		if r.early != early {
			continue
		}
		props, entries = r.g.countOwn(r.rd.CommittedEntries, props, entries)
	}
	d.mu.Lock()
	d.stats.Proposals += uint64(props)
	d.stats.ProposalEntries += uint64(entries)
	d.mu.Unlock()
	for _, r := range rs {
		if r.early != early {
			continue
		}
		if r.g.confApplied && !r.g.removed {
			// The caller of the change reads the membership next: the
			// status shows it before the caller hears back.
			d.publish(r.g)
		}
		r.g.confApplied = false
		r.g.settle(r.rd.CommittedEntries)
	}
}

// countOwn adds to props and entries the proposals of g's waiters that
// ents applies, and their entries.
func (g *group) countOwn(ents []*pb.Entry, props, entries int) (int, int) {
	if len(ents) == 0 {
		return props, entries
	}
	first, last := ents[0].GetIndex(), ents[len(ents)-1].GetIndex()
	for _, w := range g.waiting {
		if w.index >= first && w.index <= last && ents[w.index-first].GetTerm() == w.term && len(w.props) > 0 && w.props[0].data != nil {
			props += len(w.props)
			entries++
		}
	}
	return props, entries
}

// applyConfChange applies a committed membership change to g's raft. A
// change that removes this node marks the group for removal at the end
// of the round.
func (d *Driver) applyConfChange(g *group, e *pb.Entry) error {
	var cc pb.ConfChangeI
	if e.GetType() == pb.EntryConfChange {
		var v1 pb.ConfChange
		if err := proto.Unmarshal(e.GetData(), &v1); err != nil {
			return err
		}
		cc = &v1
	} else {
		var v2 pb.ConfChangeV2
		if err := proto.Unmarshal(e.GetData(), &v2); err != nil {
			return err
		}
		cc = &v2
	}
	cs := g.rn.ApplyConfChange(cc)
	g.cs, g.confApplied = cs, true
	g.confs = append(g.confs, confAt{index: e.GetIndex(), cs: cs})
	self := d.opts.NodeID
	if !slices.Contains(cs.GetVoters(), self) && !slices.Contains(cs.GetLearners(), self) &&
		!slices.Contains(cs.GetVotersOutgoing(), self) && !slices.Contains(cs.GetLearnersNext(), self) {
		g.removed = true
	}
	return nil
}
