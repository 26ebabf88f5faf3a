package storage

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"persona/cluster/raft"
)

// raftPath carries a store's rounds on a raft group of one, as
// internal/node does with storage.commit_path: raft.
type raftPath struct {
	s *Store
	d *raft.Driver
}

const raftGroup = 1

func (p *raftPath) Commit(round []byte) error {
	return p.d.Propose(context.Background(), raftGroup, round)
}

func (p *raftPath) Applied(uint64) (uint64, error) { return p.s.AppliedIndex() }

func (p *raftPath) Apply(updates []raft.Update) error {
	for _, u := range updates {
		if err := p.s.ApplyCommitted(u.Index, u.Commands); err != nil {
			return err
		}
	}
	return nil
}

func (p *raftPath) Sync() error { return p.s.SyncApplied() }

func (p *raftPath) Snapshot(uint64) ([]byte, error) {
	return nil, errors.New("a group of one sends no snapshot")
}

func (p *raftPath) Restore(uint64, uint64, []byte) error {
	return errors.New("a group of one takes no snapshot")
}

func (p *raftPath) Close() error {
	if p.d == nil {
		return nil
	}
	return p.d.Close()
}

// noPeers is the transport of a group of one.
type noPeers struct{}

func (noPeers) Start(raft.Receiver) error { return nil }
func (noPeers) Send(to uint64, _ []raft.Envelope) error {
	return fmt.Errorf("no peer %d in a group of one", to)
}
func (noPeers) Close() error { return nil }

// opener opens a store as a test wants it: Open, or openOnRaft.
type opener func(t *testing.T, dir string, opts Options) (*Store, error)

func openPlain(_ *testing.T, dir string, opts Options) (*Store, error) { return Open(dir, opts) }

// openOnRaft opens the store in dir with its rounds on a raft group of
// one, whose log is in dir/raft (a temporary directory for a store in
// memory), and waits until the group has applied what its log holds.
func openOnRaft(t *testing.T, dir string, opts Options) (*Store, error) {
	p := &raftPath{}
	opts.CommitPath = p
	s, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	p.s = s
	raftDir := filepath.Join(dir, "raft")
	if dir == "" {
		raftDir = t.TempDir()
	}
	p.d, err = raft.Open(raft.Options{NodeID: 1, Dir: raftDir}, p, noPeers{})
	if err != nil {
		s.Close()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.d.AddGroup(ctx, raftGroup, []uint64{1}); err != nil {
		s.Close()
		return nil, err
	}
	if _, err := p.d.WaitLeader(ctx, raftGroup); err != nil {
		s.Close()
		return nil, err
	}
	if err := p.d.Propose(ctx, raftGroup, nil); err != nil { // applied: so is all before it
		s.Close()
		return nil, err
	}
	return s, nil
}

// TestCommitPathKeepsTheGuarantees runs the committer's tests with the
// rounds on a raft group of one: the same writes survive, in the same
// order, urgent ones first.
func TestCommitPathKeepsTheGuarantees(t *testing.T) {
	t.Parallel()
	for name, test := range map[string]func(*testing.T, opener){
		"CommitSurvivesReopen":                   testCommitSurvivesReopen,
		"GroupCommitManyWriters":                 testGroupCommitManyWriters,
		"BatchLargerThanOneTxnStaysWhole":        testBatchLargerThanOneTxnStaysWhole,
		"CommitAfterClose":                       testCommitAfterClose,
		"UrgentBatchSkipsTheQueue":               testUrgentBatchSkipsTheQueue,
		"BackgroundRoundsStaySmallAfterUrgent":   testBackgroundRoundsStaySmallAfterUrgent,
		"AcknowledgedWritesSurviveLosingBadgers": testAcknowledgedWritesSurviveLosingBadgersLog,
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			test(t, openOnRaft)
		})
	}
}
