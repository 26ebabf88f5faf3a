package raft

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"
)

// TestProposeAsyncKeepsTheCallOrder: one caller's asynchronous proposals
// to several groups of a local driver are applied, and their done run, in
// the order of the calls, many in flight at once; the driver refuses
// them once closed, still calling done.
func TestProposeAsyncKeepsTheCallOrder(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sm, err := openKV(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	defer sm.close()
	groups := groupIDs(3)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	d, err := OpenLocal(ctx, Options{Dir: dir}, sm, groups)
	if err != nil {
		t.Fatal(err)
	}
	const each = 2000
	var mu sync.Mutex
	got := map[uint64][]int{}
	var wg sync.WaitGroup
	for i := range each * len(groups) {
		g := groups[i%len(groups)]
		wg.Add(1)
		d.ProposeAsync(g, fmt.Appendf(nil, "last=%d", i), func(err error) {
			if err != nil {
				t.Errorf("group %d, proposal %d: %v", g, i, err)
			}
			mu.Lock()
			got[g] = append(got[g], i)
			mu.Unlock()
			wg.Done()
		})
	}
	wg.Wait()
	for gi, g := range groups {
		if len(got[g]) != each {
			t.Fatalf("group %d: %d proposals done, want %d", g, len(got[g]), each)
		}
		for n, i := range got[g] {
			if want := gi + n*len(groups); i != want {
				t.Fatalf("group %d: done number %d was proposal %d, want %d", g, n, i, want)
			}
		}
		state, err := sm.dump(g)
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprint(gi + (each-1)*len(groups)); state["last"] != want {
			t.Errorf("group %d applied last=%s last, want %s: applied out of order", g, state["last"], want)
		}
	}
	st := d.Stats()
	if st.ProposalEntries >= st.Proposals {
		t.Errorf("%d proposals in %d entries: none was in flight with another", st.Proposals, st.ProposalEntries)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	closed := make(chan error, 1)
	d.ProposeAsync(groups[0], []byte("after=close"), func(err error) { closed <- err })
	if err := <-closed; err == nil {
		t.Fatal("a proposal after Close succeeded")
	}
}
