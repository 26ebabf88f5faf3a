package actors

import (
	"fmt"
	"testing"

	"persona/storage"
)

// TestStreamKnowsWhichRoomsChanged: after a restart nothing before the
// start is known (every room may have changed); after that a room changed
// since a position only if it had an event after it; when the index is full
// its older half goes and older positions become unknown again.
func TestStreamKnowsWhichRoomsChanged(t *testing.T) {
	t.Parallel()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err := newStream(st)
	if err != nil {
		t.Fatal(err)
	}
	start := s.floor
	s.floor = 5 // as if the node had restarted at position 6
	if !s.changedSince("!a", 4) {
		t.Fatal("a position before the start must be unknown")
	}
	s.floor = start
	take := func(room string) uint64 {
		p, err := s.take()
		if err != nil {
			t.Fatal(err)
		}
		s.touched(room, p)
		s.done([]uint64{p}, []string{})
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
// after the current one is reserved before it is needed, and a reopened
// stream starts above every position handed out.
func TestStreamReservesAhead(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s, err := newStream(st)
	if err != nil {
		t.Fatal(err)
	}
	var last uint64
	for range 2*streamBlock + 10 {
		p, err := s.take()
		if err != nil {
			t.Fatal(err)
		}
		if p <= last {
			t.Fatalf("position %d after %d", p, last)
		}
		last = p
	}
	s.mu.Lock()
	for s.reserving {
		s.reservedC.Wait()
	}
	ahead := s.reserved - s.next
	s.mu.Unlock()
	if ahead <= streamBlock/2 {
		t.Fatalf("only %d positions reserved ahead", ahead)
	}
	st.Close()
	st, err = storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	s, err = newStream(st)
	if err != nil {
		t.Fatal(err)
	}
	if p, err := s.take(); err != nil || p <= last {
		t.Fatalf("after reopening: position %d (%v), want above %d", p, err, last)
	}
}
