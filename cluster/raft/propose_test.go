package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
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

// TestAnOverwrittenProposalFailsBeforeItsIndexApplies: a leader cut off
// from its group takes a proposal it cannot commit; the others elect a
// leader and commit entries of their own. Once the link is back, the old
// leader's proposal fails with ErrDropped as soon as the new leader's
// entries replace it, before the old leader applies anything at its
// index: a deposed leader's writes are sent again at once, not after it
// has caught up.
func TestAnOverwrittenProposalFailsBeforeItsIndexApplies(t *testing.T) {
	c := newCluster(t, 3, []uint64{1}, nil)
	old := c.node(c.waitLeaders([]uint64{1}, 10*time.Second)[1])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := old.d.Propose(ctx, 1, []byte("a=1")); err != nil {
		t.Fatal(err)
	}
	others := c.othersThan(old)
	link := func(up bool) { setLinks(old, others, up) }
	link(false)
	// The state machine, not Status (which the end of the round updates),
	// holds a=1 once Propose returned: x=1 is the entry after it.
	before, err := old.sm.Applied(1)
	if err != nil {
		t.Fatal(err)
	}
	type outcome struct {
		err     error
		applied uint64
	}
	done := make(chan outcome, 1)
	old.d.ProposeAsync(1, []byte("x=1"), func(err error) {
		applied, _ := old.sm.Applied(1)
		done <- outcome{err, applied}
	})
	for i := 0; ; i++ {
		pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
		err := others[i%2].d.Propose(pctx, 1, []byte("b=1"))
		pcancel()
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			t.Fatal("the others elected no leader")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case o := <-done:
		t.Fatalf("the cut-off leader's proposal ended before the link came back: %v", o.err)
	default:
	}
	link(true)
	select {
	case o := <-done:
		if !errors.Is(o.err, ErrDropped) {
			t.Fatalf("the overwritten proposal ended with %v, want ErrDropped", o.err)
		}
		if o.applied > before {
			t.Fatalf("the old leader had applied up to %d when its proposal at %d failed, want at most %d", o.applied, before+1, before)
		}
	case <-ctx.Done():
		t.Fatal("the overwritten proposal did not end")
	}
}

// TestAProposalRaftDropsWaitsAndKeepsItsPlace: a leader whose uncommitted
// entries are over MaxUncommittedEntriesSize (its followers out of reach)
// holds the proposals raft drops, and proposes them again, in call
// order, once the followers commit what it had: none fails, none is
// applied before one proposed ahead of it.
func TestAProposalRaftDropsWaitsAndKeepsItsPlace(t *testing.T) {
	c := newCluster(t, 3, []uint64{1}, func(o *Options) {
		o.MaxApplyBytes = 64 // uncommitted entries up to 256 bytes
		o.ElectionTicks = 60 // 3 s: the leader keeps leading while cut off
	})
	leader := c.node(c.waitLeaders([]uint64{1}, 10*time.Second)[1])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := c.propose(ctx, 1, []byte("k=0")); err != nil {
		t.Fatal(err)
	}
	link := func(up bool) { setLinks(leader, c.othersThan(leader), up) }
	link(false)
	pad := strings.Repeat("x", 150)
	const n = 4
	done := make(chan error, n)
	var mu sync.Mutex
	var order []int
	for i := range n {
		leader.d.ProposeAsync(1, []byte(fmt.Sprintf("k=%d%s", i+1, pad)), func(err error) {
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			done <- err
		})
		time.Sleep(30 * time.Millisecond) // an entry each: past the first, raft drops them
	}
	time.Sleep(200 * time.Millisecond)
	select {
	case err := <-done:
		t.Fatalf("a proposal ended while its leader could commit nothing: %v", err)
	default:
	}
	link(true)
	for range n {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a proposal raft dropped for want of room ended with %v, want it applied", err)
			}
		case <-ctx.Done():
			t.Fatal("the held proposals did not end")
		}
	}
	if !slices.Equal(order, []int{0, 1, 2, 3}) {
		t.Fatalf("the proposals were told in the order %v, want their call order", order)
	}
	state, err := leader.sm.dump(1)
	if err != nil {
		t.Fatal(err)
	}
	if v := state["k"]; v != "4"+pad {
		t.Fatalf("k = %.10q…, want the last proposal's", v)
	}
}

// othersThan returns the running nodes but n.
func (c *testCluster) othersThan(n *testNode) []*testNode {
	var others []*testNode
	for _, o := range c.running() {
		if o.id != n.id {
			others = append(others, o)
		}
	}
	return others
}

// setLinks cuts the links between n and others both ways (each is told an
// address nothing listens at), or restores them.
func setLinks(n *testNode, others []*testNode, up bool) {
	for _, o := range others {
		to, back := "127.0.0.1:1", "127.0.0.1:1"
		if up {
			to, back = o.addr, n.addr
		}
		n.tr.SetPeer(o.id, to)
		o.tr.SetPeer(n.id, back)
	}
}
