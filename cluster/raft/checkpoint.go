package raft

import (
	"fmt"
	"math"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
)

// checkpoint truncates the log: it makes the state machine durable, so
// that the applied state stands for every entry applied, drops from each
// group's log the entries every replica has (a leader keeps at most
// CatchUpEntries for a follower behind), and starts a new segment with
// what remains. A follower that later needs a dropped entry gets a
// snapshot instead.
func (d *Driver) checkpoint() error {
	if err := d.sm.Sync(); err != nil {
		return fmt.Errorf("checkpoint: sync the state machine: %w", err)
	}
	for _, g := range d.groups {
		if err := d.compact(g); err != nil {
			return fmt.Errorf("checkpoint: group %d: %w", g.id, err)
		}
	}
	if err := d.log.rotate(d.fillCheckpoint); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	d.mu.Lock()
	d.stats.Checkpoints++
	d.mu.Unlock()
	return nil
}

// compact drops g's entries up to the point every replica has (on a
// leader; elsewhere up to the applied index), keeping CatchUpEntries
// before the applied index at most.
func (d *Driver) compact(g *group) error {
	c := g.applied
	if g.rn.BasicStatus().RaftState == raft.StateLeader {
		g.rn.WithProgress(func(id uint64, _ raft.ProgressType, pr tracker.Progress) {
			if id != d.opts.NodeID {
				c = min(c, pr.Match)
			}
		})
		if g.applied > d.opts.CatchUpEntries {
			c = max(c, g.applied-d.opts.CatchUpEntries)
		}
	}
	if c <= g.snap.GetIndex() {
		return nil
	}
	term, err := g.ms.Term(c)
	if err != nil {
		return err
	}
	cs := g.snap.GetConfState()
	keep := g.confs[:0]
	for _, ca := range g.confs {
		if ca.index <= c {
			cs = ca.cs
		} else {
			keep = append(keep, ca)
		}
	}
	clear(g.confs[len(keep):])
	g.confs = keep
	if err := g.ms.Compact(c); err != nil {
		return err
	}
	g.snap = &pb.SnapshotMetadata{Index: new(c), Term: new(term), ConfState: cs}
	return nil
}

// fillCheckpoint queues every group's state: its snapshot point, the
// entries after it and its hard state.
func (d *Driver) fillCheckpoint() error {
	for _, g := range d.sortedGroups() {
		d.log.addSnapshot(g.id, g.snap)
		first := g.snap.GetIndex() + 1
		last, err := g.ms.LastIndex()
		if err != nil {
			return err
		}
		if last >= first {
			ents, err := g.ms.Entries(first, last+1, math.MaxUint64)
			if err != nil {
				return fmt.Errorf("group %d: entries %d-%d: %w", g.id, first, last, err)
			}
			d.log.addEntries(g.id, ents)
		}
		if g.hs != nil {
			d.log.addHardState(g.id, g.hs)
		}
	}
	return nil
}
