package storage

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"testing"
)

// contents returns every key under prefix with its value.
func contents(t *testing.T, s *Store, prefix []byte) map[string]string {
	t.Helper()
	got := map[string]string{}
	if err := s.Scan(prefix, nil, func(k, v []byte) error { got[string(k)] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestImportRangeReplacesTheRangeAlone: a range exported from one store
// and imported into another replaces what the other held under the
// prefix, keys it lacked included, leaves every key outside the prefix as
// it was, applies done, and is all still there after a reopen.
func TestImportRangeReplacesTheRangeAlone(t *testing.T) {
	t.Parallel()
	prefix := []byte("p/0001/")
	src := open(t, t.TempDir())
	b := &Batch{}
	for i := range 500 {
		b.Set(fmt.Appendf(nil, "p/0001/u/%04d", i), bytes.Repeat([]byte{byte(i)}, i%64))
	}
	b.Set([]byte("p/0002/u/x"), []byte("another range"))
	b.Delete([]byte("p/0001/u/0007"))
	if err := src.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	want := contents(t, src, prefix)
	data, err := src.ExportRange(prefix)
	if err != nil {
		t.Fatal(err)
	}

	dir := t.TempDir()
	dst := open(t, dir)
	old := &Batch{}
	old.Set([]byte("p/0001/u/stale"), []byte("gone after the import"))
	old.Set([]byte("p/0001/u/0001"), []byte("overwritten"))
	old.Set([]byte("p/0000/u/y"), []byte("kept"))
	old.Set([]byte("p/0001"), []byte("kept: not under the prefix"))
	if err := dst.CommitSync(old); err != nil {
		t.Fatal(err)
	}
	done := &Batch{}
	done.Set([]byte("\xffapplied/1"), []byte("42"))
	if err := dst.ImportRange(prefix, data, done); err != nil {
		t.Fatal(err)
	}
	check := func(s *Store) {
		t.Helper()
		if got := contents(t, s, prefix); !maps.Equal(got, want) {
			t.Fatalf("the range holds %d keys, want the %d exported", len(got), len(want))
		}
		for k, v := range map[string]string{"p/0000/u/y": "kept", "p/0001": "kept: not under the prefix", "\xffapplied/1": "42"} {
			if got, err := s.Get([]byte(k)); err != nil || string(got) != v {
				t.Fatalf("%q = %q, %v; want %q", k, got, err, v)
			}
		}
		if unfinished, err := s.ImportUnfinished(prefix); err != nil || unfinished {
			t.Fatalf("ImportUnfinished = %v, %v after a finished import", unfinished, err)
		}
	}
	check(dst)
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	check(open(t, dir))
}

// TestImportRangeCutShortIsReported: an import that began and did not
// finish is reported until an import of the range completes.
func TestImportRangeCutShortIsReported(t *testing.T) {
	t.Parallel()
	prefix := []byte("p/0003/")
	dir := t.TempDir()
	s := open(t, dir)
	began := &Batch{}
	began.Set(append(bytes.Clone(importingPrefix), prefix...), nil) // what a crash after the mark leaves
	began.Set([]byte("p/0003/half"), []byte("written before the crash"))
	if err := s.CommitSync(began); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s = open(t, dir)
	if unfinished, err := s.ImportUnfinished(prefix); err != nil || !unfinished {
		t.Fatalf("ImportUnfinished = %v, %v; want true", unfinished, err)
	}
	if unfinished, _ := s.ImportUnfinished([]byte("p/0004/")); unfinished {
		t.Fatal("another range reported unfinished")
	}
	if err := s.ImportRange(prefix, nil, &Batch{}); err != nil {
		t.Fatal(err)
	}
	if unfinished, err := s.ImportUnfinished(prefix); err != nil || unfinished {
		t.Fatalf("ImportUnfinished = %v, %v after the import completed", unfinished, err)
	}
	if got := contents(t, s, prefix); len(got) != 0 {
		t.Fatalf("an empty import left %v", got)
	}
}

// TestImportRangeRefusesKeysOutsideIt: an export holding a key outside
// the prefix, or a done batch writing inside it, is refused and changes
// nothing.
func TestImportRangeRefusesKeysOutsideIt(t *testing.T) {
	t.Parallel()
	s := open(t, t.TempDir())
	b := &Batch{}
	b.Set([]byte("p/0005/a"), []byte("1"))
	b.Set([]byte("p/0006/b"), []byte("2"))
	if err := s.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	wide, err := s.ExportRange([]byte("p/"))
	if err != nil {
		t.Fatal(err)
	}
	if err := s.ImportRange([]byte("p/0005/"), wide, &Batch{}); err == nil {
		t.Fatal("an export with another range's key was imported")
	}
	inside := &Batch{}
	inside.Set([]byte("p/0005/applied"), []byte("1"))
	if err := s.ImportRange([]byte("p/0005/"), nil, inside); err == nil {
		t.Fatal("a done batch writing inside the range was taken")
	}
	if err := s.ImportRange([]byte("p/0005/"), []byte{0x05, 'p'}, &Batch{}); err == nil {
		t.Fatal("a truncated export was imported")
	}
	if got := contents(t, s, []byte("p/")); len(got) != 2 {
		t.Fatalf("refused imports changed the store: %v", got)
	}
}

// TestPartitionRestoredWithItsAppliedIndex: a partition exported from one
// store and restored into another holds the same keys there, with the
// applied index the restore gave it; dropping it leaves neither.
func TestPartitionRestoredWithItsAppliedIndex(t *testing.T) {
	t.Parallel()
	src := open(t, t.TempDir())
	b := &Batch{}
	for i := range 50 {
		b.Set(Key("p", "0007", "u", fmt.Sprint(i)), []byte{byte(i)})
	}
	if err := src.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	data, err := src.ExportPartition(7)()
	if err != nil {
		t.Fatal(err)
	}
	dst := open(t, t.TempDir())
	other := &Batch{}
	other.Set(Key("p", "0008", "u", "x"), []byte("another partition"))
	if err := dst.CommitSync(other); err != nil {
		t.Fatal(err)
	}
	if err := dst.RestorePartition(7, 42, data); err != nil {
		t.Fatal(err)
	}
	if got, want := contents(t, dst, partitionPrefix(7)), contents(t, src, partitionPrefix(7)); !maps.Equal(got, want) || len(got) != 50 {
		t.Fatalf("restored %d keys, want the %d exported", len(got), len(want))
	}
	if i, err := dst.AppliedIndex(7); err != nil || i != 42 {
		t.Fatalf("applied index %d, %v; want 42", i, err)
	}
	if err := dst.DropPartition(7); err != nil {
		t.Fatal(err)
	}
	if got := contents(t, dst, partitionPrefix(7)); len(got) != 0 {
		t.Fatalf("a dropped partition kept %d keys", len(got))
	}
	if i, err := dst.AppliedIndex(7); err != nil || i != 0 {
		t.Fatalf("a dropped partition's applied index is %d, %v", i, err)
	}
	if got := contents(t, dst, partitionPrefix(8)); len(got) != 1 {
		t.Fatalf("the other partition holds %v", got)
	}
}

// TestExportRangeLaterReadsTheMomentOfTheCall: an export fixed before a
// write and read after it holds the range as it was at the call; the
// write is still there for the next one.
func TestExportRangeLaterReadsTheMomentOfTheCall(t *testing.T) {
	t.Parallel()
	prefix := []byte("p/0003/")
	s := open(t, t.TempDir())
	defer s.Close()
	b := &Batch{}
	b.Set([]byte("p/0003/u/a"), []byte("1"))
	b.Set([]byte("p/0003/u/b"), []byte("1"))
	if err := s.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	before, err := s.ExportRange(prefix)
	if err != nil {
		t.Fatal(err)
	}
	read := s.ExportRangeLater(prefix)
	b = &Batch{}
	b.Set([]byte("p/0003/u/a"), []byte("2"))
	b.Delete([]byte("p/0003/u/b"))
	b.Set([]byte("p/0003/u/c"), []byte("2"))
	if err := s.CommitSync(b); err != nil {
		t.Fatal(err)
	}
	got, err := read()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, before) {
		t.Fatalf("the export fixed before the write read %q, want %q", got, before)
	}
	after, err := s.ExportRange(prefix)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(after, before) {
		t.Fatal("an export after the write does not hold it")
	}
}

// BenchmarkPartitionSnapshot reads a partition's range for a snapshot
// and restores it on another store, at 2 and 16 MB (a 128 MB and a 1 GB
// store over 64 partitions).
func BenchmarkPartitionSnapshot(b *testing.B) {
	for _, mb := range []int{2, 16} {
		src, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		val := make([]byte, 200)
		for i := 0; i < mb<<20/256; {
			batch := &Batch{}
			for j := 0; j < 1000; j, i = j+1, i+1 {
				batch.Set(Key("p", "0001", fmt.Sprintf("k%08d", i)), val)
			}
			if err := src.CommitSync(batch); err != nil {
				b.Fatal(err)
			}
		}
		data, err := src.ExportPartition(1)()
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("read/%dMB", mb), func(b *testing.B) {
			for b.Loop() {
				if _, err := src.ExportPartition(1)(); err != nil {
					b.Fatal(err)
				}
			}
		})
		dst, err := Open(b.TempDir(), Options{})
		if err != nil {
			b.Fatal(err)
		}
		b.Run(fmt.Sprintf("restore/%dMB", mb), func(b *testing.B) {
			for i := uint64(1); b.Loop(); i++ {
				if err := dst.RestorePartition(1, i, data); err != nil {
					b.Fatal(err)
				}
			}
		})
		if err := errors.Join(src.Close(), dst.Close()); err != nil {
			b.Fatal(err)
		}
	}
}
