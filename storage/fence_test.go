package storage

import (
	"context"
	"errors"
	"testing"
	"time"
)

// setFence proposes a fence record of n to partition p's group of s, a
// store on raft, and waits until it is applied.
func setFence(t *testing.T, s *Store, p int, n uint64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.opts.CommitPath.(*raftPath).d.Propose(ctx, groupOf(p), FenceRecord(n)); err != nil {
		t.Fatalf("fence %d of partition %d: %v", n, p, err)
	}
}

// commitFenced commits key = "v" stamped with fence n of partition p.
func commitFenced(s *Store, key []byte, p int, n uint64) error {
	var b Batch
	b.Set(key, []byte("v"))
	b.Fence(p, n)
	return s.CommitSync(&b)
}

// TestBatchesApplyOnlyUnderTheirFence: a batch stamped with a fence is
// applied while its partition's fence is that number and refused with
// ErrNotApplied once another fence record applied, before a restart and
// after; a batch with no fence, or stamped for another partition than
// its keys', is applied whatever the fence.
func TestBatchesApplyOnlyUnderTheirFence(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s := openWith(t, openOnRaft, dir)
	setFence(t, s, 0, 5)
	if err := commitFenced(s, partKey(0, "a"), 0, 5); err != nil {
		t.Fatalf("a batch under the partition's fence: %v", err)
	}
	setFence(t, s, 0, 7)
	err := commitFenced(s, partKey(0, "stale"), 0, 5)
	if !errors.Is(err, ErrNotApplied) || !errors.Is(err, ErrFenced) {
		t.Fatalf("a batch under the fence before: %v, want ErrNotApplied and ErrFenced", err)
	}
	for _, c := range []struct {
		key   []byte
		p     int
		fence uint64
	}{{partKey(0, "b"), 0, 7}, {partKey(0, "none"), 0, 0}, {partKey(1, "other"), 0, 5}} {
		if err := commitFenced(s, c.key, c.p, c.fence); err != nil {
			t.Fatalf("%q, fence %d of partition %d: %v", c.key, c.fence, c.p, err)
		}
	}
	if _, err := s.Get(partKey(0, "stale")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("the refused batch's key: %v, want ErrNotFound", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s = openWith(t, openOnRaft, dir)
	defer s.Close()
	if err := commitFenced(s, partKey(0, "c"), 0, 5); !errors.Is(err, ErrFenced) {
		t.Fatalf("after a restart, a batch under an old fence: %v, want ErrFenced", err)
	}
	if err := commitFenced(s, partKey(0, "c"), 0, 7); err != nil {
		t.Fatalf("after a restart, a batch under the fence: %v", err)
	}
	for _, k := range []string{"a", "b", "none", "c"} {
		if _, err := s.Get(partKey(0, k)); err != nil {
			t.Fatalf("key %q: %v", k, err)
		}
	}
}

// TestASnapshotCarriesTheFence: a replica restored from a partition's
// snapshot refuses the batches its source refuses.
func TestASnapshotCarriesTheFence(t *testing.T) {
	t.Parallel()
	src := openWith(t, openOnRaft, t.TempDir())
	defer src.Close()
	setFence(t, src, 2, 9)
	data, err := src.ExportPartition(2)()
	if err != nil {
		t.Fatal(err)
	}
	dst := openWith(t, openOnRaft, t.TempDir())
	defer dst.Close()
	if err := dst.RestorePartition(2, 1, data); err != nil {
		t.Fatal(err)
	}
	if err := commitFenced(dst, partKey(2, "x"), 2, 8); !errors.Is(err, ErrFenced) {
		t.Fatalf("a batch under another fence than the snapshot's: %v, want ErrFenced", err)
	}
	if err := commitFenced(dst, partKey(2, "x"), 2, 9); err != nil {
		t.Fatalf("a batch under the snapshot's fence: %v", err)
	}
}
