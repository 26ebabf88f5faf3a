package actors

import (
	"errors"
	"fmt"
	"slices"
	"sync"

	"persona/storage"
)

// streamBlock is how many stream positions one stored reservation covers.
const streamBlock = 1 << 16

// stream hands out node-wide stream positions: every room event and presence
// change gets one, and /sync tokens are positions. Positions are reserved in
// blocks in storage, so a restart never reuses one. Visible is the highest
// position below which nothing is still being committed, so a sync token
// never skips an event that is in flight.
type stream struct {
	mu        sync.Mutex
	reservedC sync.Cond // signalled when a reservation is durable (or failed)
	store     *storage.Store
	next      uint64          // next position to hand out
	reserved  uint64          // positions below this are reserved in storage
	reserving bool            // a reservation is being written
	failed    error           // the last reservation failed
	inFlight  map[uint64]bool // handed out, not yet done
	subs      map[string][]chan struct{}
	all       map[chan struct{}]bool
	// last is the newest position of each room with an event after floor,
	// so that an incremental /sync asks only the rooms that changed; what
	// happened at or below floor (before the node started, or evicted) is
	// unknown. It holds at most maxTrackedRooms rooms; beyond, the older
	// half goes and floor rises.
	last  map[string]uint64
	floor uint64
}

// maxTrackedRooms bounds stream.last (about 100 bytes a room).
const maxTrackedRooms = 1 << 17

var streamKey = storage.Key("stream", "reserved")

func newStream(store *storage.Store) (*stream, error) {
	s := &stream{store: store, next: 1, inFlight: map[uint64]bool{}, subs: map[string][]chan struct{}{}, all: map[chan struct{}]bool{}}
	raw, err := store.Get(streamKey)
	switch {
	case errors.Is(err, storage.ErrNotFound):
	case err != nil:
		return nil, fmt.Errorf("read stream position: %w", err)
	default:
		s.next = storage.ParseUint64(raw)
	}
	s.reserved, s.floor, s.last = s.next, s.next-1, map[string]uint64{}
	s.reservedC.L = &s.mu
	return s, nil
}

// take hands out a position; done must be called once it is committed (or
// abandoned). The next block is reserved once half of the current one is
// used, so take waits for storage only when positions go faster than a
// commit: a room appending never waits on the background commits queued
// ahead of the reservation.
func (s *stream) take() (uint64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for s.next >= s.reserved {
		if err := s.failed; err != nil {
			s.failed = nil
			return 0, fmt.Errorf("reserve stream positions: %w", err)
		}
		s.reserve()
		s.reservedC.Wait()
	}
	if s.reserved-s.next <= streamBlock/2 {
		s.reserve()
	}
	p := s.next
	s.next++
	s.inFlight[p] = true
	return p, nil
}

// reserve starts writing the reservation of the next block, unless one is
// under way; s.mu is held. The batch goes in the urgent lane, from its own
// goroutine, since the lane may be full and its callback takes s.mu.
func (s *stream) reserve() {
	if s.reserving {
		return
	}
	s.reserving = true
	to := s.reserved + streamBlock
	var b storage.Batch
	b.Set(streamKey, []byte(storage.Uint64(to)))
	go s.store.CommitUrgent(&b, func(err error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.reserving = false
		if err != nil {
			s.failed = err
		} else {
			s.reserved = max(s.reserved, to)
		}
		s.reservedC.Broadcast()
	})
}

// done marks positions committed and wakes the users they concern (nil
// users: everyone waiting).
func (s *stream) done(positions []uint64, users []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range positions {
		delete(s.inFlight, p)
	}
	if users == nil {
		for ch := range s.all {
			close(ch)
		}
		s.all = map[chan struct{}]bool{}
		s.subs = map[string][]chan struct{}{}
		return
	}
	for _, u := range users {
		for _, ch := range s.subs[u] {
			if s.all[ch] {
				delete(s.all, ch)
				close(ch)
			}
		}
		delete(s.subs, u)
	}
}

// touched records that room has an event at pos.
func (s *stream) touched(room string, pos uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pos <= s.floor || pos <= s.last[room] {
		return
	}
	s.last[room] = pos
	if len(s.last) <= maxTrackedRooms {
		return
	}
	positions := make([]uint64, 0, len(s.last))
	for _, p := range s.last {
		positions = append(positions, p)
	}
	slices.Sort(positions)
	s.floor = positions[len(positions)/2]
	for r, p := range s.last {
		if p <= s.floor {
			delete(s.last, r)
		}
	}
}

// changedSince reports whether room may have an event after since: false
// only when the stream knows it has none.
func (s *stream) changedSince(room string, since uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return since < s.floor || s.last[room] > since
}

// visible is the highest position at or below which every position is done.
func (s *stream) visible() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	v := s.next - 1
	for p := range s.inFlight {
		if p <= v {
			v = p - 1
		}
	}
	return v
}

// subscribe returns a channel closed at the next event for user.
func (s *stream) subscribe(user string) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	s.mu.Lock()
	s.subs[user] = append(s.subs[user], ch)
	s.all[ch] = true
	s.mu.Unlock()
	return ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.all[ch] {
			delete(s.all, ch)
			list := s.subs[user]
			for i, c := range list {
				if c == ch {
					s.subs[user] = append(list[:i], list[i+1:]...)
					break
				}
			}
			if len(s.subs[user]) == 0 {
				delete(s.subs, user)
			}
		}
	}
}

// StreamPosition is the node's current /sync position: every event at or
// below it is committed.
func (h *Service) StreamPosition() uint64 { return h.stream.visible() }

// Subscribe returns a channel closed when the next event that concerns user
// (or any presence change) is committed. Subscribe before reading, so that
// nothing is missed in between: wake, cancel := h.Subscribe(u); defer
// cancel(); read; then wait on wake.
func (h *Service) Subscribe(user string) (wake <-chan struct{}, cancel func()) {
	return h.stream.subscribe(user)
}

// RoomChangedSince reports whether room may have events after the /sync
// position since; false means it certainly has none.
func (h *Service) RoomChangedSince(room string, since uint64) bool {
	return h.stream.changedSince(room, since)
}
