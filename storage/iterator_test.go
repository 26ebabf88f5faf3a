package storage

import (
	"bytes"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
)

// An iterator seeks to a key or the next one in its direction, stays
// under its prefix, and jumps over a run of keys with one seek.
func TestIteratorSeeksWithinItsPrefix(t *testing.T) {
	s := open(t, t.TempDir())
	defer s.Close()
	rng := rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))
	runs := map[string][]uint64{} // run name -> its numbers, sorted
	var b Batch
	for r := range 20 {
		name := fmt.Sprint("run", r)
		for range 1 + rng.IntN(30) {
			n := rng.Uint64N(1000)
			if !slices.Contains(runs[name], n) {
				runs[name] = append(runs[name], n)
				b.Set(Key("x", name, Uint64(n)), []byte(fmt.Sprint(name, n)))
			}
		}
		slices.Sort(runs[name])
	}
	b.Set(Key("w", "before"), nil) // neighbours of the prefix
	b.Set(Key("y", "after"), nil)
	if err := s.CommitSync(&b); err != nil {
		t.Fatal(err)
	}
	snap := s.Snapshot()
	defer snap.Close()

	// The last key of each run, descending, by one seek per run.
	back := snap.Iterator(Prefix("x"), true)
	defer back.Close()
	var lasts []string
	for back.Seek(append(Prefix("x"), 0xff)); back.Valid(); {
		k := bytes.Clone(back.Key())
		run := k[:len(k)-8]
		if err := back.Value(func(v []byte) error { lasts = append(lasts, string(v)); return nil }); err != nil {
			t.Fatal(err)
		}
		back.Seek(run) // below every key of the run
	}
	names := slices.Sorted(maps.Keys(runs)) // as their keys sort: "run1\x00" before "run10\x00"
	slices.Reverse(names)
	var want []string
	for _, name := range names {
		want = append(want, fmt.Sprint(name, runs[name][len(runs[name])-1]))
	}
	if !slices.Equal(lasts, want) {
		t.Fatalf("last of each run = %v, want %v", lasts, want)
	}

	// Seeks at, between and beyond keys, in both directions.
	fwd := snap.Iterator(Prefix("x"), false)
	defer fwd.Close()
	for name, ns := range runs {
		for range 20 {
			n := rng.Uint64N(1100)
			below, above := -1, len(ns)
			for i, m := range ns {
				if m <= n {
					below = i
				}
				if m >= n && above == len(ns) {
					above = i
				}
			}
			back.Seek(Key("x", name, Uint64(n)))
			inRun := back.Valid() && bytes.HasPrefix(back.Key(), Prefix("x", name)) && len(back.Key()) == len(Prefix("x", name))+8
			if inRun != (below >= 0) || (inRun && ParseUint64(back.Key()) != ns[below]) {
				t.Fatalf("reverse seek to %s %d: at %q, want index %d of %v", name, n, back.Key(), below, ns)
			}
			fwd.Seek(Key("x", name, Uint64(n)))
			inRun = fwd.Valid() && bytes.HasPrefix(fwd.Key(), Prefix("x", name)) && len(fwd.Key()) == len(Prefix("x", name))+8
			if inRun != (above < len(ns)) || (inRun && ParseUint64(fwd.Key()) != ns[above]) {
				t.Fatalf("seek to %s %d: at %q, want index %d of %v", name, n, fwd.Key(), above, ns)
			}
		}
	}
	fwd.Seek(Key("y"))
	if fwd.Valid() {
		t.Fatalf("seek beyond the prefix found %q", fwd.Key())
	}
}
