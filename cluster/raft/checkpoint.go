package raft

import (
	"fmt"
	"slices"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"go.etcd.io/raft/v3/tracker"
	"google.golang.org/protobuf/proto"
)

// checkpoint truncates the log without syncing the state machine: each
// group's durable point moves to the newest point the state machine has
// made durable of its own accord (advanceDurable), raft's log in memory
// drops the entries every replica has (a leader keeps at most
// CatchUpEntries for a follower behind), and a new segment starts with
// the durable points; the segments whose entries are all before them go.
// A follower that later needs an entry dropped from memory gets a
// snapshot instead.
func (d *Driver) checkpoint() error {
	start := time.Now()
	if err := d.advanceDurable(); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	for _, g := range d.groups {
		if err := d.compact(g); err != nil {
			return fmt.Errorf("checkpoint: group %d: %w", g.id, err)
		}
	}
	kept := len(d.log.kept)
	if err := d.log.rotate(d.fillCheckpoint, d.entriesDurable); err != nil {
		return fmt.Errorf("checkpoint: %w", err)
	}
	d.logger.Debug("raft: checkpoint", "segment", d.log.n, "took", time.Since(start), "kept", len(d.log.kept), "done_with", kept+1-len(d.log.kept))
	d.mu.Lock()
	d.stats.Checkpoints++
	d.mu.Unlock()
	return nil
}

// durablePoint is every group's applied point when the state machine
// called its state mark.
type durablePoint struct {
	mark uint64
	at   map[uint64]*pb.SnapshotMetadata
}

// advanceDurable asks the state machine how far its state is durable:
// each point taken at a mark it has made durable since becomes its
// groups' durable point. Then it takes a point of what is applied now.
func (d *Driver) advanceDurable() error {
	durable, newest, err := d.sm.Flushed()
	if err != nil {
		return fmt.Errorf("the state machine's durable state: %w", err)
	}
	k := 0
	for ; k < len(d.points) && d.points[k].mark < durable; k++ {
		for id, m := range d.points[k].at {
			if g := d.groups[id]; g != nil && m.GetIndex() > g.durable.GetIndex() {
				g.durable = m
			}
		}
	}
	d.points = slices.Delete(d.points, 0, k)
	at := map[uint64]*pb.SnapshotMetadata{}
	for id, g := range d.groups {
		if g.applied <= g.durable.GetIndex() {
			continue
		}
		if term, err := g.ms.Term(g.applied); err == nil {
			at[id] = &pb.SnapshotMetadata{Index: new(g.applied), Term: new(term), ConfState: proto.CloneOf(g.cs)}
		}
	}
	if len(at) > 0 {
		d.points = append(d.points, durablePoint{mark: newest, at: at})
	}
	return nil
}

// entriesDurable tells whether a segment whose highest entry index of
// each group is last holds no entry after its group's durable point: a
// group gone needs none.
func (d *Driver) entriesDurable(last map[uint64]uint64) bool {
	for id, index := range last {
		if g := d.groups[id]; g != nil && index > g.durable.GetIndex() {
			return false
		}
	}
	return true
}

// compact drops g's entries up to the point every replica has (on a
// leader; elsewhere up to the applied index), keeping CatchUpEntries
// before the applied index at most.
func (d *Driver) compact(g *group) error {
	c := g.applied
	if !g.solo() && g.rn.BasicStatus().RaftState == raft.StateLeader {
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

// fillCheckpoint queues every group's durable point and hard state; the
// entries after the point are in the segments kept.
func (d *Driver) fillCheckpoint() error {
	for _, g := range d.sortedGroups() {
		d.log.addSnapshot(g.id, g.durable)
		if g.hs != nil {
			d.log.addHardState(g.id, g.hs)
		}
	}
	return nil
}
