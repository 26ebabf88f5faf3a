package storage

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// roundFailure is the error of the last commit round that wrote anything,
// nil when it succeeded.
type roundFailure struct{ err atomic.Pointer[error] }

// noteRound records the outcome of a commit round that wrote or failed
// (committer goroutine only).
func (s *Store) noteRound(err error) {
	if err == nil {
		s.failure.err.Store(nil)
		return
	}
	s.failure.err.Store(&err)
}

// Health returns nil while the store serves: it is open, its last commit
// round did not fail, and a read of its own key works. A failed round
// stays the answer until a later round succeeds (the committer starts its
// log anew after a failure). Health writes nothing.
func (s *Store) Health() error {
	s.closeMu.RLock() // badger stays open until the read is done
	defer s.closeMu.RUnlock()
	if s.closed {
		return ErrClosed
	}
	if p := s.failure.err.Load(); p != nil {
		return fmt.Errorf("storage: the last commit round failed: %w", *p)
	}
	if _, err := s.Get(seqKey); err != nil && !errors.Is(err, ErrNotFound) {
		return fmt.Errorf("storage: read: %w", err)
	}
	return nil
}
