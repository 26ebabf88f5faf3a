package raft

import (
	"fmt"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// A snapshot is a group's whole state: reading it on the leader and
// restoring it on a follower take time in proportion to it (a partition
// of 16 MB: about 90 ms to read, 570 ms to restore). Both run outside the
// driver loop, so that the node's other groups go on meanwhile: a leader
// fixes the state in its loop and reads it on a goroutine, telling raft
// to ask again until it is read; a follower hands the snapshot to the
// state machine on a goroutine and holds the group's Ready, with its
// entries, hard state and messages, until the state machine has it.

// snapshotKeep is how many ticks a snapshot read for a follower that
// raft did not take since is kept: the follower caught up or left.
const snapshotKeep = 600

// groupStorage is a group's MemoryStorage whose snapshot is the state
// machine's state of the group.
type groupStorage struct {
	*raft.MemoryStorage
	d *Driver
	g *group
}

// InitialState returns the hard state and the membership as of the
// group's applied index: a RawNode built again for a group driven alone
// starts there, not at the MemoryStorage's snapshot.
func (s groupStorage) InitialState() (*pb.HardState, *pb.ConfState, error) {
	hs, _, err := s.MemoryStorage.InitialState()
	return hs, proto.CloneOf(s.g.cs), err
}

// Snapshot returns the group's state read for a follower, or starts
// reading it and tells raft to ask again. Raft asks from the driver loop,
// when a follower needs entries the log no longer has, and asks again at
// the follower's next heartbeat answer.
func (s groupStorage) Snapshot() (*pb.Snapshot, error) {
	d, g := s.d, s.g
	if snap := g.built; snap != nil {
		g.built = nil
		if first, err := g.ms.FirstIndex(); err == nil && snap.GetMetadata().GetIndex()+1 >= first {
			return snap, nil
		}
		// The log dropped the entries that follow it: read a newer one.
	}
	if g.building {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	if g.applied == 0 || g.applied < g.smApplied {
		return nil, raft.ErrSnapshotTemporarilyUnavailable // still applying what it had before it opened
	}
	term, err := g.ms.Term(g.applied)
	if err != nil {
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	read, err := d.sm.Snapshot(g.id)
	if err != nil {
		d.logger.Error("raft: snapshot of the state machine", "group", g.id, "err", err)
		return nil, raft.ErrSnapshotTemporarilyUnavailable
	}
	meta := &pb.SnapshotMetadata{Index: new(g.applied), Term: new(term), ConfState: proto.CloneOf(g.cs)}
	g.building = true
	d.background(func() func() {
		data, err := read()
		return func() {
			g.building = false
			if err != nil {
				d.logger.Error("raft: read a snapshot of the state machine", "group", g.id, "index", meta.GetIndex(), "err", err)
				return
			}
			g.built, g.builtTick = &pb.Snapshot{Data: data, Metadata: meta}, d.ticks
		}
	})
	return nil, raft.ErrSnapshotTemporarilyUnavailable
}

// restore hands the snapshot of rd, g's Ready, to the state machine on a
// goroutine; the round takes rd once it is restored, and takes no other
// Ready of g meanwhile.
func (d *Driver) restore(g *group, rd raft.Ready) {
	g.restoring = &rd
	m := rd.Snapshot.GetMetadata()
	d.background(func() func() {
		err := d.sm.Restore(g.id, m.GetIndex(), rd.Snapshot.GetData())
		return func() {
			if err != nil {
				d.bgErr = fmt.Errorf("group %d: restore the snapshot at %d: %w", g.id, m.GetIndex(), err)
			}
			g.restored = true
			d.touch(g)
			for _, fn := range g.afterRestore {
				fn()
			}
			g.afterRestore = nil
		}
	})
}

// background runs work on a goroutine, then the function it returns in
// the driver loop, unless the loop ended meanwhile. Close waits for it.
func (d *Driver) background(work func() (then func())) {
	d.bg.Add(1)
	go func() {
		defer d.bg.Done()
		then := work()
		select {
		case d.ops <- then:
		case <-d.done:
		}
	}()
}

// forgetSnapshots drops the snapshots read for followers that raft has
// not taken for snapshotKeep ticks.
func (d *Driver) forgetSnapshots() {
	for _, g := range d.groups {
		if g.built != nil && d.ticks-g.builtTick > snapshotKeep {
			g.built = nil
		}
	}
}
