package raft

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
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

// IsLocalLog reports whether dir holds a log OpenLocal wrote: groups
// whose only voter is node 1, as a node without a cluster runs them. It
// reads the log's segments and changes nothing; a dir that does not
// exist holds none.
func IsLocalLog(dir string) (bool, error) {
	names, err := filepath.Glob(filepath.Join(dir, "*.log"))
	if err != nil || len(names) == 0 {
		return false, err
	}
	var ns []uint64
	for _, name := range names {
		if n, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".log"), 10, 64); err == nil {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	groups := map[uint64]*groupLog{}
	for _, n := range ns {
		data, err := os.ReadFile(filepath.Join(dir, segmentName(n, ".log")))
		if err != nil {
			return false, err
		}
		if _, err := readSegment(n, data, groups); err != nil {
			return false, fmt.Errorf("raft log %s: %w", segmentName(n, ".log"), err)
		}
	}
	local := false
	for _, g := range groups {
		if g.snap == nil {
			return false, nil // a replica waiting for a snapshot: a cluster's
		}
		if !slices.Equal(g.snap.GetConfState().GetVoters(), []uint64{1}) {
			return false, nil
		}
		local = true
	}
	return local, nil
}
