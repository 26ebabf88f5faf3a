package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
)

// Applier is a store whose writes a GroupOfOne carries: it applies the
// committed commands at an index and keeps that index with them
// (persona's storage.Store on storage.commit_path: raft).
type Applier interface {
	AppliedIndex() (uint64, error)
	ApplyCommitted(index uint64, commands [][]byte) error
	SyncApplied() error
}

// oneGroup is the group a GroupOfOne proposes to.
const oneGroup = 1

// GroupOfOne carries an Applier's writes on a raft group whose only
// member is this node: a node without a cluster takes the cluster's write
// path. Give it to the store as its commit path, open the store, then
// Start it on the store; Close closes the driver.
type GroupOfOne struct {
	a Applier
	d *Driver
}

// Start opens the driver with its log in dir, makes the group and returns
// once the group has applied what its log holds.
func (g *GroupOfOne) Start(ctx context.Context, dir string, a Applier, log *slog.Logger) error {
	g.a = a
	d, err := Open(Options{NodeID: 1, Dir: dir, Logger: log}, g, noPeers{})
	if err != nil {
		return err
	}
	g.d = d
	err = d.AddGroup(ctx, oneGroup, []uint64{1})
	if err == nil {
		_, err = d.WaitLeader(ctx, oneGroup)
	}
	if err == nil {
		err = d.Propose(ctx, oneGroup, nil) // applied: so is every entry before it
	}
	if err != nil {
		return fmt.Errorf("a raft group of one: %w", err)
	}
	return nil
}

// Commit proposes round and returns once the group applied it.
func (g *GroupOfOne) Commit(round []byte) error {
	return g.d.Propose(context.Background(), oneGroup, round)
}

// Applied returns the Applier's applied index.
func (g *GroupOfOne) Applied(uint64) (uint64, error) { return g.a.AppliedIndex() }

// Apply hands the committed commands to the Applier.
func (g *GroupOfOne) Apply(updates []Update) error {
	for _, u := range updates {
		if err := g.a.ApplyCommitted(u.Index, u.Commands); err != nil {
			return err
		}
	}
	return nil
}

// Sync makes the applied commands durable in the Applier.
func (g *GroupOfOne) Sync() error { return g.a.SyncApplied() }

// Snapshot refuses: a group of one has no follower to send it to.
func (g *GroupOfOne) Snapshot(uint64) ([]byte, error) {
	return nil, errors.New("a group of one sends no snapshot")
}

// Restore refuses: a group of one has no leader to take one from.
func (g *GroupOfOne) Restore(uint64, uint64, []byte) error {
	return errors.New("a group of one takes no snapshot")
}

// Close closes the driver, if Start opened it.
func (g *GroupOfOne) Close() error {
	if g.d == nil {
		return nil
	}
	return g.d.Close()
}

// noPeers is the transport of a group of one.
type noPeers struct{}

func (noPeers) Start(Receiver) error { return nil }

func (noPeers) Send(to uint64, _ []Envelope) error {
	return fmt.Errorf("no peer %d in a group of one", to)
}

func (noPeers) Close() error { return nil }
