package raft

import (
	"context"
	"testing"
	"time"
)

// TestLeaseLapsesBeforeAnotherCanLead: the leader of a healthy group holds
// a lease and its followers none; once the followers are gone the
// leader's lease lapses within half an election timeout of their last
// answers, while the leader may still think it leads: the time a
// partitioned or paused leader would otherwise serve stale reads in.
func TestLeaseLapsesBeforeAnotherCanLead(t *testing.T) {
	c := newCluster(t, 3, []uint64{1}, nil)
	leader := c.waitLeaders([]uint64{1}, 10*time.Second)[1]
	d := c.driver(leader)
	waitLease(t, d)
	for _, n := range c.running() {
		if n.id != leader && n.d.LeaseValid(1) {
			t.Fatalf("follower %d holds a lease", n.id)
		}
	}
	opts := d.opts
	lease := time.Duration(opts.ElectionTicks) * opts.TickInterval / 2
	stopped := time.Now()
	for _, n := range c.running() {
		if n.id != leader {
			c.stop(n.id)
		}
	}
	for d.LeaseValid(1) {
		if time.Since(stopped) > lease+4*opts.TickInterval {
			t.Fatalf("the lease still runs %v after the followers stopped (lease %v)", time.Since(stopped), lease)
		}
		time.Sleep(5 * time.Millisecond)
	}
	st, _ := d.Status(1)
	t.Logf("lease lapsed %v after the followers stopped (lease %v); the node's role then: %s",
		time.Since(stopped).Round(time.Millisecond), lease, st.Role)
}

// A leader that hands its leadership over holds no lease from then on,
// while it still leads: the transferee campaigns at once, and the voters
// grant it their votes whatever they heard from this leader. Here the
// transferee is down, so the leader stays leader until raft gives the
// transfer up; then its lease runs again.
func TestTransferEndsTheLease(t *testing.T) {
	c := newCluster(t, 3, []uint64{1}, nil)
	leader := c.waitLeaders([]uint64{1}, 10*time.Second)[1]
	d := c.driver(leader)
	waitLease(t, d)
	deadline := time.Now().Add(5 * time.Second)
	var to uint64
	for _, n := range c.running() {
		if n.id != leader {
			to = n.id
			break
		}
	}
	c.stop(to)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	go func() { _ = d.TransferLeader(ctx, 1, to) }()
	for d.LeaseValid(1) {
		if time.Now().After(deadline) {
			t.Fatal("the lease runs on while the leader hands its leadership over")
		}
		time.Sleep(time.Millisecond)
	}
	if st, _ := d.Status(1); st.Role != Leader {
		t.Fatalf("the leader is %s once its lease ended, want still leader", st.Role)
	}
	for !d.LeaseValid(1) {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("the lease does not run again once the transfer is given up")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitLease waits up to 5 s until d holds the lease of group 1.
func waitLease(t *testing.T, d *Driver) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !d.LeaseValid(1) {
		if time.Now().After(deadline) {
			t.Fatal("the leader of a healthy group holds no lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
