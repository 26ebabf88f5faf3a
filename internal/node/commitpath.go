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

// commitGroup is the raft group that carries the store's rounds on
// storage.commit_path: raft.
const commitGroup = 1

// raftPath carries the store's rounds on a raft group whose only member
// is this node: storage.CommitPath to the store, raft.StateMachine to the
// driver. The store's Close closes the driver.
type raftPath struct {
	s *storage.Store
	d *raft.Driver
}

// Commit proposes round and returns once the group applied it.
func (p *raftPath) Commit(round []byte) error {
	return p.d.Propose(context.Background(), commitGroup, round)
}

// Applied returns the store's applied index.
func (p *raftPath) Applied(uint64) (uint64, error) { return p.s.AppliedIndex() }

// Apply writes the committed rounds to the store.
func (p *raftPath) Apply(updates []raft.Update) error {
	for _, u := range updates {
		if err := p.s.ApplyCommitted(u.Index, u.Commands); err != nil {
			return err
		}
	}
	return nil
}

// Sync makes the applied rounds durable in the store.
func (p *raftPath) Sync() error { return p.s.SyncApplied() }

// Snapshot refuses: a group of one has no follower to send it to.
func (p *raftPath) Snapshot(uint64) ([]byte, error) {
	return nil, errors.New("a group of one sends no snapshot")
}

// Restore refuses: a group of one has no leader to take one from.
func (p *raftPath) Restore(uint64, uint64, []byte) error {
	return errors.New("a group of one takes no snapshot")
}

// Close closes the driver.
func (p *raftPath) Close() error {
	if p.d == nil {
		return nil
	}
	return p.d.Close()
}

// noPeers is the transport of a group of one.
type noPeers struct{}

// Start has nothing to receive.
func (noPeers) Start(raft.Receiver) error { return nil }

// Send refuses: there is no other node.
func (noPeers) Send(to uint64, _ []raft.Envelope) error {
	return fmt.Errorf("no peer %d in a group of one", to)
}

// Close has nothing to stop.
func (noPeers) Close() error { return nil }

// openStore opens the node's store in dataDir/db, on the raft commit
// path if onRaft, its log in dataDir/raft; it returns once the group has
// applied what its log holds.
func openStore(dataDir string, opts storage.Options, onRaft bool, log *slog.Logger) (*storage.Store, error) {
	if !onRaft {
		return storage.Open(filepath.Join(dataDir, "db"), opts)
	}
	p := &raftPath{}
	opts.CommitPath = p
	s, err := storage.Open(filepath.Join(dataDir, "db"), opts)
	if err != nil {
		return nil, err
	}
	p.s = s
	if p.d, err = raft.Open(raft.Options{NodeID: 1, Dir: filepath.Join(dataDir, "raft"), Logger: log}, p, noPeers{}); err != nil {
		_ = s.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	err = p.d.AddGroup(ctx, commitGroup, []uint64{1})
	if err == nil {
		_, err = p.d.WaitLeader(ctx, commitGroup)
	}
	if err == nil {
		err = p.d.Propose(ctx, commitGroup, nil) // applied: so is every entry before it
	}
	if err != nil {
		_ = s.Close()
		return nil, fmt.Errorf("open the raft commit path: %w", err)
	}
	return s, nil
}
