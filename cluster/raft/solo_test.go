package raft

import (
	"context"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// isSolo tells whether node d drives group g without its RawNode.
func isSolo(t *testing.T, d *Driver, g uint64) bool {
	t.Helper()
	var solo bool
	err := d.call(context.Background(), func(reply chan<- error) {
		if gr := d.groups[g]; gr != nil {
			solo = gr.solo()
		}
		reply <- nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return solo
}

// waitSolo waits until node d drives group g alone.
func waitSolo(t *testing.T, d *Driver, g uint64) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !isSolo(t, d, g) {
		if time.Now().After(deadline) {
			t.Fatalf("group %d is not driven alone after 10 s", g)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestAGroupOfOneAppliesEachProposalInOneRound checks that a group whose
// only replica is this node writes a proposal's entry and applies it in
// one round, one log write and one sync, and that what it wrote comes
// back after a restart.
func TestAGroupOfOneAppliesEachProposalInOneRound(t *testing.T) {
	t.Parallel()
	g := uint64(7)
	c := newCluster(t, 1, []uint64{g}, nil)
	d := c.driver(1)
	c.waitLeaders([]uint64{g}, 5*time.Second)
	waitSolo(t, d, g)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	want := map[string]string{}
	before := d.Stats()
	const n = 200
	for i := range n {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("%x", rand.Uint64())
		if err := d.Propose(ctx, g, []byte(k+"="+v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	after := d.Stats()
	if rounds := after.Rounds - before.Rounds; rounds != n {
		t.Errorf("%d proposals in %d log writes, want one each", n, rounds)
	}
	if syncs := after.Syncs - before.Syncs; syncs != n {
		t.Errorf("%d proposals in %d syncs, want one each", n, syncs)
	}
	if applied := after.Proposals - before.Proposals; applied != n {
		t.Errorf("%d proposals counted applied, want %d", applied, n)
	}
	c.waitState(1, g, want, time.Second)

	c.stop(1)
	c.start(1)
	c.waitState(1, g, want, 10*time.Second)
	c.waitLeaders([]uint64{g}, 5*time.Second)
	if err := c.driver(1).Propose(ctx, g, []byte("after=restart")); err != nil {
		t.Fatal(err)
	}
	want["after"] = "restart"
	c.waitState(1, g, want, time.Second)
	waitSolo(t, c.driver(1), g)
}

// TestAGroupOfOneTakesAReplicaWhileItWrites adds a second replica to a
// group driven alone while proposals go on: the group's leader stays
// this node throughout (no event says otherwise), no proposal fails, the
// new replica catches up, and once it is removed again the group is
// driven alone again.
func TestAGroupOfOneTakesAReplicaWhileItWrites(t *testing.T) {
	t.Parallel()
	g := uint64(9)
	var mu sync.Mutex
	var events []Event
	c := newCluster(t, 1, []uint64{g}, func(o *Options) {
		if o.NodeID != 1 {
			return
		}
		o.OnEvent = func(e Event) {
			mu.Lock()
			events = append(events, e)
			mu.Unlock()
		}
	})
	d := c.driver(1)
	c.waitLeaders([]uint64{g}, 5*time.Second)
	waitSolo(t, d, g)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	mu.Lock()
	events = nil
	mu.Unlock()

	var wmu sync.Mutex
	want := map[string]string{}
	var stop atomic.Bool
	var failed atomic.Int64
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := 0; !stop.Load(); i++ {
				k, v := fmt.Sprintf("w%d-%d", w, i), fmt.Sprintf("%x", rand.Uint64())
				if err := d.Propose(ctx, g, []byte(k+"="+v)); err != nil {
					t.Errorf("%s: %v", k, err)
					failed.Add(1)
					return
				}
				wmu.Lock()
				want[k] = v
				wmu.Unlock()
			}
		})
	}
	time.Sleep(200 * time.Millisecond)
	n2 := c.addNode(2)
	if err := n2.d.AddGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	if err := d.AddReplica(ctx, g, 2); err != nil {
		t.Fatalf("add replica 2: %v", err)
	}
	if s, _ := d.Status(g); !slices.Equal(s.Voters, []uint64{1, 2}) || s.Role != Leader {
		t.Fatalf("status after adding 2: %+v", s)
	}
	time.Sleep(200 * time.Millisecond)
	if isSolo(t, d, g) {
		t.Fatal("a group of two voters is driven alone")
	}
	if err := d.RemoveReplica(ctx, g, 2); err != nil {
		t.Fatalf("remove replica 2: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	stop.Store(true)
	wg.Wait()
	if failed.Load() > 0 {
		t.FailNow()
	}
	c.waitState(1, g, want, 5*time.Second)
	waitSolo(t, d, g)
	mu.Lock()
	defer mu.Unlock()
	for _, e := range events {
		if e.Group == g && (e.Role != Leader || e.Leader != 1 || e.Removed) {
			t.Errorf("node 1 told of %+v while it was the only node that could lead", e)
		}
	}
	wmu.Lock()
	defer wmu.Unlock()
	t.Logf("%d proposals while a replica came and went", len(want))
}

// TestAppliedPastTheLogGoesOnAfterIt checks a group of one whose state
// machine holds entries its log lost (a round applies before its sync,
// and a crash can take the frame): it opens, keeps what was applied, and
// the entries it takes next are applied, not passed over as applied
// already.
func TestAppliedPastTheLogGoesOnAfterIt(t *testing.T) {
	t.Parallel()
	g := uint64(5)
	c := newCluster(t, 1, []uint64{g}, nil)
	c.waitLeaders([]uint64{g}, 5*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[string]string{}
	for i := range 50 {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprintf("%x", rand.Uint64())
		if err := c.driver(1).Propose(ctx, g, []byte(k+"="+v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	c.stop(1)

	// Three entries applied whose frame the crash took.
	kv, err := openKV(filepath.Join(c.node(1).dir, "sm"))
	if err != nil {
		t.Fatal(err)
	}
	applied, err := kv.Applied(g)
	if err != nil {
		t.Fatal(err)
	}
	if err := kv.Apply([]Update{{Group: g, Index: applied + 3, Commands: [][]byte{[]byte("lost=applied")}}}); err != nil {
		t.Fatal(err)
	}
	if err := kv.close(); err != nil {
		t.Fatal(err)
	}
	want["lost"] = "applied"

	c.start(1)
	c.waitLeaders([]uint64{g}, 5*time.Second)
	c.waitState(1, g, want, 5*time.Second)
	for i := range 5 {
		k := fmt.Sprintf("after%d", i)
		if err := c.driver(1).Propose(ctx, g, []byte(k+"=1")); err != nil {
			t.Fatal(err)
		}
		want[k] = "1"
	}
	c.waitState(1, g, want, time.Second)
	c.stop(1)
	c.start(1)
	c.waitState(1, g, want, 5*time.Second)
}
