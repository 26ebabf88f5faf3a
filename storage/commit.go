package storage

import (
	"cmp"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Batch is a set of writes applied atomically: after a crash either all of
// them are on disk or none. A Batch is one actor's state change; later it is
// one replicated log entry.
type Batch struct {
	ops        []op
	fence      uint64 // Fence's number; 0 for none
	fenceRange int    // the partition fence is of
}

type op struct {
	key, value []byte
	del        bool
}

// Set records key = value. The slices must not be changed afterwards.
func (b *Batch) Set(key, value []byte) { b.ops = append(b.ops, op{key: key, value: value}) }

// Delete records the removal of key.
func (b *Batch) Delete(key []byte) { b.ops = append(b.ops, op{key: key, del: true}) }

// Grow makes room for n more writes.
func (b *Batch) Grow(n int) { b.ops = slices.Grow(b.ops, n) }

// Len returns the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Committer makes batches durable.
type Committer interface {
	// Commit queues b; done is called exactly once, from another
	// goroutine, after b is synced to disk (nil) or failed. A batch's
	// keys must all be in one key range: one partition's (under
	// Key("p", partition)) or NodeRange; another is refused with
	// ErrSpansRanges.
	Commit(b *Batch, done func(error))
}

type pending struct {
	b      *Batch
	done   func(error)
	urgent bool
	rng    int // the key range of b's keys
}

// Commit queues b for the next group commit; done runs once b is synced.
// Batches of one caller are committed in the order Commit was called.
func (s *Store) Commit(b *Batch, done func(error)) { s.enqueue(s.commits, b, done) }

// CommitUrgent queues b as Commit does, for a write a client is waiting
// on: it goes into the next round ahead of background batches. A caller must not mix Commit
// and CommitUrgent for writes whose relative order matters.
func (s *Store) CommitUrgent(b *Batch, done func(error)) { s.enqueue(s.urgent, b, done) }

func (s *Store) enqueue(q chan *pending, b *Batch, done func(error)) {
	rng, err := b.keyRange()
	if err != nil {
		go done(err)
		return
	}
	s.closeMu.RLock()
	defer s.closeMu.RUnlock()
	if s.closed {
		done(ErrClosed)
		return
	}
	p := &pending{b: b, done: done, urgent: q == s.urgent, rng: rng}
	if p.urgent && s.opts.CommitPath != nil {
		s.proposeUrgent(p)
		return
	}
	q <- p
}

// ErrSpansRanges is returned for a batch whose keys are in two key
// ranges (two partitions, or a partition and NodeRange): each range is
// its own log, so such a batch could not be atomic.
var ErrSpansRanges = errors.New("storage: a batch spans two key ranges")

// keyRange returns the key range of b's keys, or ErrSpansRanges naming
// two keys of different ranges. An empty batch is in NodeRange.
func (b *Batch) keyRange() (int, error) {
	if len(b.ops) == 0 {
		return NodeRange, nil
	}
	first := b.ops[0].key
	rng := rangeOf(first)
	for _, o := range b.ops[1:] {
		if r := rangeOf(o.key); r != rng {
			return 0, fmt.Errorf("%w: %q and %q", ErrSpansRanges, first, o.key)
		}
	}
	return rng, nil
}

// CommitSync commits b and waits until it is durable.
func (s *Store) CommitSync(b *Batch) error {
	ch := make(chan error, 1)
	s.Commit(b, func(err error) { ch <- err })
	return <-ch
}

// committer makes rounds: a few badger transactions and one fsync, then a
// report to every batch of the round. Urgent batches go first. Background
// batches are written TxnOps keys at a time, up to MaxOpsPerRound a
// round; once a round holds an urgent batch it ends after the transaction
// under way, so a write a client waits on waits for one small transaction
// and one fsync, never for a whole round of background work. While
// clients write, the committer rests after each background round as long
// as the round took, unless a client's write comes: the disk is then idle
// half the time, and a client's sync finds little queued before it.
// "While clients write" means two urgent rounds within BusyGap, the last
// within UrgentCalm.
func (s *Store) committer() {
	defer s.wg.Done()
	var backlog []*pending // background batches taken from their lane, in order
	var rest time.Duration
	for {
		var urgent []*pending
		if rest > 0 {
			select {
			case p := <-s.urgent:
				urgent = append(urgent, p)
			case <-time.After(rest):
			case <-s.stop:
				s.drain(backlog)
				return
			}
		}
		if len(urgent) == 0 && len(backlog) == 0 {
			select {
			case p := <-s.urgent:
				urgent = append(urgent, p)
			case p := <-s.commits:
				backlog = append(backlog, p)
			case <-s.stop:
				s.drain(backlog)
				return
			}
		}
		start := time.Now()
		backlog = s.commitRound(s.takeUrgent(urgent), s.takeBackground(backlog))
		rest = 0
		if len(urgent) == 0 && s.clientsWriting(start) {
			rest = time.Since(start)
		}
	}
}

// noteUrgent records that an urgent batch was written at t.
func (s *Store) noteUrgent(t time.Time) { s.urgentPrev, s.urgentAt = s.urgentAt, t }

// clientsWriting tells whether, at t, clients write often: the last two
// urgent rounds were within BusyGap of each other, the last within
// UrgentCalm of t. One write alone, or a user renaming now and then, does
// not slow the background lane.
func (s *Store) clientsWriting(t time.Time) bool {
	return t.Sub(s.urgentAt) < s.opts.UrgentCalm && s.urgentAt.Sub(s.urgentPrev) < s.opts.BusyGap
}

// backgroundTxns is how many background transactions a round starting at
// t may write after its urgent batches (-1: no limit). A round with urgent
// batches writes them alone: a background transaction in their round
// would make them wait for its write (TxnOps keys: milliseconds on two busy
// cores). So that a steady stream of urgent writes cannot starve the
// background lane, an urgent round takes one background transaction along
// once urgent rounds have kept background batches waiting for
// StarveAfter.
func (s *Store) backgroundTxns(urgent, waiting bool, t time.Time) int {
	txns := -1
	if urgent {
		txns = 0
		if !s.urgentOnlySince.IsZero() && t.Sub(s.urgentOnlySince) > s.opts.StarveAfter {
			txns = 1
		}
	}
	switch {
	case txns != 0 || !waiting:
		s.urgentOnlySince = time.Time{}
	case s.urgentOnlySince.IsZero():
		s.urgentOnlySince = t
	}
	return txns
}

// takeUrgent adds the urgent batches already queued to round.
func (s *Store) takeUrgent(round []*pending) []*pending {
	for len(round) < s.opts.MaxBatchesPerRound {
		select {
		case p := <-s.urgent:
			round = append(round, p)
		default:
			return round
		}
	}
	return round
}

// takeBackground adds queued background batches to backlog until it holds
// a round's worth.
func (s *Store) takeBackground(backlog []*pending) []*pending {
	ops := 0
	for _, p := range backlog {
		ops += len(p.b.ops)
	}
	for len(backlog) < s.opts.MaxBatchesPerRound && ops < s.opts.MaxOpsPerRound {
		select {
		case p := <-s.commits:
			backlog, ops = append(backlog, p), ops+len(p.b.ops)
		default:
			return backlog
		}
	}
	return backlog
}

// drain commits backlog and what was queued before Close.
func (s *Store) drain(backlog []*pending) {
	for {
		urgent := s.takeUrgent(nil)
		backlog = s.takeBackground(backlog)
		if len(urgent) == 0 && len(backlog) == 0 {
			return
		}
		for len(urgent) > 0 || len(backlog) > 0 {
			backlog = s.commitRound(urgent, backlog)
			urgent = nil
		}
	}
}

// commitRound writes urgent, then background batches from backlog, syncs
// once and reports. It returns the background batches left for the next
// round.
func (s *Store) commitRound(urgent, backlog []*pending) []*pending {
	var round []*pending
	var errs []error
	var failed error // a transaction or the sync failed: the store's fault, not one batch's
	wrote := false
	write := func(ps []*pending) {
		n := len(round)
		round, errs = append(round, ps...), append(errs, make([]error, len(ps))...)
		w, err := s.write(ps, errs[n:])
		wrote = w || wrote
		failed = cmp.Or(failed, err)
	}
	start := time.Now()
	write(urgent)
	// Urgent batches are synced at once. Background batches follow a
	// transaction at a time until the round is full or an urgent batch
	// waits.
	txns := s.backgroundTxns(len(urgent) > 0, len(backlog) > 0, start)
	if len(urgent) > 0 {
		s.noteUrgent(start)
	}
	limit, txnOps := s.opts.MaxOpsPerRound, s.opts.TxnOps
	if start.Sub(s.urgentAt) < s.opts.UrgentCalm {
		limit = txnOps
	}
	for ops := 0; len(backlog) > 0 && ops < limit && txns != 0; txns-- {
		n, k := 0, 0
		for n < len(backlog) && (n == 0 || k+len(backlog[n].b.ops) <= txnOps) {
			k += len(backlog[n].b.ops)
			n++
		}
		write(backlog[:n])
		backlog, ops = backlog[n:], ops+k
		if u := s.takeUrgent(nil); len(u) > 0 {
			write(u)
			s.noteUrgent(time.Now())
			break
		}
	}
	written := time.Now()
	if wrote {
		if err := s.sync(); err != nil {
			failed = cmp.Or(failed, err)
			for i := range errs {
				if errs[i] == nil {
					errs[i] = err
				}
			}
		}
	}
	if wrote || failed != nil {
		s.noteRound(failed)
	}
	if s.opts.OnRound != nil {
		s.opts.OnRound(len(round), opsIn(round), written.Sub(start), time.Since(written))
	}
	s.report(round, errs, true)
	s.sealFull()
	return backlog
}

func opsIn(round []*pending) int {
	ops := 0
	for _, p := range round {
		ops += len(p.b.ops)
	}
	return ops
}

// report tells every batch of the round its outcome: urgent batches
// first, then, if yield, after yielding the processor so that the
// goroutines woken for waiting clients run now rather than after the
// whole report, background batches. Each lane keeps its order.
func (s *Store) report(round []*pending, errs []error, yield bool) {
	s.statsMu.Lock()
	s.stats.Rounds++
	s.stats.Batches += uint64(len(round))
	s.stats.Ops += uint64(opsIn(round))
	s.statsMu.Unlock()
	tell := func(urgent bool) (told bool) {
		for i, p := range round {
			if p.urgent != urgent {
				continue
			}
			if errs[i] != nil {
				p.done(fmt.Errorf("commit: %w", errs[i]))
			} else {
				p.done(nil)
			}
			told = true
		}
		return told
	}
	if tell(true) && yield {
		runtime.Gosched()
	}
	tell(false)
}

// write applies the round in as few transactions as badger allows, never
// splitting one batch across two transactions. A batch that cannot fit one
// transaction fails alone. It reports whether anything was written, and
// the error of a transaction that failed to commit.
func (s *Store) write(round []*pending, errs []error) (wrote bool, failed error) {
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
			failed = cmp.Or(failed, err)
			i += n
		default:
			wrote = true
			i += n
		}
	}
	return wrote, failed
}

// writeSome commits the longest prefix of round that fits one transaction and
// returns its length; 0 means round[0] does not fit one on its own.
func (s *Store) writeSome(round []*pending) (int, error) {
	seq := s.seq + 1
	txn := s.newTxn(seq)
	defer func() { txn.Discard() }()
	n := len(round)
	for i, p := range round {
		err := s.apply(txn, p.b)
		if errors.Is(err, badger.ErrTxnTooBig) && i > 0 {
			// p is partly in txn: start again with the batches before it.
			txn.Discard()
			txn = s.newTxn(seq)
			for _, q := range round[:i] {
				if err := s.apply(txn, q.b); err != nil {
					return i, err
				}
			}
			n = i
			break
		}
		if err != nil {
			return 0, err
		}
	}
	if err := txn.Commit(); err != nil {
		return n, err
	}
	s.seq = seq
	if s.log != nil {
		s.log.add(seq, round[:n])
	}
	return n, nil
}

func (s *Store) apply(txn *badger.Txn, b *Batch) error {
	for _, o := range b.ops {
		if len(o.value) >= s.valueLimit {
			s.bigValue = true
		}
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
