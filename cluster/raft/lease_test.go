package raft

import (
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
	deadline := time.Now().Add(5 * time.Second)
	for !d.LeaseValid(1) {
		if time.Now().After(deadline) {
			t.Fatal("the leader of a healthy group holds no lease")
		}
		time.Sleep(10 * time.Millisecond)
	}
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
