package actors

import (
	"context"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/wire"
)

// A client's write through this node to a room another node owns is
// answered once the owner committed it; the owner's news of its position
// come a few milliseconds later (newsWindow, then the trip). A /sync
// through this node in between would stop below the write: its token
// would pass the write by, and /messages forward from the token would
// show it as new. So the room's answer carries the write's position
// (wire.SendReply.Stream), the node keeps the highest it answered per
// partition (wrote), and a /sync waits until the owners' news reach them
// (awaitWritten), up to writtenWait: every token the node hands out
// after it answered a write covers it. A wait that runs out (news lost,
// the owner gone) forgets the positions still unheard, so one /sync
// waits for them, not every one.

// writtenWait bounds how long a /sync waits for the news of the writes
// this node answered.
const writtenWait = 200 * time.Millisecond

// wroteThrough records the position a room's answer to a write carries,
// for the room's partition.
func (s *stream) wroteThrough(room string, reply proto.Message) {
	if r, ok := reply.(*wire.SendReply); ok && r.Stream > 0 && s.broadcast != nil {
		s.wrote(s.partition(room), r.Stream)
	}
}

// wrote records that this node answered a write that took positions of
// partition p up to pos.
func (s *stream) wrote(p int, pos uint64) {
	if p < 0 || p >= len(s.parts) || s.local(p) {
		return // this node's count covers its own partitions' writes
	}
	s.mu.Lock()
	s.written[p] = max(s.written[p], pos)
	s.mu.Unlock()
}

// awaitWritten waits until the news of each partition another node owns
// reach the positions written there, at most writtenWait or until ctx
// ends; it returns how many partitions it gave up on.
func (s *stream) awaitWritten(ctx context.Context) int {
	if s.broadcast == nil {
		return 0
	}
	var timer *time.Timer
	for {
		s.mu.Lock()
		if !s.behindWrittenLocked() {
			s.mu.Unlock()
			return 0
		}
		if s.heardC == nil {
			s.heardC = make(chan struct{})
		}
		heard := s.heardC
		s.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(writtenWait)
			defer timer.Stop()
		}
		select {
		case <-heard:
		case <-ctx.Done():
			return 0
		case <-timer.C:
			return s.forgetUnheard()
		}
	}
}

// behindWrittenLocked reports whether a partition another node owns was
// written above what its news told; s.mu is held.
func (s *stream) behindWrittenLocked() bool {
	for p, w := range s.written {
		if w > s.known[p] && !s.local(p) {
			return true
		}
	}
	return false
}

// forgetUnheard forgets the written positions the news have not reached,
// and returns how many.
func (s *stream) forgetUnheard() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for p, w := range s.written {
		if w > s.known[p] {
			s.written[p] = 0
			n++
		}
	}
	return n
}
