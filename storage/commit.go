package storage

import (
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

// Grow makes room for n more writes.
func (b *Batch) Grow(n int) { b.ops = slices.Grow(b.ops, n) }

// Len is the number of writes in the batch.
func (b *Batch) Len() int { return len(b.ops) }

// Committer makes batches durable. Done is called exactly once, from another
// goroutine, after the batch is synced to disk (nil) or failed. The store
// calls a background batch's done once reads see the batch too; an urgent
// batch's may come first (reads of its keys then wait for it).
type Committer interface {
	Commit(b *Batch, done func(error))
}

type pending struct {
	b      *Batch
	done   func(error)
	urgent bool
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
	q <- &pending{b: b, done: done, urgent: q == s.urgent}
}

// CommitSync commits b and waits until it is durable.
func (s *Store) CommitSync(b *Batch) error {
	ch := make(chan error, 1)
	s.Commit(b, func(err error) { ch <- err })
	return <-ch
}

// urgentCalm is how long after an urgent batch background rounds stay
// small (one transaction): a client's next write then waits for a short
// sync, not for one of a full round.
var urgentCalm = 50 * time.Millisecond

// busyGap: urgent rounds closer than this (more than 50 a second) mean
// clients are writing, and background rounds rest between them.
var busyGap = 20 * time.Millisecond

// starveAfter is how long urgent rounds may keep background batches
// waiting before one takes a background transaction along.
var starveAfter = 10 * time.Millisecond

// txnOps is the most keys the committer writes in one transaction of
// background batches; between two such transactions it looks for urgent
// batches.
const txnOps = 256

// committer makes rounds: a few transactions written to the commit log and
// one fsync, then an answer to the round's urgent batches; the applier
// writes the round to badger and answers the rest. Urgent batches go
// first. Background batches are written txnOps keys at a time, up to
// maxOps a round; once a round holds an urgent batch it ends after the
// transaction under way, so a write a client waits on waits for one small
// transaction and one fsync, never for a whole round of background work,
// nor for badger. While clients write, the committer rests after each
// background round as long as the round took, unless a client's write
// comes: the disk is then idle half the time, and a client's sync finds
// little queued before it. "While clients write" means two urgent rounds
// within busyGap, the last within urgentCalm.
func (s *Store) committer() {
	defer s.wg.Done()
	defer close(s.applyq)
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
		// The applier writes a round to badger while the next is synced.
		// A background round waits until the one before the last is
		// applied: it then gathers what came meanwhile, where syncing at
		// once would sync more often than badger takes the rounds. An
		// urgent batch does not wait.
		for len(urgent) == 0 && s.applied.Load() < s.mark {
			select {
			case p := <-s.urgent:
				urgent = append(urgent, p)
			case <-s.appliedSig:
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
// urgent rounds were within busyGap of each other, the last within
// urgentCalm of t. One write alone, or a user renaming now and then, does
// not slow the background lane.
func (s *Store) clientsWriting(t time.Time) bool {
	return t.Sub(s.urgentAt) < urgentCalm && s.urgentAt.Sub(s.urgentPrev) < busyGap
}

// backgroundTxns is how many background transactions a round starting at
// t may write after its urgent batches (-1: no limit). A round with urgent
// batches writes them alone: a background transaction in their round
// would make them wait for its write (256 keys: milliseconds on two busy
// cores). So that a steady stream of urgent writes cannot starve the
// background lane, an urgent round takes one background transaction along
// once urgent rounds have kept background batches waiting for
// starveAfter.
func (s *Store) backgroundTxns(urgent, waiting bool, t time.Time) int {
	txns := -1
	if urgent {
		txns = 0
		if !s.urgentOnlySince.IsZero() && t.Sub(s.urgentOnlySince) > starveAfter {
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
	for len(round) < s.maxRnd {
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
	for len(backlog) < s.maxRnd && ops < s.maxOps {
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

// commitRound writes urgent, then background batches from backlog, to the
// commit log, syncs it once, answers the urgent batches and hands the
// round to the applier, which writes it to badger and answers the
// background batches. It returns the background batches left for the
// next round.
func (s *Store) commitRound(urgent, backlog []*pending) []*pending {
	r := &round{}
	start := time.Now()
	s.encode(r, urgent)
	// Urgent batches are synced at once. Background batches follow a
	// transaction at a time until the round is full or an urgent batch
	// waits.
	txns := s.backgroundTxns(len(urgent) > 0, len(backlog) > 0, start)
	if len(urgent) > 0 {
		s.noteUrgent(start)
	}
	limit := s.maxOps
	if start.Sub(s.urgentAt) < urgentCalm {
		limit = txnOps
	}
	for ops := 0; len(backlog) > 0 && ops < limit && txns != 0; txns-- {
		n, k := 0, 0
		for n < len(backlog) && (n == 0 || k+len(backlog[n].b.ops) <= txnOps) {
			k += len(backlog[n].b.ops)
			n++
		}
		s.encode(r, backlog[:n])
		backlog, ops = backlog[n:], ops+k
		if u := s.takeUrgent(nil); len(u) > 0 {
			s.encode(r, u)
			s.noteUrgent(time.Now())
			break
		}
	}
	written := time.Now()
	if len(r.txns) > 0 {
		r.syncErr = s.sync()
	}
	batches, ops := r.size()
	if s.onRound != nil {
		s.onRound(batches, ops, written.Sub(start), time.Since(written))
	}
	s.statsMu.Lock()
	s.stats.Rounds++
	s.stats.Batches += uint64(batches)
	s.stats.Ops += uint64(ops)
	s.statsMu.Unlock()
	if s.log != nil && r.syncErr == nil && s.broken.Load() == nil {
		// Durable in the log: a client need not wait for badger too.
		s.answerEarly(r)
	}
	if len(r.txns) > 0 {
		s.mark, s.handed = s.handed, r.txns[len(r.txns)-1].seq
	}
	s.applyq <- r
	s.sealFull()
	return backlog
}

// round is what one commit round wrote: transactions in order, each one
// record of the commit log and one badger transaction, and the batches
// that fit no transaction alone.
type round struct {
	txns    []txn
	tooBig  []*pending
	syncErr error // the log's sync failed: so did every batch
	early   bool  // urgent batches were answered once the log was synced
}

type txn struct {
	seq     uint64
	batches []*pending
}

func (r *round) size() (batches, ops int) {
	for _, t := range r.txns {
		batches += len(t.batches)
		for _, p := range t.batches {
			ops += len(p.b.ops)
		}
	}
	return batches + len(r.tooBig), ops
}

// encode adds ps to the round as transactions that each fit one badger
// transaction, never splitting a batch: a batch that fits none alone
// fails alone. Each transaction is queued as one commit log record.
func (s *Store) encode(r *round, ps []*pending) {
	for len(ps) > 0 {
		n := s.fit(ps)
		if n == 0 {
			r.tooBig = append(r.tooBig, ps[0])
			ps = ps[1:]
			continue
		}
		s.seq++
		t := txn{seq: s.seq, batches: slices.Clone(ps[:n])}
		if s.log != nil {
			s.log.add(t.seq, t.batches)
		}
		r.txns = append(r.txns, t)
		ps = ps[n:]
	}
}

// fit is how many batches from the start of ps one badger transaction
// holds, by badger's own reckoning (Txn.checkSize), with the sequence
// number's key.
func (s *Store) fit(ps []*pending) int {
	count, size := int64(1), s.entrySize(len(seqKey), 8)
	for i, p := range ps {
		for _, o := range p.b.ops {
			count, size = count+1, size+s.entrySize(len(o.key), len(o.value))
		}
		if count >= s.db.MaxBatchCount() || size >= s.db.MaxBatchSize() {
			return i
		}
	}
	return len(ps)
}

// entrySize is what badger counts against a transaction's size for one
// write: the key and the value, or a pointer to the value in its value
// log, two bytes of metadata and ten for the version.
func (s *Store) entrySize(key, value int) int64 {
	if value >= s.valueLimit {
		value = 12
	}
	return int64(key + value + 2 + 10)
}

// answerEarly answers the urgent batches of r, synced in the log, before
// badger has them: reads of their keys wait until it does (settle).
func (s *Store) answerEarly(r *round) {
	s.pendMu.Lock()
	for _, t := range r.txns {
		for _, p := range t.batches {
			if !p.urgent {
				continue
			}
			for _, o := range p.b.ops {
				s.pend[string(o.key)] = t.seq
			}
		}
	}
	s.pendN.Store(int64(len(s.pend)))
	s.pendMu.Unlock()
	r.early = true
	if s.tell(r, true, nil) {
		runtime.Gosched() // the goroutines woken for waiting clients run now
	}
}

// tell reports to the batches of one lane of r: the sync's error, else
// applyErr, else success. It says whether there were any.
func (s *Store) tell(r *round, urgent bool, applyErr error) (told bool) {
	err := r.syncErr
	if err == nil {
		err = applyErr
	}
	for _, t := range r.txns {
		for _, p := range t.batches {
			if p.urgent != urgent {
				continue
			}
			if err != nil {
				p.done(fmt.Errorf("commit: %w", err))
			} else {
				p.done(nil)
			}
			told = true
		}
	}
	return told
}

// applier writes each round to badger, in order, one transaction per log
// record, then answers the batches not answered yet: urgent ones first
// (when the log's sync failed, or in memory), then, after yielding the
// processor, background ones. Badger's stalls (a memtable's rotation, a
// full level 0) hold the applier and the background lane; a client's
// write waits only for the log.
func (s *Store) applier() {
	defer s.wg.Done()
	for r := range s.applyq {
		if s.beforeApply != nil {
			s.beforeApply()
		}
		start := time.Now()
		err := s.apply(r)
		if s.onApply != nil && len(r.txns) > 0 {
			s.onApply(time.Since(start))
		}
		for _, p := range r.tooBig {
			p.done(fmt.Errorf("commit: %w", badger.ErrTxnTooBig))
		}
		if !r.early && s.tell(r, true, err) {
			runtime.Gosched()
		}
		s.tell(r, false, err)
	}
}

// apply writes r's transactions to badger and marks them applied. After a
// failure it writes nothing more: badger's sequence number stays before
// the first transaction it lacks, which recovery applies from the log.
func (s *Store) apply(r *round) error {
	var err error
	if err = s.broken.Load().get(); err == nil {
		for _, t := range r.txns {
			if err = s.applyTxn(t); err != nil {
				s.broken.CompareAndSwap(nil, &stickyErr{err})
				s.logger.Error("storage: badger failed a write that the commit log holds; the store takes no more writes until it is opened again", "err", err)
				break
			}
		}
		if err == nil && s.bigValue {
			// A table flushed later would point into a value log that
			// was never synced.
			err = s.db.Sync()
			s.bigValue = false
		}
	}
	if n := len(r.txns); n > 0 {
		s.markApplied(r.txns[n-1].seq)
	}
	return err
}

// applyTxn writes one transaction to badger, with its sequence number.
func (s *Store) applyTxn(t txn) error {
	txn := s.newTxn(t.seq)
	defer txn.Discard()
	for _, p := range t.batches {
		for _, o := range p.b.ops {
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
	}
	return txn.Commit()
}

// markApplied records that badger holds every transaction up to seq, and
// wakes the reads waiting for one.
func (s *Store) markApplied(seq uint64) {
	defer func() {
		select {
		case s.appliedSig <- struct{}{}:
		default:
		}
	}()
	s.pendMu.Lock()
	s.applied.Store(seq)
	if len(s.pend) > 0 {
		for k, at := range s.pend {
			if at <= seq {
				delete(s.pend, k)
			}
		}
		s.pendN.Store(int64(len(s.pend)))
	}
	s.pendCond.Broadcast() // reads in settle, and restartLog in waitApplied
	s.pendMu.Unlock()
}

// settle waits until badger holds every write answered early to a key
// that match accepts (nil: every key), so that a read sees what was
// answered before it began.
func (s *Store) settle(match func(key string) bool) {
	if s.pendN.Load() == 0 {
		return
	}
	s.pendMu.Lock()
	var need uint64
	for k, at := range s.pend {
		if at > need && (match == nil || match(k)) {
			need = at
		}
	}
	for s.applied.Load() < need {
		s.pendCond.Wait()
	}
	s.pendMu.Unlock()
}

// waitApplied waits until badger holds every transaction up to seq.
func (s *Store) waitApplied(seq uint64) {
	s.pendMu.Lock()
	for s.applied.Load() < seq {
		s.pendCond.Wait()
	}
	s.pendMu.Unlock()
}

// stickyErr is the error that stopped the applier.
type stickyErr struct{ err error }

func (e *stickyErr) get() error {
	if e == nil {
		return nil
	}
	return e.err
}
