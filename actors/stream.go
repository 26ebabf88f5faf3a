package actors

import (
	"errors"
	"fmt"
	"sync"
	"time"

	"persona/storage"
)

// streamBlock is how many stream positions one stored reservation covers.
const streamBlock = 1 << 16

// streamReadyMargin is how many reserved positions a room wants before it
// handles a write: more than one write appends.
const streamReadyMargin = 1 << 10

// Reservations that fail are written again after reserveRetryFirst,
// doubling up to reserveRetryMost, while the partition is this node's.
const (
	reserveRetryFirst = 20 * time.Millisecond
	reserveRetryMost  = time.Second
)

// errNoPositions is take's answer when no reserved position is left: the
// reservation of the next block is under way (stream.ready says when).
var errNoPositions = errors.New("stream positions not yet reserved")

// errPartitionMoved is what a room waiting for positions hears when its
// partition changed owners.
var errPartitionMoved = errors.New("the partition changed owners")

// partStream hands out one partition's stream positions: every event of
// the partition's rooms gets one, and a /sync token holds one per
// partition. Positions are reserved in blocks under the partition's keys,
// which a cluster replicates, so neither a restart nor a new owner reuses
// one. The node that owns the partition alone hands them out. Nothing
// waits for a reservation: take fails while none is left, and ready
// calls back once one lands, so that a room never holds the worker every
// room shares while a replicated write is under way.
type partStream struct {
	mu        sync.Mutex
	key       []byte
	loaded    bool            // next and reserved were read since the partition became this node's
	next      uint64          // next position to hand out
	reserved  uint64          // positions below this are reserved in storage
	reserving bool            // a reservation is being written
	retry     time.Duration   // the wait before the next reservation, after one failed; 0 after one landed
	retryAt   time.Time       // no reservation starts before it
	retrying  bool            // a timer starts the next reservation at retryAt
	waiters   []func(error)   // ready's callbacks: called once a reservation lands or fails, or the partition goes
	inFlight  map[uint64]bool // handed out, not yet done
	gen       uint64          // counts unloads: a reservation of an earlier ownership reports nothing
	fence     uint64          // the host's fence of the partition when it was loaded: stamps the reservations
}

// legacyStreamKey is where a node kept one counter for every partition;
// every partition's positions start above it.
var legacyStreamKey = storage.Key("stream", "reserved")

func newPartStream(p int) *partStream {
	return &partStream{key: storage.Key("p", partitionName(p), "stream", "reserved"), next: 1, inFlight: map[uint64]bool{}}
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

// take hands out a position of partition p, or errNoPositions while none
// is reserved; done must be called once it is committed (or abandoned).
// The next block is reserved once half of the current one is used, so
// positions run out only when they go faster than a commit, or before
// the first block of a partition gained is reserved.
func (s *stream) take(p int) (uint64, error) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		return 0, err
	}
	if ps.reserved-ps.next <= streamBlock/2 {
		s.reserve(p)
	}
	if ps.next >= ps.reserved {
		return 0, errNoPositions
	}
	pos := ps.next
	ps.next++
	ps.inFlight[pos] = true
	return pos, nil
}

// ready reports whether partition p has streamReadyMargin positions
// reserved; if not, it starts reserving them and calls fn once, from
// another goroutine, when a reservation lands (nil) or fails, or when the
// partition leaves this node (why): fn is then to ask again.
func (s *stream) ready(p int, fn func(error)) bool {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		go fn(err)
		return false
	}
	if ps.reserved-ps.next <= streamBlock/2 {
		s.reserve(p)
	}
	if ps.next < ps.reserved && ps.reserved-ps.next >= streamReadyMargin {
		return true
	}
	ps.waiters = append(ps.waiters, fn)
	return false
}

// prepare loads partition p's counter and starts reserving its next
// block when fewer than half a block of positions are left.
func (s *stream) prepare(p int) {
	ps := s.parts[p]
	ps.mu.Lock()
	defer ps.mu.Unlock()
	if err := s.loadLocked(p); err != nil {
		return // take reads it again, and says why
	}
	if ps.reserved-ps.next <= streamBlock/2 {
		s.reserve(p)
	}
}

// loadLocked loads partition p's counter if it is not, and raises what the
// stream knows of its rooms to what it read; s.parts[p].mu is held.
func (s *stream) loadLocked(p int) error {
	ps := s.parts[p]
	if ps.loaded {
		return nil
	}
	if s.fence != nil {
		ps.fence = s.fence(p) // before the reservation: it was written under it
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

// reserve starts writing the reservation of partition p's next block,
// unless one is under way or a failed one waits to be written again;
// s.parts[p].mu is held and the counter loaded. The batch goes in the
// urgent lane, from its own goroutine, since the lane may be full and its
// callback takes the lock.
func (s *stream) reserve(p int) {
	ps := s.parts[p]
	if ps.reserving || ps.retrying {
		return
	}
	if wait := time.Until(ps.retryAt); wait > 0 {
		ps.retrying = true
		gen := ps.gen
		time.AfterFunc(wait, func() { s.retryReserve(p, gen) })
		return
	}
	ps.reserving = true
	to, gen := ps.reserved+streamBlock, ps.gen
	var b storage.Batch
	b.Set(ps.key, []byte(storage.Uint64(to)))
	b.Fence(p, ps.fence) // a reservation of an ownership that ended never lowers a later one's
	go s.store.CommitUrgent(&b, func(err error) {
		ps.mu.Lock()
		ps.reserving = false
		switch {
		case gen != ps.gen: // the partition moved meanwhile: it is read again
		case err != nil:
			ps.retry = min(max(2*ps.retry, reserveRetryFirst), reserveRetryMost)
			ps.retryAt = time.Now().Add(ps.retry)
		default:
			ps.reserved, ps.retry = max(ps.reserved, to), 0
		}
		waiters := ps.waiters
		ps.waiters = nil
		ps.mu.Unlock()
		for _, fn := range waiters {
			fn(err)
		}
	})
}

// retryReserve writes again a reservation that failed, if partition p is
// still this node's, in the same ownership gen, and its positions are
// still wanted; if it is not this node's, the rooms waiting hear so.
func (s *stream) retryReserve(p int, gen uint64) {
	ps := s.parts[p]
	ps.mu.Lock()
	if gen != ps.gen {
		ps.mu.Unlock()
		return
	}
	ps.retrying = false
	if ps.loaded && (s.local == nil || s.local(p)) {
		if len(ps.waiters) > 0 || ps.reserved-ps.next <= streamBlock/2 {
			s.reserve(p)
		}
		ps.mu.Unlock()
		return
	}
	waiters := ps.waiters
	ps.waiters = nil
	ps.mu.Unlock()
	for _, fn := range waiters {
		fn(errPartitionMoved)
	}
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
	ps.loaded = false
	ps.gen++
	clear(ps.inFlight)
	ps.retry, ps.retryAt, ps.retrying = 0, time.Time{}, false
	waiters := ps.waiters
	ps.waiters = nil
	ps.mu.Unlock()
	for _, fn := range waiters {
		fn(errPartitionMoved)
	}
}
