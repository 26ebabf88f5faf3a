package node

import (
	"testing"

	"persona/cluster"
)

// TestReadyMembers: a member turns alive and ready when it joins ready,
// comes back from suspect, dead or left, or says it is ready; it does not
// while it stays so, and this node does not count itself.
func TestReadyMembers(t *testing.T) {
	t.Parallel()
	member := func(name string, s cluster.State, ready bool) cluster.Member {
		return cluster.Member{Name: name, State: s, Meta: cluster.Meta{Ready: ready}}
	}
	r := newReadyMembers([]cluster.Member{member("self", cluster.StateAlive, true), member("n2", cluster.StateAlive, true),
		member("n3", cluster.StateAlive, false)}, "self")
	for _, step := range []struct {
		m    cluster.Member
		want bool
	}{
		{member("n2", cluster.StateAlive, true), false},   // was ready already
		{member("n3", cluster.StateAlive, true), true},    // said it is ready
		{member("n3", cluster.StateSuspect, true), false}, // a link broke
		{member("n3", cluster.StateAlive, true), true},    // healed
		{member("n2", cluster.StateLeft, false), false},   // left
		{member("n2", cluster.StateAlive, false), false},  // restarted, not ready yet
		{member("n2", cluster.StateAlive, true), true},    // ready again
		{cluster.Member{Name: "n3", State: cluster.StateAlive, Meta: cluster.Meta{Ready: true}, Leaving: true}, false},
	} {
		if got := r.saw(step.m); got != step.want {
			t.Fatalf("saw %s %s ready=%v leaving=%v: turned %v, want %v", step.m.Name, step.m.State, step.m.Ready, step.m.Leaving, got, step.want)
		}
	}
}
