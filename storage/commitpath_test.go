package storage

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"persona/cluster/raft"
)

// opener opens a store as a test wants it: Open, or openOnRaft.
type opener func(t *testing.T, dir string, opts Options) (*Store, error)

func openPlain(_ *testing.T, dir string, opts Options) (*Store, error) { return Open(dir, opts) }

// openOnRaft opens the store in dir with its rounds on a raft group of
// one, whose log is in dir/raft (a temporary directory for a store in
// memory), and waits until the group has applied what its log holds.
func openOnRaft(t *testing.T, dir string, opts Options) (*Store, error) {
	g := &raft.GroupOfOne{}
	opts.CommitPath = g
	s, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	raftDir := filepath.Join(dir, "raft")
	if dir == "" {
		raftDir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := g.Start(ctx, raftDir, s, nil); err != nil {
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
