package actors

import (
	"math"
	"slices"
	"sync"
	"time"

	"persona/storage"
	"persona/wire"
)

// stream is the node's view of every partition's stream: the counters of
// the partitions it owns (partStream), the positions the owners of the
// others told it (news), which rooms had events after which position, and
// the /sync requests waiting for news of their users.
type stream struct {
	store     *storage.Store
	parts     []*partStream
	local     func(p int) bool       // whether this node owns partition p
	partition func(id string) int    // the partition of an identity
	broadcast func(*wire.StreamNews) // tells every other node; nil: a node alone
	fence     func(p int) uint64     // the host's fence of partition p (host.Fence); nil: none

	mu   sync.Mutex
	subs map[string][]chan struct{}
	all  map[chan struct{}]bool
	// last is the newest position of each room with an event after its
	// partition's floor, so that an incremental /sync asks only the rooms
	// that changed; what happened at or below floor[p] (before the node
	// started, before it heard of the partition, in news it missed, or
	// evicted) is unknown, as is everything while floor[p] is noFloor. It
	// holds at most maxTrackedRooms rooms; beyond, each partition's older
	// half goes and its floor rises.
	last  map[string]uint64
	floor []uint64
	known []uint64 // the visible position each partition's owner told last
	news  news
	// written is, for each partition another node owns, the highest
	// position of a write this node answered a client for, which its
	// /sync waits to hear of (stream_written.go); heardC is closed when
	// news raise known while a /sync waits.
	written []uint64
	heardC  chan struct{}
	// members are the recent member events of this server's users, by user
	// (stream_members.go).
	members      map[string][]memberChange
	membersSwept time.Time // when members was last swept of users whose events all expired
}

// noFloor is the floor of a partition the node knows nothing of yet.
const noFloor = math.MaxUint64

// maxTrackedRooms bounds stream.last (about 100 bytes a room).
const maxTrackedRooms = 1 << 17

func newStream(store *storage.Store, partitions int, local func(int) bool, partition func(string) int) *stream {
	s := &stream{store: store, local: local, partition: partition, parts: make([]*partStream, partitions),
		subs: map[string][]chan struct{}{}, all: map[chan struct{}]bool{}, last: map[string]uint64{}, members: map[string][]memberChange{},
		floor: make([]uint64, partitions), known: make([]uint64, partitions), written: make([]uint64, partitions),
		news: newNews(partitions)}
	for p := range s.parts {
		s.parts[p], s.floor[p] = newPartStream(p), noFloor
	}
	return s
}

// raiseFloor makes every event of partition p at or below pos unknown; s.mu
// is held.
func (s *stream) raiseFloor(p int, pos uint64) {
	if s.floor[p] == noFloor {
		s.floor[p] = pos
	} else {
		s.floor[p] = max(s.floor[p], pos)
	}
}

// done marks positions of partition p committed and wakes the users they
// concern (nil users: everyone waiting), here and, through the news, on
// every other node.
func (s *stream) done(p int, positions []uint64, users []string) {
	s.release(p, positions)
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broadcast != nil && len(positions) > 0 {
		s.news.wake(users)
		s.news.kick()
	}
	s.wake(users)
}

// wake wakes the /sync requests waiting for users (nil: all); s.mu is held.
func (s *stream) wake(users []string) {
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

// wakeAll wakes every /sync waiting on this node.
func (s *stream) wakeAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.wake(nil)
}

// touched records that room has an event at pos, before the position is
// done: whoever sees the position visible finds the room changed.
func (s *stream) touched(room string, pos uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broadcast != nil {
		s.news.touched(room, pos)
	}
	s.touchedLocked(room, pos)
}

// touchedLocked is touched with s.mu held.
func (s *stream) touchedLocked(room string, pos uint64) {
	p := s.partition(room)
	if f := s.floor[p]; (f != noFloor && pos <= f) || pos <= s.last[room] {
		return
	}
	s.last[room] = pos
	if len(s.last) <= maxTrackedRooms {
		return
	}
	positions := make([][]uint64, len(s.parts))
	for r, pos := range s.last {
		p := s.partition(r)
		positions[p] = append(positions[p], pos)
	}
	for p, ps := range positions {
		if len(ps) > 0 {
			slices.Sort(ps)
			s.raiseFloor(p, ps[len(ps)/2])
		}
	}
	for r, pos := range s.last {
		if f := s.floor[s.partition(r)]; f != noFloor && pos <= f {
			delete(s.last, r)
		}
	}
}

// changedSince reports whether room may have an event after since (a
// position of its partition): false only when the stream knows it has none.
func (s *stream) changedSince(room string, since uint64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	f := s.floor[s.partition(room)]
	return f == noFloor || since < f || s.last[room] > since
}

// visible is, for each partition, the highest position at or below which
// every event is committed: this node's count for those it owns, the
// owner's last news for the others (0 while none came).
func (s *stream) visible() ([]uint64, error) {
	out := make([]uint64, len(s.parts))
	for p := range s.parts {
		if s.local(p) {
			v, _, err := s.localVisible(p)
			if err != nil {
				return nil, err
			}
			out[p] = v
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range out {
		out[p] = max(out[p], s.known[p])
	}
	return out, nil
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

// moved forgets the counters of the partitions that changed owners: one
// this node gained is read again from storage, above what the old owner
// handed out, and its first block is reserved at once, so that the
// partition's first event does not wait for that write (a room waits in
// the worker every room shares).
func (s *stream) moved(partitions []int) {
	for _, p := range partitions {
		s.unload(p)
		if s.local != nil && s.local(p) {
			go s.prepare(p)
		}
	}
}

// newsWindow is how long the stream gathers news before it tells them;
// newsHeartbeat is how often it tells its positions without news.
const (
	newsWindow    = 2 * time.Millisecond
	newsHeartbeat = time.Second
)
