package actors

import (
	"fmt"
	"testing"
	"time"

	"persona/host"
	"persona/storage"
)

// newTestStream opens a stream over a store in a temp dir, with
// partitions partitions of which local says which this node owns.
func newTestStream(t *testing.T, dir string, partitions int, local func(int) bool) (*stream, *storage.Store) {
	t.Helper()
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	return newStream(st, partitions, local, func(id string) int { return host.PartitionOf(id, partitions) }), st
}

func allLocal(int) bool { return true }

// TestStreamKnowsWhichRoomsChanged: after a restart nothing before the
// start is known (every room may have changed); after that a room changed
// since a position only if it had an event after it; when the index is full
// its older half goes and older positions become unknown again.
func TestStreamKnowsWhichRoomsChanged(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 1, allLocal)
	defer st.Close()
	if !s.changedSince("!a", 4) {
		t.Fatal("a partition not yet read must be unknown")
	}
	if _, err := s.visible(); err != nil {
		t.Fatal(err)
	}
	start := s.floor[0]
	s.floor[0] = 5 // as if the node had restarted at position 6
	if !s.changedSince("!a", 4) {
		t.Fatal("a position before the start must be unknown")
	}
	s.floor[0] = start
	take := func(room string) uint64 {
		p, err := s.take(0)
		if err != nil {
			t.Fatal(err)
		}
		s.touched(room, p)
		s.done(0, []uint64{p}, []string{})
		return p
	}
	pa := take("!a")
	pb := take("!b")
	for _, c := range []struct {
		room  string
		since uint64
		want  bool
	}{
		{"!a", start, true}, {"!a", pa, false}, {"!b", pa, true}, {"!b", pb, false}, {"!c", start, false},
	} {
		if got := s.changedSince(c.room, c.since); got != c.want {
			t.Errorf("changedSince(%s, %d) = %v, want %v", c.room, c.since, got, c.want)
		}
	}
	for i := range maxTrackedRooms {
		take(fmt.Sprint("!r", i))
	}
	if len(s.last) > maxTrackedRooms {
		t.Fatalf("index holds %d rooms, cap %d", len(s.last), maxTrackedRooms)
	}
	if !s.changedSince("!c", pb) {
		t.Fatal("after eviction a position below the floor must be unknown")
	}
	last := take("!z")
	if s.changedSince("!c", last) || !s.changedSince("!z", last-1) {
		t.Fatal("positions above the floor must still be known")
	}
}

// TestStreamReservesAhead: positions keep rising across blocks, the block
// after the current one is reserved before it is needed, a reopened
// stream starts above every position handed out, and a partition's
// positions start above the one counter a node kept for all.
func TestStreamReservesAhead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	s, st := newTestStream(t, dir, 2, allLocal)
	var last uint64
	for range 2*streamBlock + 10 {
		p, err := s.take(0)
		if err != nil {
			t.Fatal(err)
		}
		if p <= last {
			t.Fatalf("position %d after %d", p, last)
		}
		last = p
	}
	ps := s.parts[0]
	ps.mu.Lock()
	for ps.reserving {
		ps.reservedC.Wait()
	}
	ahead := ps.reserved - ps.next
	ps.mu.Unlock()
	if ahead <= streamBlock/2 {
		t.Fatalf("only %d positions reserved ahead", ahead)
	}
	var b storage.Batch
	b.Set(legacyStreamKey, []byte(storage.Uint64(1000)))
	if err := st.CommitSync(&b); err != nil {
		t.Fatal(err)
	}
	st.Close()
	s, st = newTestStream(t, dir, 2, allLocal)
	defer st.Close()
	if p, err := s.take(0); err != nil || p <= last {
		t.Fatalf("after reopening: position %d (%v), want above %d", p, err, last)
	}
	if p, err := s.take(1); err != nil || p < 1000 {
		t.Fatalf("partition 1: position %d (%v), want at least 1000", p, err)
	}
}

// TestStreamMovedForgetsInFlight: a partition that moves away and back
// goes on above what it handed out, and positions left in flight by the
// ownership that ended do not hold its position back.
func TestStreamMovedForgetsInFlight(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 1, allLocal)
	defer st.Close()
	stuck, err := s.take(0)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := s.visible(); v[0] != stuck-1 {
		t.Fatalf("visible %d with %d in flight", v[0], stuck)
	}
	s.moved([]int{0})
	next, err := s.take(0)
	if err != nil {
		t.Fatal(err)
	}
	s.done(0, []uint64{next}, nil)
	if v, _ := s.visible(); next <= stuck || v[0] != next {
		t.Fatalf("after the move: took %d after %d, visible %d", next, stuck, v[0])
	}
}

// TestStreamReservesAGainedPartitionAtOnce: a partition this node gains
// has its first block reserved without a take, so that the first event
// of its rooms does not wait for that write.
func TestStreamReservesAGainedPartitionAtOnce(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 1, allLocal)
	defer st.Close()
	s.moved([]int{0})
	ps := s.parts[0]
	deadline := time.Now().Add(10 * time.Second)
	for {
		ps.mu.Lock()
		ready := ps.loaded && ps.reserved > ps.next && !ps.reserving
		ps.mu.Unlock()
		if ready {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no block reserved for the gained partition")
		}
		time.Sleep(time.Millisecond)
	}
	if p, err := s.take(0); err != nil || p == 0 {
		t.Fatalf("take after the move: %d, %v", p, err)
	}
}
