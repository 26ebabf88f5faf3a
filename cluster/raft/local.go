package raft

import (
	"context"
	"errors"
	"fmt"
	"sync"
)

// OpenLocal opens a Driver whose groups have this node as their only
// voter, as a node without a cluster runs: no peers, opts.NodeID 1 unless
// set, and every group of groups added if its log lacks it. It returns
// once every group leads and has applied what its log holds (after a
// crash, the entries after the state machine's applied index).
func OpenLocal(ctx context.Context, opts Options, sm StateMachine, groups []uint64) (*Driver, error) {
	if opts.NodeID == 0 {
		opts.NodeID = 1
	}
	d, err := Open(opts, sm, NoPeers{})
	if err != nil {
		return nil, err
	}
	errs := make([]error, len(groups))
	var wg sync.WaitGroup
	for i, g := range groups {
		wg.Go(func() {
			err := d.AddGroup(ctx, g, []uint64{opts.NodeID})
			if err == nil {
				_, err = d.WaitLeader(ctx, g)
			}
			if err == nil {
				err = d.Propose(ctx, g, nil) // applied: so is every entry before it
			}
			if err != nil {
				errs[i] = fmt.Errorf("group %d: %w", g, err)
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return nil, errors.Join(err, d.Close())
	}
	return d, nil
}

// NoPeers is the Transport of a node whose groups have no other replica:
// it sends nothing.
type NoPeers struct{}

// Start does nothing: no peer sends to this node.
func (NoPeers) Start(Receiver) error { return nil }

// Send refuses: there is no peer.
func (NoPeers) Send(to uint64, _ []Envelope) error {
	return fmt.Errorf("raft: no peer %d: the node has no other replica", to)
}

// Close does nothing.
func (NoPeers) Close() error { return nil }
