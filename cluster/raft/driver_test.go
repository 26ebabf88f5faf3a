package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// writers proposes key=value commands to every group from a few
// goroutines per group until stop, and records each acknowledged one.
type writers struct {
	mu    sync.Mutex
	acked map[uint64]map[string]string // group → key → value
	stop  chan struct{}
	wg    sync.WaitGroup
	fails atomic.Int64
}

func startWriters(ctx context.Context, c *testCluster, groups []uint64, perGroup int) *writers {
	w := &writers{acked: map[uint64]map[string]string{}, stop: make(chan struct{})}
	for _, g := range groups {
		w.acked[g] = map[string]string{}
		for i := range perGroup {
			w.wg.Add(1)
			go func() {
				defer w.wg.Done()
				for n := 0; ; n++ {
					select {
					case <-w.stop:
						return
					default:
					}
					k, v := fmt.Sprintf("w%d-%06d", i, n), fmt.Sprintf("%x", rand.Uint64())
					pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
					err := c.propose(pctx, g, []byte(k+"="+v))
					cancel()
					if err != nil {
						w.fails.Add(1) // not acknowledged: it may or may not be applied
						continue
					}
					w.mu.Lock()
					w.acked[g][k] = v
					w.mu.Unlock()
				}
			}()
		}
	}
	return w
}

// halt stops the writers and returns what was acknowledged.
func (w *writers) halt() map[uint64]map[string]string {
	close(w.stop)
	w.wg.Wait()
	return w.acked
}

// count returns how many proposals were acknowledged so far.
func (w *writers) count() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	n := 0
	for _, m := range w.acked {
		n += len(m)
	}
	return n
}

// checkAcked fails unless node id's state of every group comes to hold
// every acknowledged key with its value within timeout (a follower learns
// of a commit after its leader). Keys proposed but not acknowledged may
// be there too: those are left out of the comparison.
func checkAcked(t *testing.T, c *testCluster, id uint64, acked map[uint64]map[string]string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for g, want := range acked {
		for {
			got, err := c.node(id).sm.dump(g)
			if err != nil {
				t.Fatal(err)
			}
			k, v, missing := missingKey(got, want)
			if !missing {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("node %d, group %d: acknowledged %s=%s, the state has %q", id, g, k, v, got[k])
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func missingKey(got, want map[string]string) (k, v string, missing bool) {
	for k, v := range want {
		if got[k] != v {
			return k, v, true
		}
	}
	return "", "", false
}

func TestProposalsReplicateToEveryNode(t *testing.T) {
	t.Parallel()
	groups := groupIDs(8)
	c := newCluster(t, 3, groups, nil)
	c.waitLeaders(groups, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	want := map[uint64]map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, g := range groups {
		want[g] = map[string]string{}
		for i := range 4 {
			wg.Go(func() {
				for n := range 25 {
					k, v := fmt.Sprintf("p%d-%d", i, n), fmt.Sprintf("%x", rand.Uint64())
					if err := c.propose(ctx, g, []byte(k+"="+v)); err != nil {
						t.Errorf("group %d: %v", g, err)
						return
					}
					mu.Lock()
					want[g][k] = v
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	for _, n := range c.running() {
		for _, g := range groups {
			c.waitState(n.id, g, want[g], 10*time.Second)
		}
	}
	// The leader applied each proposal before it answered; all agree on
	// the applied index too once caught up.
	for _, g := range groups {
		var idx []uint64
		for _, n := range c.running() {
			s, _ := n.d.Status(g)
			idx = append(idx, s.Applied)
		}
		if idx[0] == 0 {
			t.Errorf("group %d: nothing applied", g)
		}
	}
}

func TestProposeOnAFollowerNamesTheLeader(t *testing.T) {
	t.Parallel()
	groups := groupIDs(2)
	c := newCluster(t, 3, groups, nil)
	leaders := c.waitLeaders(groups, 10*time.Second)
	for _, g := range groups {
		for _, n := range c.running() {
			if n.id == leaders[g] {
				continue
			}
			err := n.d.Propose(context.Background(), g, []byte("k=v"))
			var nl *NotLeaderError
			if !errors.As(err, &nl) || nl.Leader != leaders[g] || nl.Group != g {
				t.Fatalf("group %d on follower %d: %v, want a NotLeaderError naming %d", g, n.id, err, leaders[g])
			}
		}
	}
	if err := c.running()[0].d.Propose(context.Background(), 9999, []byte("k=v")); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("unknown group: %v", err)
	}
}

// TestFailoverLosesNoAcknowledgedProposal kills the node that leads the
// most groups while writers propose to every group, checks the others
// elect new leaders in time and hold every acknowledged proposal, then
// restarts the node from its data: it catches up, from snapshots since
// the others truncated their logs meanwhile.
func TestFailoverLosesNoAcknowledgedProposal(t *testing.T) {
	t.Parallel()
	groups := groupIDs(8)
	c := newCluster(t, 3, groups, func(o *Options) {
		o.SegmentBytes = 32 << 10 // checkpoints every few hundred entries
		o.CatchUpEntries = 16
	})
	leaders := c.waitLeaders(groups, 10*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := startWriters(ctx, c, groups, 3)
	waitCount(t, w, 400, 30*time.Second)

	led := map[uint64]int{}
	for _, l := range leaders {
		led[l]++
	}
	victim := uint64(1)
	for id, n := range led {
		if n > led[victim] {
			victim = id
		}
	}
	killed := time.Now()
	c.stop(victim)
	t.Logf("stopped node %d, which led %d of %d groups", victim, led[victim], len(groups))
	after := c.waitLeaders(groups, 15*time.Second)
	failover := time.Since(killed)
	t.Logf("every group had a leader again after %v", failover)
	for g, l := range after {
		if l == victim {
			t.Fatalf("group %d still led by the stopped node", g)
		}
	}
	// Failover bound: the largest randomised election timeout (2 × 10
	// ticks of 50 ms) and a pre-vote round, with room for a loaded
	// machine.
	if failover > 8*time.Second {
		t.Errorf("failover took %v", failover)
	}

	before := w.count()
	waitCount(t, w, before+600, 30*time.Second) // enough for checkpoints to drop what the victim lacks
	acked := w.halt()
	for _, n := range c.running() {
		checkAcked(t, c, n.id, acked, 10*time.Second)
		if n.d.Stats().Checkpoints == 0 {
			t.Errorf("node %d made no checkpoint", n.id)
		}
	}

	c.start(victim)
	c.waitLeaders(groups, 15*time.Second)
	// The survivors agree; the restarted node must come to the same state.
	survivor := c.running()[0].id
	if survivor == victim {
		survivor = c.running()[1].id
	}
	for _, g := range groups {
		want, err := c.node(survivor).sm.dump(g)
		if err != nil {
			t.Fatal(err)
		}
		c.waitState(victim, g, want, 20*time.Second)
	}
	checkAcked(t, c, victim, acked, 10*time.Second)
	if n := c.node(victim).sm.restores.Load(); n == 0 {
		t.Errorf("node %d caught up without a snapshot: the logs were not truncated past it", victim)
	}
	if f := w.fails.Load(); f > 0 {
		t.Logf("%d proposals not acknowledged during the failover", f)
	}
}

func waitCount(t *testing.T, w *writers, n int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for w.count() < n {
		if time.Now().After(deadline) {
			t.Fatalf("%d proposals acknowledged after %v, want %d", w.count(), timeout, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTransferLeader(t *testing.T) {
	t.Parallel()
	groups := groupIDs(4)
	c := newCluster(t, 3, groups, nil)
	leaders := c.waitLeaders(groups, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, g := range groups {
		from := leaders[g]
		to := from%3 + 1
		var nl *NotLeaderError
		if err := c.driver(to).TransferLeader(ctx, g, to%3+1); !errors.As(err, &nl) {
			t.Fatalf("group %d: transfer asked of a follower: %v", g, err)
		}
		if err := c.driver(from).TransferLeader(ctx, g, to); err != nil {
			t.Fatalf("group %d: transfer %d → %d: %v", g, from, to, err)
		}
		// The old leader may hear from the new one before the new one's
		// round that made it leader has ended.
		if err := c.driver(to).waitStatus(ctx, g, func(s Status, ok bool) bool { return ok && s.Role == Leader }); err != nil {
			s, _ := c.driver(to).Status(g)
			t.Fatalf("group %d: node %d after the transfer: %+v, %v", g, to, s, err)
		}
		if err := c.driver(to).Propose(ctx, g, []byte("after=transfer")); err != nil {
			t.Fatalf("group %d: propose on the new leader: %v", g, err)
		}
	}
}

// TestKeepsUpLeavesOutACutOffFollower: a follower the leader no longer
// hears from is not one to hand leadership to, and is again once its
// link is back.
func TestKeepsUpLeavesOutACutOffFollower(t *testing.T) {
	t.Parallel()
	const g = uint64(3)
	c := newCluster(t, 3, []uint64{g}, nil)
	leader := c.node(c.waitLeaders([]uint64{g}, 10*time.Second)[g])
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	others := c.othersThan(leader)
	cut := others[0]
	keepsUp := func(want bool) {
		t.Helper()
		for {
			ok, err := leader.d.KeepsUp(ctx, g, cut.id)
			if err != nil {
				t.Fatal(err)
			}
			if ok == want {
				return
			}
			if ctx.Err() != nil {
				t.Fatalf("node %d keeps up: %v, want %v", cut.id, ok, want)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	keepsUp(true)
	setLinks(cut, []*testNode{leader}, false)
	keepsUp(false)
	if err := leader.d.Propose(ctx, g, []byte("while=cut")); err != nil {
		t.Fatal(err)
	}
	setLinks(cut, []*testNode{leader}, true)
	keepsUp(true)
	var nl *NotLeaderError
	if _, err := cut.d.KeepsUp(ctx, g, leader.id); !errors.As(err, &nl) {
		t.Fatalf("KeepsUp asked of a follower: %v", err)
	}
}

// TestACutOffFollowerCatchesUpInFrames: a follower cut off while its
// leader writes far more than one frame may hold catches up once its link
// is back. Its leader sends at most MaxInflightBytes ahead and the
// transport cuts that into frames the reader takes: no reader closes a
// connection for a frame over its limit (which, again and again, left a
// follower behind for minutes).
func TestACutOffFollowerCatchesUpInFrames(t *testing.T) {
	t.Parallel()
	const g, limit = uint64(5), 256 << 10
	var logs syncBuffer
	c := &testCluster{t: t, nodes: map[uint64]*testNode{}, tcp: func(o *TCPOptions) {
		o.MaxFrameBytes = limit
		o.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}, tune: func(o *Options) { o.MaxMsgBytes = 32 << 10; o.MaxInflightBytes = 128 << 10 }}
	ids := []uint64{1, 2, 3}
	for _, id := range ids {
		c.nodes[id] = &testNode{id: id, dir: t.TempDir()}
	}
	t.Cleanup(c.closeAll)
	for _, id := range ids {
		c.start(id)
	}
	for _, id := range ids {
		if err := c.node(id).d.AddGroup(context.Background(), g, ids); err != nil {
			t.Fatal(err)
		}
	}
	leader := c.node(c.waitLeaders([]uint64{g}, 10*time.Second)[g])
	cut := c.othersThan(leader)[0]
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	setLinks(cut, []*testNode{leader}, false)
	want := map[string]string{}
	value := strings.Repeat("v", 16<<10)
	for i := range 128 { // 2 MiB: eight frames' worth
		k := fmt.Sprintf("k%03d", i)
		if err := leader.d.Propose(ctx, g, []byte(k+"="+value)); err != nil {
			t.Fatal(err)
		}
		want[k] = value
	}
	setLinks(cut, []*testNode{leader}, true)
	c.waitState(cut.id, g, want, 30*time.Second)
	for line := range strings.Lines(logs.String()) {
		if strings.Contains(line, "frame too large") || strings.Contains(line, "over the frame limit") {
			t.Errorf("a frame over the limit: %s", line)
		}
	}
}

// TestMembershipChanges adds a fourth replica to a group, which catches
// up from a snapshot, removes a follower, which stops getting entries,
// then removes the leader, which hands over.
func TestMembershipChanges(t *testing.T) {
	t.Parallel()
	g := uint64(42)
	var removedEvents atomic.Int64
	c := newCluster(t, 3, []uint64{g}, func(o *Options) {
		o.OnEvent = func(e Event) {
			if e.Removed {
				removedEvents.Add(1)
			}
		}
	})
	c.waitLeaders([]uint64{g}, 10*time.Second)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	want := map[string]string{}
	put := func(k string) {
		t.Helper()
		v := fmt.Sprintf("%x", rand.Uint64())
		if err := c.propose(ctx, g, []byte(k+"="+v)); err != nil {
			t.Fatal(err)
		}
		want[k] = v
	}
	for i := range 50 {
		put(fmt.Sprintf("before-%d", i))
	}

	leader := c.waitLeaders([]uint64{g}, 10*time.Second)[g]
	n4 := c.addNode(4)
	if err := n4.d.AddGroup(ctx, g, nil); err != nil {
		t.Fatal(err)
	}
	if err := c.driver(leader).AddReplica(ctx, g, 4); err != nil {
		t.Fatalf("add replica 4: %v", err)
	}
	put("with-four")
	c.waitState(4, g, want, 20*time.Second)
	if n4.sm.restores.Load() == 0 {
		t.Error("node 4 caught up without a snapshot")
	}
	if s, _ := c.driver(leader).Status(g); !slices.Equal(s.Voters, []uint64{1, 2, 3, 4}) {
		t.Fatalf("voters after adding 4: %v", s.Voters)
	}

	leader = c.waitLeaders([]uint64{g}, 10*time.Second)[g]
	follower := uint64(1)
	for follower == leader || follower == 4 {
		follower++
	}
	if err := c.driver(leader).RemoveReplica(ctx, g, follower); err != nil {
		t.Fatalf("remove replica %d: %v", follower, err)
	}
	if s, _ := c.driver(leader).Status(g); slices.Contains(s.Voters, follower) || len(s.Voters) != 3 {
		t.Fatalf("voters after removing %d: %v", follower, s.Voters)
	}
	// The removed node forgets the group if it applied its removal; if
	// not, its owner tells it to.
	if err := c.driver(follower).RemoveGroup(ctx, g); err != nil && !errors.Is(err, ErrUnknownGroup) {
		t.Fatal(err)
	}
	frozen, err := c.node(follower).sm.dump(g)
	if err != nil {
		t.Fatal(err)
	}
	put("after-removal")
	for _, n := range c.running() {
		if n.id != follower {
			c.waitState(n.id, g, want, 10*time.Second)
		}
	}
	if now, _ := c.node(follower).sm.dump(g); !maps.Equal(now, frozen) {
		t.Fatalf("the removed node's state changed: %d keys, then %d", len(frozen), len(now))
	}
	if _, err := c.driver(follower).Status(g); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("the removed node still holds the group: %v", err)
	}

	leader = c.waitLeaders([]uint64{g}, 10*time.Second)[g]
	if err := c.driver(leader).RemoveReplica(ctx, g, leader); err != nil {
		t.Fatalf("the leader %d removing itself: %v", leader, err)
	}
	put("after-leader-left")
	next := c.waitLeaders([]uint64{g}, 10*time.Second)[g]
	if next == leader {
		t.Fatalf("node %d still leads after removing itself", leader)
	}
	if s, _ := c.driver(next).Status(g); len(s.Voters) != 2 || slices.Contains(s.Voters, leader) {
		t.Fatalf("voters after the leader left: %v", s.Voters)
	}
	if removedEvents.Load() == 0 {
		t.Error("no removal event")
	}
}
