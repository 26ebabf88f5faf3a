package node

import (
	"slices"
	"testing"

	"persona/cluster"
)

// A partition this node leads again in a new term, with no change seen
// between, is renewed: its actors must start afresh. One it leads in the
// same term, or that another node owns, is not.
func TestPartitionsLedAgainInANewTermAreRenewed(t *testing.T) {
	self, other := cluster.Owner{Name: "n1", ActorAddr: "a1"}, cluster.Owner{Name: "n2", ActorAddr: "a2"}
	var o owners
	if got := o.renewed("n1", []cluster.Owner{self, self, other}, []uint64{3, 3, 0}); got != nil {
		t.Fatalf("renewed before any table: %v", got)
	}
	o.update("n1", []cluster.Owner{self, self, other}, []uint64{3, 3, 0})
	now, terms := []cluster.Owner{self, self, self}, []uint64{3, 5, 7}
	if got := o.renewed("n1", now, terms); !slices.Equal(got, []int{1}) {
		t.Fatalf("renewed %v, want [1]", got)
	}
	if moved := o.update("n1", now, terms); !slices.Equal(moved, []int{2}) {
		t.Fatalf("moved %v, want [2]", moved)
	}
	if got := o.renewed("n1", now, terms); got != nil {
		t.Fatalf("renewed %v once the table holds the terms", got)
	}
}
