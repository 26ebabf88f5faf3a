package actors

import (
	"errors"
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

// takeSoon takes a position of partition p, waiting, as a room does, for
// the stream to call back while none is reserved.
func takeSoon(t *testing.T, s *stream, p int) uint64 {
	t.Helper()
	for {
		pos, err := s.take(p)
		if err == nil {
			return pos
		}
		if !errors.Is(err, errNoPositions) {
			t.Fatal(err)
		}
		called := make(chan error, 1)
		if s.ready(p, func(err error) { called <- err }) {
			continue
		}
		select {
		case <-called:
		case <-time.After(10 * time.Second):
			t.Fatal("the stream did not call back")
		}
	}
}

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
		p := takeSoon(t, s, 0)
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
		p := takeSoon(t, s, 0)
		if p <= last {
			t.Fatalf("position %d after %d", p, last)
		}
		last = p
	}
	ps := s.parts[0]
	var ahead uint64
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ps.mu.Lock()
		reserving := ps.reserving
		ahead = ps.reserved - ps.next
		ps.mu.Unlock()
		if !reserving || time.Now().After(deadline) {
			break
		}
	}
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
	if p := takeSoon(t, s, 0); p <= last {
		t.Fatalf("after reopening: position %d, want above %d", p, last)
	}
	if p := takeSoon(t, s, 1); p < 1000 {
		t.Fatalf("partition 1: position %d, want at least 1000", p)
	}
}

// TestStreamMovedForgetsInFlight: a partition that moves away and back
// goes on above what it handed out, and positions left in flight by the
// ownership that ended do not hold its position back.
func TestStreamMovedForgetsInFlight(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 1, allLocal)
	defer st.Close()
	stuck := takeSoon(t, s, 0)
	if v, _ := s.visible(); v[0] != stuck-1 {
		t.Fatalf("visible %d with %d in flight", v[0], stuck)
	}
	s.moved([]int{0})
	next := takeSoon(t, s, 0)
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

// TestStreamTakeNeverWaits: while no position is reserved take fails at
// once and starts the reservation, and ready calls back once it lands; a
// reservation that fails calls back with why and is written again later;
// a move calls back the rooms still waiting.
func TestStreamTakeNeverWaits(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 2, allLocal)
	defer st.Close()
	if _, err := s.take(0); !errors.Is(err, errNoPositions) {
		t.Fatalf("the first take before any reservation: %v, want errNoPositions", err)
	}
	called := make(chan error, 1)
	if !s.ready(0, func(err error) { called <- err }) {
		select {
		case err := <-called:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("no call back once the reservation landed")
		}
	}
	if _, err := s.take(0); err != nil {
		t.Fatalf("take once reserved: %v", err)
	}

	// A move calls back the rooms waiting for positions.
	ps := s.parts[1]
	ps.mu.Lock()
	if _, err := ps.load(st); err != nil {
		t.Fatal(err)
	}
	ps.retryAt = time.Now().Add(time.Hour) // as after a failed reservation
	ps.mu.Unlock()
	if s.ready(1, func(err error) { called <- err }) {
		t.Fatal("ready with no position reserved")
	}
	s.moved([]int{1})
	if err := <-called; !errors.Is(err, errPartitionMoved) {
		t.Fatalf("after a move the waiting room heard %v", err)
	}

	// A failed reservation calls back with why, and is retried.
	s.moved([]int{0})
	ps = s.parts[0]
	ps.mu.Lock()
	if _, err := ps.load(st); err != nil {
		t.Fatal(err)
	}
	ps.mu.Unlock()
	st.Close()
	if s.ready(0, func(err error) { called <- err }) {
		t.Fatal("ready with no position reserved")
	}
	if err := <-called; !errors.Is(err, storage.ErrClosed) {
		t.Fatalf("a failed reservation called back with %v", err)
	}
	ps.mu.Lock()
	retry, retryAt := ps.retry, ps.retryAt
	ps.mu.Unlock()
	if retry == 0 || !retryAt.After(time.Now().Add(-time.Second)) {
		t.Fatalf("no retry planned after a failed reservation (retry %s)", retry)
	}
	if s.ready(0, func(err error) { called <- err }) {
		t.Fatal("ready with no position reserved")
	}
	select {
	case err := <-called: // the retry ran, and failed again
		if !errors.Is(err, storage.ErrClosed) {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the failed reservation was not written again")
	}
}
