package host

import "testing"

// A fifo keeps no reference to a run it handed out, also after it moves
// the waiting runs to the front: a stale run would keep a passivated actor
// (its mailbox, context and state) in memory.
func TestFifoForgetsRunsItHandedOut(t *testing.T) {
	t.Parallel()
	var f fifo
	const n = 3000
	for i := range n {
		f.push(func() { _ = i })
	}
	popped := 0
	for f.head != 0 || popped == 0 { // until the waiting runs moved to the front
		if f.pop() == nil {
			t.Fatal("pop returned nil")
		}
		popped++
	}
	if len(f.q) != n-popped {
		t.Fatalf("%d runs wait, want %d", len(f.q), n-popped)
	}
	for i, fn := range f.q[len(f.q):cap(f.q)] {
		if fn != nil {
			t.Fatalf("slot %d past the waiting runs still holds a run", len(f.q)+i)
		}
	}
	for !f.empty() {
		f.pop()
		popped++
	}
	if popped != n {
		t.Fatalf("popped %d runs, want %d", popped, n)
	}
}
