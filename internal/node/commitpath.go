package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"persona/cluster/raft"
	"persona/storage"
)

// openStore opens the node's store in dataDir/db, on the raft commit
// path if onRaft: one raft group of one per partition (partitions of
// them) and one for the node's own keys, their log in dataDir/raft. It
// returns once every group has applied what its log holds.
func openStore(dataDir string, opts storage.Options, onRaft bool, partitions int, log *slog.Logger) (*storage.Store, error) {
	if !onRaft {
		return storage.Open(filepath.Join(dataDir, "db"), opts)
	}
	path := &raftPath{partitions: partitions}
	opts.CommitPath = path
	s, err := storage.Open(filepath.Join(dataDir, "db"), opts)
	if err != nil {
		return nil, err
	}
	path.s = s
	groups := []uint64{nodeGroup}
	for p := range partitions {
		groups = append(groups, partitionGroup(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if path.d, err = raft.OpenLocal(ctx, raft.Options{Dir: filepath.Join(dataDir, "raft"), Logger: log, PrewriteSegments: true}, path, groups); err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open the raft commit path: %w", err)
	}
	return s, nil
}

// nodeGroup is the raft group of storage.NodeRange: the node's own keys.
// It is the group that carried every key when one group did, so its log
// applies as before.
const nodeGroup = 1

// partitionGroup is the raft group of partition p.
func partitionGroup(p int) uint64 { return uint64(p) + nodeGroup + 1 }

// raftPath is the store's storage.CommitPath on a local raft driver, and
// the driver's raft.StateMachine on the store: each key range is a group.
type raftPath struct {
	partitions int
	s          *storage.Store
	d          *raft.Driver
}

// Propose proposes record to the group of key range rng. A record raft
// did not apply because this node does not lead the group (any more) is
// done with storage.ErrNotApplied.
func (r *raftPath) Propose(rng int, record []byte, done func(error)) {
	if rng != storage.NodeRange && (rng < 0 || rng >= r.partitions) {
		done(fmt.Errorf("raft commit path: no group for partition %d of %d", rng, r.partitions))
		return
	}
	g := uint64(nodeGroup)
	if rng != storage.NodeRange {
		g = partitionGroup(rng)
	}
	r.d.ProposeAsync(g, record, func(err error) {
		var notLeader *raft.NotLeaderError
		if errors.Is(err, raft.ErrDropped) || errors.As(err, &notLeader) {
			err = fmt.Errorf("%w: %w", storage.ErrNotApplied, err)
		}
		done(err)
	})
}

// rangeOf returns the key range of group g.
func rangeOf(g uint64) int {
	if g == nodeGroup {
		return storage.NodeRange
	}
	return int(g - nodeGroup - 1)
}

// Applied returns the store's applied index of group's key range.
func (r *raftPath) Applied(group uint64) (uint64, error) { return r.s.AppliedIndex(rangeOf(group)) }

// Apply hands the committed records of every group to the store at once.
func (r *raftPath) Apply(updates []raft.Update) error {
	applied := make([]storage.Applied, len(updates))
	for i, u := range updates {
		applied[i] = storage.Applied{Range: rangeOf(u.Group), Index: u.Index, Records: u.Commands}
	}
	return r.s.ApplyCommitted(applied)
}

// Flushed tells how far the applied records are durable in the store.
func (r *raftPath) Flushed() (durable, newest uint64, err error) { return r.s.Flushed() }

// Snapshot fixes a partition's key range to read; the node's own group,
// which no other node holds, has none to give.
func (r *raftPath) Snapshot(g uint64) (func() ([]byte, error), error) {
	if g == nodeGroup {
		return nil, errors.New("the node's own group sends no snapshot")
	}
	return r.s.ExportPartition(rangeOf(g)), nil
}

// Restore replaces a partition's key range with a snapshot of its group's
// leader.
func (r *raftPath) Restore(g, index uint64, data []byte) error {
	if g == nodeGroup {
		return errors.New("the node's own group takes no snapshot")
	}
	return r.s.RestorePartition(rangeOf(g), index, data)
}

// Close closes the driver, if it was opened; the store calls it once its
// last record is done.
func (r *raftPath) Close() error {
	if r.d == nil {
		return nil
	}
	return r.d.Close()
}
