package raft

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestSnapshotsLeaveTheOtherGroupsGoing: a snapshot's read on the leader
// and its restore on the new replica each take 2 s (twice an election
// timeout), and meanwhile a group the two nodes share and a group the
// new replica's node holds alone go on taking proposals, none held for
// as long as either.
func TestSnapshotsLeaveTheOtherGroupsGoing(t *testing.T) {
	t.Parallel()
	const a, b, c3 = uint64(1), uint64(2), uint64(3)
	const slow = 2 * time.Second
	c := newCluster(t, 2, []uint64{a, b}, nil)
	leaders := c.waitLeaders([]uint64{a, b}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := fill(t, ctx, c, a, 50)
	n3 := c.addNode(3)
	if err := n3.d.AddGroup(ctx, c3, []uint64{3}); err != nil {
		t.Fatal(err)
	}
	if err := n3.d.AddGroup(ctx, a, nil); err != nil {
		t.Fatal(err)
	}
	c.waitLeaders([]uint64{c3}, 10*time.Second)
	for _, n := range c.running() {
		n.sm.slow.Store(int64(slow))
	}

	// Writers to b (both nodes of a's old members must answer) and to c3
	// (n3's loop alone) until n3 holds a's state.
	writers := []*writer{startWriter(ctx, c.driver(leaders[b]), b), startWriter(ctx, n3.d, c3)}
	start := time.Now()
	if err := c.driver(leaders[a]).AddReplica(ctx, a, 3); err != nil {
		t.Fatal(err)
	}
	c.waitState(3, a, want, 30*time.Second)
	took := time.Since(start)
	for _, w := range writers {
		w.halt()
	}

	if n3.sm.restores.Load() == 0 {
		t.Fatal("node 3 caught up without a snapshot")
	}
	if took < 2*slow {
		t.Fatalf("node 3 had the snapshot after %v, before its read and restore could end", took)
	}
	for i, g := range []uint64{b, c3} {
		w := writers[i]
		if w.err != nil {
			t.Fatalf("group %d: a proposal failed during the snapshot: %v", g, w.err)
		}
		if w.longest >= slow/2 {
			t.Errorf("group %d: a proposal took %v while the snapshot was read and restored (%d in %v)", g, w.longest, w.n, took)
		}
	}
	t.Logf("snapshot in %v; group %d: %d proposals, longest %v; group %d: %d, longest %v",
		took, b, writers[0].n, writers[0].longest, c3, writers[1].n, writers[1].longest)
}

// TestRemoveGroupWaitsForTheRestore: a replica removed while its
// snapshot is being restored is forgotten once the restore ends, so that
// what its caller does next with the group's state (drop it) does not
// run beside the restore.
func TestRemoveGroupWaitsForTheRestore(t *testing.T) {
	t.Parallel()
	const g = uint64(7)
	c := newCluster(t, 1, []uint64{g}, nil)
	c.waitLeaders([]uint64{g}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := c.propose(ctx, g, []byte("k=v")); err != nil {
		t.Fatal(err)
	}
	n2 := c.addNode(2)
	if err := n2.d.AddGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	n2.sm.slow.Store(int64(time.Second))
	if err := c.driver(1).AddReplica(ctx, g, 2); err != nil {
		t.Fatal(err)
	}
	for n2.sm.restoring.Load() == 0 {
		if ctx.Err() != nil {
			t.Fatal("node 2 began no restore")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if err := n2.d.RemoveGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	if n2.sm.restores.Load() != 1 {
		t.Fatal("RemoveGroup returned while the restore went on")
	}
	if _, err := n2.d.Status(g); err == nil {
		t.Fatal("node 2 still holds the group")
	}
}

// TestALearnerReplacesAVoterWithoutHoldingTheGroup: of three voters one
// is down, and a fourth node replaces it, its snapshot taking 2 s to
// restore. Joining as a learner, it is not counted in the quorum until
// it has caught up (AddReplica says ErrBehind meanwhile): the group goes
// on committing throughout, where a fourth voter added empty would hold
// it until the restore ended (quorum 3 of 4 with 2 up).
func TestALearnerReplacesAVoterWithoutHoldingTheGroup(t *testing.T) {
	t.Parallel()
	const g = uint64(11)
	const slow = 2 * time.Second
	c := newCluster(t, 3, []uint64{g}, nil)
	leader := c.waitLeaders([]uint64{g}, 10*time.Second)[g]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := fill(t, ctx, c, g, 50)
	down := uint64(1)
	for down == leader {
		down++
	}
	c.stop(down)
	n4 := c.addNode(4)
	if err := n4.d.AddGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	n4.sm.slow.Store(int64(slow))

	w := startWriter(ctx, c.driver(leader), g)
	start := time.Now()
	if err := c.driver(leader).AddLearner(ctx, g, 4); err != nil {
		t.Fatal(err)
	}
	behind := 0
	for {
		err := c.driver(leader).AddReplica(ctx, g, 4)
		if err == nil {
			break
		}
		if !errors.Is(err, ErrBehind) {
			t.Fatalf("make the learner a voter: %v", err)
		}
		behind++
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	if err := c.driver(leader).RemoveReplica(ctx, g, down); err != nil {
		t.Fatal(err)
	}
	w.halt()

	if w.err != nil {
		t.Fatalf("a proposal failed while node 4 joined: %v", w.err)
	}
	if took < slow || behind == 0 {
		t.Fatalf("node 4 was a voter after %v (%d times behind), before its restore could end", took, behind)
	}
	if w.longest >= slow/2 {
		t.Errorf("a proposal took %v while node 4 restored (%d in %v)", w.longest, w.n, took)
	}
	if s, _ := c.driver(leader).Status(g); len(s.Voters) != 3 || slices.Contains(s.Voters, down) || !slices.Contains(s.Voters, 4) {
		t.Fatalf("voters after the replacement: %v", s.Voters)
	}
	want["w"] = fmt.Sprint(w.n - 1)
	c.waitState(4, g, want, 10*time.Second)
	t.Logf("node 4 a voter after %v (%d times behind); %d proposals meanwhile, longest %v", took, behind, w.n, w.longest)
}

// fill proposes n keys to g and returns them with their values.
func fill(t *testing.T, ctx context.Context, c *testCluster, g uint64, n int) map[string]string {
	t.Helper()
	want := map[string]string{}
	for i := range n {
		k, v := fmt.Sprintf("k%d", i), fmt.Sprint(i)
		if err := c.propose(ctx, g, []byte(k+"="+v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	return want
}

// writer proposes w=<n> to a group through one driver, one proposal
// after another, until stopped or one fails.
type writer struct {
	n       int           // proposals applied
	longest time.Duration // the longest of them
	err     error         // the one that failed
	stop    chan struct{}
	wg      sync.WaitGroup
}

func startWriter(ctx context.Context, d *Driver, g uint64) *writer {
	w := &writer{stop: make(chan struct{})}
	w.wg.Go(func() {
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			start := time.Now()
			if w.err = d.Propose(ctx, g, fmt.Appendf(nil, "w=%d", w.n)); w.err != nil {
				return
			}
			w.longest = max(w.longest, time.Since(start))
			w.n++
		}
	})
	return w
}

// halt stops w and waits for it.
func (w *writer) halt() {
	close(w.stop)
	w.wg.Wait()
}
