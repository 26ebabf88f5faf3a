package actors

import (
	"context"
	"testing"
	"time"

	"persona/wire"
)

// TestSyncWaitsForTheNewsOfItsWrites: a node that answered a write to a
// partition another node owns hands out no position below it until the
// owner's news reach it; the wait is bounded, and one that runs out
// forgets the position, so the next does not wait. A node's own
// partitions, and a node alone, never wait.
func TestSyncWaitsForTheNewsOfItsWrites(t *testing.T) {
	t.Parallel()
	const partitions = 4
	owner, st1 := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p%2 == 0 })
	defer st1.Close()
	other, st2 := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p%2 == 1 })
	defer st2.Close()
	owner.broadcast = func(*wire.StreamNews) {}
	other.broadcast = func(*wire.StreamNews) {}
	ctx := context.Background()

	room := roomIn(t, 0, partitions)
	pos := takeSoon(t, owner, 0)
	owner.touched(room, pos)
	owner.done(0, []uint64{pos}, nil)
	other.wroteThrough(room, &wire.SendReply{Stream: pos})
	got := make(chan []uint64, 1)
	go func() {
		other.awaitWritten(ctx)
		v, _ := other.visible()
		got <- v
	}()
	select {
	case v := <-got:
		t.Fatalf("the position %d came before the owner's news of %d", v[0], pos)
	case <-time.After(20 * time.Millisecond):
	}
	other.heard(owner.collectNews())
	select {
	case v := <-got:
		if v[0] < pos {
			t.Fatalf("position %d after the news, want at least %d", v[0], pos)
		}
	case <-time.After(time.Second):
		t.Fatal("the news did not end the wait")
	}

	// News that never come: one bounded wait, then none.
	other.wrote(0, pos+10)
	began := time.Now()
	if n := other.awaitWritten(ctx); n != 1 || time.Since(began) < writtenWait {
		t.Fatalf("gave up on %d partitions after %s, want 1 after %s", n, time.Since(began), writtenWait)
	}
	began = time.Now()
	if n := other.awaitWritten(ctx); n != 0 || time.Since(began) > writtenWait/2 {
		t.Fatalf("waited again %s for a position given up on (%d)", time.Since(began), n)
	}

	// A node's own partition, and a node alone: no wait.
	other.wrote(1, 1<<40)
	owner.broadcast = nil
	owner.wroteThrough(roomIn(t, 1, partitions), &wire.SendReply{Stream: 1 << 40})
	for _, s := range []*stream{other, owner} {
		began = time.Now()
		if n := s.awaitWritten(ctx); n != 0 || time.Since(began) > writtenWait/2 {
			t.Fatalf("waited %s for a write no news need tell", time.Since(began))
		}
	}
}
