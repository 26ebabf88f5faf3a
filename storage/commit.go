package storage

import (
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Batch is a set of writes applied atomically: after a crash either all of
// them are on disk or none. A Batch is one actor's state change; later it is
// one replicated log entry.
type Batch struct {
	ops []op
}

type op struct {
	key, value []byte
	del        bool
}

// Set records key = value. The slices must not be changed afterwards.
func (b *Batch) Set(key, value []byte) { b.ops = append(b.ops, op{key: key, value: value}) }

// Delete records the removal of key.
func (b *Batch) Delete(key []byte) { b.ops = append(b.ops, op{key: key, del: true}) }

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Committer makes batches durable. Done is called exactly once, from another
// goroutine, after the batch is synced to disk (nil) or failed.
type Committer interface {
	Commit(b *Batch, done func(error))
}

type pending struct {
	b    *Batch
	done func(error)
}

// Commit queues b for the next group commit; done runs once b is synced.
// Batches of one caller are committed in the order Commit was called.
func (s *Store) Commit(b *Batch, done func(error)) { s.enqueue(s.commits, b, done) }

// CommitUrgent is Commit for a write a client is waiting on: it goes into
// the next round ahead of background batches. A caller must not mix Commit
// and CommitUrgent for writes whose relative order matters.
func (s *Store) CommitUrgent(b *Batch, done func(error)) { s.enqueue(s.urgent, b, done) }

func (s *Store) enqueue(q chan *pending, b *Batch, done func(error)) {
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		done(ErrClosed)
		return
	}
	q <- &pending{b: b, done: done}
}

// CommitSync commits b and waits until it is durable.
func (s *Store) CommitSync(b *Batch) error {
	ch := make(chan error, 1)
	s.Commit(b, func(err error) { ch <- err })
	return <-ch
}

// committer gathers the batches queued since the last round, urgent ones
// first, into one badger write and one fsync, then reports to all of them.
func (s *Store) committer() {
	defer s.wg.Done()
	round := make([]*pending, 0, s.maxRnd)
	for {
		select {
		case p := <-s.urgent:
			round = append(round[:0], p)
		case p := <-s.commits:
			round = append(round[:0], p)
		case <-s.stop:
			s.drain()
			return
		}
		ops := len(round[0].b.ops)
	gather:
		for len(round) < s.maxRnd && ops < s.maxOps {
			select {
			case p := <-s.urgent:
				round, ops = append(round, p), ops+len(p.b.ops)
				continue
			default:
			}
			select {
			case p := <-s.urgent:
				round, ops = append(round, p), ops+len(p.b.ops)
			case p := <-s.commits:
				round, ops = append(round, p), ops+len(p.b.ops)
			default:
				break gather
			}
		}
		s.commitRound(round)
	}
}

// drain commits what was queued before Close.
func (s *Store) drain() {
	for {
		select {
		case p := <-s.urgent:
			s.commitRound([]*pending{p})
		case p := <-s.commits:
			s.commitRound([]*pending{p})
		default:
			return
		}
	}
}

func (s *Store) commitRound(round []*pending) {
	errs := make([]error, len(round))
	start := time.Now()
	wrote := s.write(round, errs)
	written := time.Now()
	if wrote {
		if err := s.db.Sync(); err != nil {
			for i := range errs {
				if errs[i] == nil {
					errs[i] = err
				}
			}
		}
	}
	if s.onRound != nil {
		ops := 0
		for _, p := range round {
			ops += len(p.b.ops)
		}
		s.onRound(len(round), ops, written.Sub(start), time.Since(written))
	}
	s.report(round, errs)
}

func (s *Store) report(round []*pending, errs []error) {
	ops := 0
	for _, p := range round {
		ops += len(p.b.ops)
	}
	s.statsMu.Lock()
	s.stats.Rounds++
	s.stats.Batches += uint64(len(round))
	s.stats.Ops += uint64(ops)
	s.statsMu.Unlock()
	for i, p := range round {
		if errs[i] != nil {
			p.done(fmt.Errorf("commit: %w", errs[i]))
		} else {
			p.done(nil)
		}
	}
}

// write applies the round in as few transactions as badger allows, never
// splitting one batch across two transactions. A batch that cannot fit one
// transaction fails alone. It reports whether anything was written.
func (s *Store) write(round []*pending, errs []error) bool {
	wrote := false
	for i := 0; i < len(round); {
		n, err := s.writeSome(round[i:])
		switch {
		case n == 0: // round[i] alone is unwritable
			errs[i] = err
			i++
		case err != nil: // the transaction failed: so did its batches
			for j := i; j < i+n; j++ {
				errs[j] = err
			}
			i += n
		default:
			wrote = true
			i += n
		}
	}
	return wrote
}

// writeSome commits the longest prefix of round that fits one transaction and
// returns its length; 0 means round[0] does not fit one on its own.
func (s *Store) writeSome(round []*pending) (int, error) {
	txn := s.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for i, p := range round {
		err := apply(txn, p.b)
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			// p is partly in txn: start again with the batches before it.
			txn.Discard()
			txn = s.db.NewTransaction(true)
			for _, q := range round[:i] {
				if err := apply(txn, q.b); err != nil {
					return i, err
				}
			}
			return i, txn.Commit()
		}
		if err != nil {
			return 0, err
		}
	}
	return len(round), txn.Commit()
}

func apply(txn *badger.Txn, b *Batch) error {
	for _, o := range b.ops {
		var err error
		if o.del {
			err = txn.Delete(o.key)
		} else {
			err = txn.Set(o.key, o.value)
		}
		if err != nil {
			return err
		}
	}
	return nil
}
