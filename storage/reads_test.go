package storage

import (
	"testing"
	"time"
)

// TestSnapshotKeepsItsVersions: a snapshot reads what the store held when it
// was taken, even after later writes replaced it and compaction merged the
// tables that held both versions.
func TestSnapshotKeepsItsVersions(t *testing.T) {
	defer func(n int64, l int) { memTableSize, levelZeroTables = n, l }(memTableSize, levelZeroTables)
	memTableSize = 8 << 20 // the least badger takes with values inline
	levelZeroTables = 1    // every flushed table is compacted at once
	s, err := Open(t.TempDir(), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	set := func(v string) {
		var b Batch
		b.Set(Key("x"), []byte(v))
		if err := s.CommitSync(&b); err != nil {
			t.Fatal(err)
		}
	}
	set("old")
	snap := s.Snapshot()
	defer snap.Close()
	set("new")
	commitKilobytes(t, s, 300) // 30 MB: the memtable with both versions goes to a table, then below level 0
	for deadline := time.Now().Add(20 * time.Second); !compacted(s); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no table compacted below level 0")
		}
	}
	if v, err := snap.Get(Key("x")); err != nil || string(v) != "old" {
		t.Fatalf("snapshot reads %q, %v; want the old value", v, err)
	}
	if v, err := s.Get(Key("x")); err != nil || string(v) != "new" {
		t.Fatalf("store reads %q, %v; want the new value", v, err)
	}
}

// TestReadTimes: the oldest timestamp in use is the earliest open read's,
// or the last published one when none is open.
func TestReadTimes(t *testing.T) {
	var r readTimes
	r.publish(5)
	a := r.begin()
	r.publish(9)
	b := r.begin()
	if a != 5 || b != 9 || r.oldest() != 5 {
		t.Fatalf("reads at %d and %d, oldest %d; want 5, 9, 5", a, b, r.oldest())
	}
	r.end(a)
	if r.oldest() != 9 {
		t.Fatalf("oldest %d after the first read ended, want 9", r.oldest())
	}
	r.end(b)
	r.publish(12)
	if r.oldest() != 12 || len(r.open) != 0 {
		t.Fatalf("oldest %d, %d open; want 12, none", r.oldest(), len(r.open))
	}
}

// compacted reports whether a table has left level 0.
func compacted(s *Store) bool {
	for _, l := range s.db.Levels()[1:] {
		if l.NumTables > 0 {
			return true
		}
	}
	return false
}
