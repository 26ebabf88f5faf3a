package storage

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/cluster/raft"
)

// opener opens a store as a test wants it: Open, or openOnRaft.
type opener func(t *testing.T, dir string, opts Options) (*Store, error)

func openPlain(_ *testing.T, dir string, opts Options) (*Store, error) { return Open(dir, opts) }

// testPartitions is how many partitions a store on raft has a group for
// in these tests, beside NodeRange's.
const testPartitions = 4

// openOnRaft opens the store in dir with its rounds on raft groups of
// one, one per key range, whose log is in dir/raft (a temporary
// directory for a store in memory), and waits until every group has
// applied what its log holds.
func openOnRaft(t *testing.T, dir string, opts Options) (*Store, error) {
	path := &raftPath{}
	opts.CommitPath = path
	s, err := Open(dir, opts)
	if err != nil {
		return nil, err
	}
	path.s = s
	raftDir := filepath.Join(dir, "raft")
	if dir == "" {
		raftDir = t.TempDir()
	}
	groups := []uint64{groupOf(NodeRange)}
	for p := range testPartitions {
		groups = append(groups, groupOf(p))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if path.d, err = raft.OpenLocal(ctx, raft.Options{Dir: raftDir}, path, groups); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// raftPath is the store's CommitPath on a local raft driver, and the
// driver's StateMachine on the store: key range r is group r+2.
type raftPath struct {
	d *raft.Driver
	s *Store
}

func groupOf(rng int) uint64 { return uint64(rng + 2) }

func (r *raftPath) Propose(rng int, rec []byte, done func(error)) {
	r.d.ProposeAsync(groupOf(rng), rec, done)
}

func (r *raftPath) Applied(group uint64) (uint64, error) { return r.s.AppliedIndex(int(group) - 2) }

func (r *raftPath) Apply(updates []raft.Update) error {
	applied := make([]Applied, len(updates))
	for i, u := range updates {
		applied[i] = Applied{Range: int(u.Group) - 2, Index: u.Index, Records: u.Commands}
	}
	return r.s.ApplyCommitted(applied)
}

func (r *raftPath) Flushed() (durable, newest uint64, err error) { return r.s.Flushed() }

func (r *raftPath) Snapshot(uint64) (func() ([]byte, error), error) {
	return nil, errors.New("no follower")
}

func (r *raftPath) Restore(uint64, uint64, []byte) error { return errors.New("no leader") }

func (r *raftPath) Close() error {
	if r.d == nil {
		return nil
	}
	return r.d.Close()
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

// TestBatchSpanningTwoRangesIsRefused: a batch with keys of two
// partitions, or of a partition and NodeRange, is refused whole with an
// error naming two of its keys, on either path.
func TestBatchSpanningTwoRangesIsRefused(t *testing.T) {
	t.Parallel()
	for name, opn := range map[string]opener{"log": openPlain, "raft": openOnRaft} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := openWith(t, opn, t.TempDir())
			defer s.Close()
			for _, keys := range [][2][]byte{
				{partKey(0, "a"), partKey(1, "b")},
				{partKey(2, "a"), Key("fe", "$event")},
				{Key("fo", "remote.example", "txn"), partKey(3, "c")},
			} {
				var b Batch
				b.Set(keys[0], []byte("v"))
				b.Set(keys[1], []byte("v"))
				err := s.CommitSync(&b)
				if !errors.Is(err, ErrSpansRanges) {
					t.Fatalf("batch of %q and %q: %v, want ErrSpansRanges", keys[0], keys[1], err)
				}
				for _, k := range keys {
					if !strings.Contains(err.Error(), fmt.Sprintf("%q", k)) {
						t.Errorf("the error %q does not name %q", err, k)
					}
					if _, err := s.Get(k); !errors.Is(err, ErrNotFound) {
						t.Errorf("%q of a refused batch: %v, want ErrNotFound", k, err)
					}
				}
			}
			var b Batch
			b.Set(partKey(1, "a"), []byte("v"))
			b.Delete(partKey(1, "b"))
			if err := s.CommitSync(&b); err != nil {
				t.Fatalf("a batch of one partition: %v", err)
			}
		})
	}
}

// TestEveryRangeRecoversItsWrites: writers to every key range at once,
// urgent and background, on raft; each range records its own applied
// index, and a copy of the store without badger's memtable and value logs
// (lost in a crash of the machine) opens with every acknowledged write of
// every range, each replayed from its own log.
func TestEveryRangeRecoversItsWrites(t *testing.T) {
	t.Parallel()
	live := t.TempDir()
	s, err := openOnRaft(t, live, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	const each = 300
	key := func(rng, i int) []byte {
		if rng == NodeRange {
			return Key("fo", "remote.example", "q", Uint64(uint64(i)))
		}
		return partKey(rng, "u", Uint64(uint64(i)))
	}
	var wg sync.WaitGroup
	for rng := NodeRange; rng < testPartitions; rng++ {
		wg.Go(func() {
			for i := range each * (rng + 2) { // ranges of different lengths
				var b Batch
				b.Set(key(rng, i), []byte(fmt.Sprint(i)))
				done := make(chan error, 1)
				if i%3 == 0 {
					s.CommitUrgent(&b, func(err error) { done <- err })
				} else {
					s.Commit(&b, func(err error) { done <- err })
				}
				if err := <-done; err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
	seen := map[uint64]int{}
	for rng := NodeRange; rng < testPartitions; rng++ {
		index, err := s.AppliedIndex(rng)
		if err != nil || index == 0 {
			t.Fatalf("range %d: applied index %d, %v", rng, index, err)
		}
		seen[index]++
	}
	if len(seen) == 1 {
		t.Errorf("every range applied up to the same index: %v", seen)
	}
	r, err := openOnRaft(t, copyWithoutBadgersLogs(t, live), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for rng := NodeRange; rng < testPartitions; rng++ {
		for i := range each * (rng + 2) {
			if v, err := r.Get(key(rng, i)); err != nil || string(v) != fmt.Sprint(i) {
				t.Fatalf("range %d, write %d after the crash: %q, %v", rng, i, v, err)
			}
		}
	}
}

// partKey is a key of partition p, as an actor of it builds one.
func partKey(p int, parts ...string) []byte {
	return Key(append([]string{"p", fmt.Sprintf("%04x", p)}, parts...)...)
}

// copyWithoutBadgersLogs copies the store in dir, but for badger's
// unsynced logs (memtable and value logs), as a crash of the machine may
// leave it, and returns the copy's directory.
func copyWithoutBadgersLogs(t *testing.T, dir string) string {
	t.Helper()
	lost := t.TempDir()
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(path, memExt) || strings.HasSuffix(path, ".vlog") {
			return err
		}
		rel, _ := filepath.Rel(dir, path)
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Dir(filepath.Join(lost, rel)), 0o700); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(lost, rel), data, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	return lost
}

// TestARefusedRecordFailsItsBatches: a record the log refuses at once (a
// key range without a group) fails its batches, on another goroutine than
// the caller's, so that a done may commit again; the store goes on.
func TestARefusedRecordFailsItsBatches(t *testing.T) {
	t.Parallel()
	s := openWith(t, openOnRaft, t.TempDir())
	defer s.Close()
	var b Batch
	b.Set(partKey(testPartitions+5, "x"), []byte("v"))
	done := make(chan error, 1)
	s.CommitUrgent(&b, func(err error) {
		var again Batch
		again.Set(partKey(0, "after"), []byte("v"))
		done <- errors.Join(err, s.CommitSync(&again))
	})
	err := <-done
	if !errors.Is(err, raft.ErrUnknownGroup) {
		t.Fatalf("a batch of a range without a group: %v, want raft.ErrUnknownGroup", err)
	}
	if v, err := s.Get(partKey(0, "after")); err != nil || string(v) != "v" {
		t.Fatalf("the batch committed from the refused one's done: %q, %v", v, err)
	}
}

// elsewhere is a CommitPath whose ranges are all written through another
// node: it applies nothing.
type elsewhere struct{}

func (elsewhere) Propose(_ int, _ []byte, done func(error)) {
	done(fmt.Errorf("%w: led by another node", ErrNotApplied))
}

// TestABatchWrittenElsewhereLeavesTheStoreHealthy: a batch its range's
// log did not apply because another node writes the range fails with
// ErrNotApplied, and the store still reports itself healthy.
func TestABatchWrittenElsewhereLeavesTheStoreHealthy(t *testing.T) {
	t.Parallel()
	s, err := Open(t.TempDir(), Options{CommitPath: elsewhere{}})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var b Batch
	b.Set(partKey(0, "x"), []byte("v"))
	if err := s.CommitSync(&b); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("commit: %v, want ErrNotApplied", err)
	}
	if err := s.Health(); err != nil {
		t.Fatalf("health after a batch written elsewhere: %v", err)
	}
}

// TestForgetAppliedKeepsTheData forgets every range's applied index and
// keeps what the ranges hold, across a reopen.
func TestForgetAppliedKeepsTheData(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, err := openOnRaft(t, dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	keys := [][]byte{Key("fo", "node"), partKey(0, "u"), partKey(testPartitions-1, "u")}
	for _, k := range keys {
		var b Batch
		b.Set(k, []byte("kept"))
		done := make(chan error, 1)
		s.CommitUrgent(&b, func(err error) { done <- err })
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s, err = Open(dir, Options{CommitPath: elsewhere{}}); err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.ForgetApplied(); err != nil {
		t.Fatal(err)
	}
	for rng := NodeRange; rng < testPartitions; rng++ {
		if index, err := s.AppliedIndex(rng); err != nil || index != 0 {
			t.Errorf("range %d: applied index %d, %v; want 0", rng, index, err)
		}
	}
	for _, k := range keys {
		if v, err := s.Get(k); err != nil || string(v) != "kept" {
			t.Errorf("%q: %q, %v", k, v, err)
		}
	}
}
