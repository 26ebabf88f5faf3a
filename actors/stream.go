package actors

import (
	"errors"
	"fmt"
	"sync"

	"persona/storage"
)

// streamBlock is how many stream positions one stored reservation covers.
const streamBlock = 1 << 16

// partStream hands out one partition's stream positions: every event of
// the partition's rooms gets one, and a /sync token holds one per
// partition. Positions are reserved in blocks under the partition's keys,
// which a cluster replicates, so neither a restart nor a new owner reuses
// one. The node that owns the partition alone hands them out.
type partStream struct {
	mu        sync.Mutex
	reservedC sync.Cond // signalled when a reservation is durable (or failed)
	key       []byte
	loaded    bool            // next and reserved were read since the partition became this node's
	next      uint64          // next position to hand out
	reserved  uint64          // positions below this are reserved in storage
	reserving bool            // a reservation is being written
	failed    error           // the last reservation failed
	inFlight  map[uint64]bool // handed out, not yet done
	gen       uint64          // counts unloads: a reservation of an earlier ownership reports nothing
}

// legacyStreamKey is where a node kept one counter for every partition;
// every partition's positions start above it.
var legacyStreamKey = storage.Key("stream", "reserved")

func newPartStream(p int) *partStream {
	ps := &partStream{key: storage.Key("p", partitionName(p), "stream", "reserved"), next: 1, inFlight: map[uint64]bool{}}
	ps.reservedC.L = &ps.mu
	return ps
}

// load reads the reservation, once the partition is this node's: the
// positions go on above every one handed out before, here or by another
// owner. It returns the highest position that may have been handed out;
// ps.mu is held.
func (ps *partStream) load(store *storage.Store) (uint64, error) {
	if ps.loaded {
		return ps.next - 1, nil
	}
	for _, k := range [][]byte{legacyStreamKey, ps.key} {
		raw, err := store.Get(k)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("read stream position: %w", err)
		default:
			ps.next = max(ps.next, storage.ParseUint64(raw))
		}
	}
	ps.reserved, ps.loaded = ps.next, true
	return ps.next - 1, nil
}

// take hands out a position; done must be called once it is committed (or
// abandoned). The next block is reserved once half of the current one is
// used, so take waits for storage only when positions go faster than a
// commit: a room appending never waits on the background commits queued
// ahead of the reservation.
func (s *stream) take(p int) (uint64, error) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		return 0, err
	}
	for ps.next >= ps.reserved {
		if err := ps.failed; err != nil {
			ps.failed = nil
			return 0, fmt.Errorf("reserve stream positions: %w", err)
		}
		ps.reserve(s.store)
		ps.reservedC.Wait()
	}
	if ps.reserved-ps.next <= streamBlock/2 {
		ps.reserve(s.store)
	}
	pos := ps.next
	ps.next++
	ps.inFlight[pos] = true
	return pos, nil
}

// prepare loads partition p's counter and starts reserving its next
// block when fewer than half a block of positions are left, without
// waiting for it: take waits only if positions are asked for before the
// reservation lands.
func (s *stream) prepare(p int) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		return // take reads it again, and says why
	}
	if ps.reserved-ps.next <= streamBlock/2 {
		ps.reserve(s.store)
	}
}

// loadLocked loads partition p's counter if it is not, and raises what the
// stream knows of its rooms to what it read; s.parts[p].mu is held.
func (s *stream) loadLocked(p int) error {
	ps := s.parts[p]
	if ps.loaded {
		return nil
	}
	high, err := ps.load(s.store)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.raiseFloor(p, high)
	s.mu.Unlock()
	return nil
}

// reserve starts writing the reservation of the next block, unless one is
// under way; ps.mu is held. The batch goes in the urgent lane, from its own
// goroutine, since the lane may be full and its callback takes ps.mu.
func (ps *partStream) reserve(store *storage.Store) {
	if ps.reserving {
		return
	}
	ps.reserving = true
	to, gen := ps.reserved+streamBlock, ps.gen
	var b storage.Batch
	b.Set(ps.key, []byte(storage.Uint64(to)))
	go store.CommitUrgent(&b, func(err error) {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		ps.reserving = false
		switch {
		case gen != ps.gen: // the partition moved meanwhile: it is read again
		case err != nil:
			ps.failed = err
		default:
			ps.reserved = max(ps.reserved, to)
		}
		ps.reservedC.Broadcast()
	})
}

// release marks positions of partition p committed (or abandoned).
func (s *stream) release(p int, positions []uint64) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	for _, pos := range positions {
		delete(ps.inFlight, pos)
	}
}

// localVisible is the highest position of partition p, which this node
// owns, at or below which every position is done, and the highest handed
// out.
func (s *stream) localVisible(p int) (visible, high uint64, err error) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		return 0, 0, err
	}
	high = ps.next - 1
	visible = high
	for pos := range ps.inFlight {
		if pos <= visible {
			visible = pos - 1
		}
	}
	return visible, high, nil
}

// unload forgets partition p's reservation, which this node no longer
// owns or owns anew: it is read again when the node hands out positions
// of it, above those handed out before, here or by another owner. The
// positions still in flight are forgotten too: their writes belong to an
// ownership that ended, and must not hold the partition's position back
// should it come back.
func (s *stream) unload(p int) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	ps.loaded, ps.failed = false, nil
	ps.gen++
	clear(ps.inFlight)
}
