package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// CommitPath is a replicated log per key range that takes the commit
// log's place (Options.CommitPath): the committer hands it each round's
// batches as one record per key range (a partition, or NodeRange), and
// the log makes the record durable, orders it among that range's others
// and gives it back to ApplyCommitted, which writes it to badger. Raft
// groups whose only member is this node, one per range (cluster/raft,
// adapted in internal/node), are such a log; the store never sees raft.
//
// On this path the store keeps no commit log and no sequence number:
// badger holds, for each range, the index of the last record applied
// (AppliedIndex) with the writes that record applies, and each range's
// log replays what comes after it when it opens. A record's writes are
// plain sets and deletes, so applying the first part of a record again,
// after a crash cut it short, gives the same state.
type CommitPath interface {
	// Propose hands record, of key range rng, to the log; done runs
	// once the record is durable in the log and the store has applied
	// it (ApplyCommitted returned), or with the reason it will not be.
	// Propose is called from several goroutines at once (CommitUrgent's
	// callers and the committer); the records one of them proposes to a
	// range are applied in the order of its calls, and their done run in
	// that order. Propose may block while the log is full; done must not
	// block. An error wrapping ErrNotApplied says the record was not
	// applied and never will be here.
	Propose(rng int, record []byte, done func(error))
}

// ErrNotApplied is the outcome of a batch that its range's log refused
// without applying it: the range is written through another node now (its
// group's leader moved). The batch may be written again there; the store
// itself has not failed.
var ErrNotApplied = errors.New("storage: not applied: the key range is written elsewhere")

// Applied is what a CommitPath's log gives ApplyCommitted for one key
// range: its records committed since the last, in order, and the index of
// the last one in the log.
type Applied struct {
	Range   int
	Index   uint64
	Records [][]byte
}

// appliedPrefix starts the keys that hold, on the CommitPath, each key
// range's applied index; the 0xff byte keeps them apart from every key
// built with Key. legacyAppliedKey held it when one log carried every
// range, NodeRange's log now.
var (
	appliedPrefix    = []byte("\xffpersona-applied/")
	legacyAppliedKey = []byte("\xffpersona-applied-index")
)

func appliedKey(rng int) []byte {
	if rng == NodeRange {
		return append(appliedPrefix[:len(appliedPrefix):len(appliedPrefix)], "node"...)
	}
	return fmt.Appendf(appliedPrefix[:len(appliedPrefix):len(appliedPrefix)], "%04x", rng)
}

// A round record is the record's id (8 bytes), then each batch: its
// number of writes (uvarint) and the writes, encoded as in a commit log
// record.

// opsSize is an upper bound of the bytes appendOps adds for ops.
func opsSize(ops []op) int {
	n := 0
	for _, o := range ops {
		n += 1 + 2*binary.MaxVarintLen32 + len(o.key) + len(o.value)
	}
	return n
}

// flight is a record proposed and not yet done: its batches, their
// outcomes as ApplyCommitted found them, and its round.
type flight struct {
	round []*pending
	errs  []error
	of    *landing
}

// landing is a round proposed, as its records land: for OnRound, what it
// wrote, when it started, the time ApplyCommitted spent on it, and how
// many of its records are still to land.
type landing struct {
	batches, ops int
	start        time.Time
	took         time.Duration
	left         int
	release      func() // nil, or frees the round's background slot
}

// backgroundInFlight is how many rounds of background batches the
// CommitPath holds at once: one, as the commit log writes one round at a
// time, so that an urgent batch finds at most one background round
// ahead of it in the log.
const backgroundInFlight = 1

// proposer is the committer on the CommitPath for background batches:
// they are proposed a round at a time (up to MaxOpsPerRound keys, TxnOps
// within UrgentCalm of an urgent batch), the next once the last is
// applied. Urgent batches do not pass through it: CommitUrgent proposes
// each at once, from its caller (proposeUrgent).
func (s *Store) proposer() {
	defer s.wg.Done()
	var backlog []*pending
	slot := make(chan struct{}, backgroundInFlight)
	held := false // a background slot is taken and not yet used
	for {
		if !held || len(backlog) == 0 {
			var in <-chan *pending
			if len(backlog) == 0 {
				in = s.commits
			}
			var take chan<- struct{}
			if len(backlog) > 0 && !held {
				take = slot
			}
			select {
			case p := <-s.urgent:
				s.propose(s.takeUrgent([]*pending{p}), nil)
			case p := <-in:
				backlog = append(backlog, p)
			case take <- struct{}{}:
				held = true
			case <-s.stop:
				s.drainProposals(backlog)
				return
			}
		}
		if u := s.takeUrgent(nil); len(u) > 0 {
			s.propose(u, nil)
		}
		backlog = s.takeBackground(backlog)
		if len(backlog) == 0 {
			continue
		}
		if !held {
			select {
			case slot <- struct{}{}:
				held = true
			default:
				continue
			}
		}
		limit := s.opts.MaxOpsPerRound
		if time.Since(time.Unix(0, s.lastUrgent.Load())) < s.opts.UrgentCalm {
			limit = s.opts.TxnOps
		}
		n, ops := 0, 0
		for n < len(backlog) && (n == 0 || ops+len(backlog[n].b.ops) <= limit) {
			ops += len(backlog[n].b.ops)
			n++
		}
		s.propose(backlog[:n:n], func() { <-slot })
		backlog, held = backlog[n:], false
	}
}

// drainProposals proposes backlog and what was queued before Close, and
// waits until every record proposed is done.
func (s *Store) drainProposals(backlog []*pending) {
	for {
		urgent := s.takeUrgent(nil)
		backlog = s.takeBackground(backlog)
		if len(urgent) == 0 && len(backlog) == 0 {
			break
		}
		s.propose(urgent, nil)
		s.propose(backlog, nil)
		backlog = nil
	}
	s.flying.Wait()
}

// proposeUrgent proposes p, an urgent batch, at once, from the caller's
// goroutine: it lands in the log's next round, behind nothing but what
// that round holds, and without a hand-off to the proposer. The caller
// holds closeMu's read lock and has checked the store is open.
func (s *Store) proposeUrgent(p *pending) {
	start := time.Now()
	s.lastUrgent.Store(start.UnixNano())
	s.proposeAt(start, []*pending{p}, nil)
}

// propose proposes round, one record per key range in the order of their
// first batches, and calls release once every record is done.
func (s *Store) propose(round []*pending, release func()) {
	if len(round) == 0 {
		return
	}
	s.proposeAt(time.Now(), round, release)
}

func (s *Store) proposeAt(start time.Time, round []*pending, release func()) {
	var ranges []int
	byRange := map[int][]*pending{}
	for _, p := range round {
		if byRange[p.rng] == nil {
			ranges = append(ranges, p.rng)
		}
		byRange[p.rng] = append(byRange[p.rng], p)
	}
	l := &landing{batches: len(round), ops: opsIn(round), start: start, left: len(ranges), release: release}
	for _, rng := range ranges {
		ps := byRange[rng]
		id := s.proposed.Add(1)
		size := 8
		for _, p := range ps {
			size += 2*binary.MaxVarintLen64 + opsSize(p.b.ops)
		}
		rec := binary.BigEndian.AppendUint64(make([]byte, 0, size), id|fencedRound)
		for _, p := range ps {
			rec = binary.AppendUvarint(rec, p.b.fenceOf(rng))
			rec = binary.AppendUvarint(rec, uint64(len(p.b.ops)))
			rec = appendOps(rec, p.b.ops)
		}
		s.applyMu.Lock()
		s.flights[id] = &flight{round: ps, of: l}
		s.applyMu.Unlock()
		s.flying.Add(1)
		var returned atomic.Bool
		s.opts.CommitPath.Propose(rng, rec, func(err error) {
			if !returned.Load() { // refused at once: done runs on another goroutine
				go s.land(id, err)
				return
			}
			s.land(id, err)
		})
		returned.Store(true)
	}
}

// land reports the record id, done with err; the last record of a round
// to land tells OnRound. It does not yield the processor after urgent
// batches as the commit log's rounds do: records land from the log's
// loop, one urgent batch each, and a yield each would hold the loop up.
func (s *Store) land(id uint64, err error) {
	defer s.flying.Done()
	s.applyMu.Lock()
	f := s.flights[id]
	delete(s.flights, id)
	l := f.of
	l.left--
	last := l.left == 0
	s.applyMu.Unlock()
	errs := f.errs
	if errs == nil {
		errs = make([]error, len(f.round))
	}
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	if !errors.Is(err, ErrNotApplied) {
		s.noteRound(err)
	}
	if last && s.opts.OnRound != nil {
		s.opts.OnRound(l.batches, l.ops, l.took, time.Since(l.start)-l.took)
	}
	s.report(f.round, errs, false)
	if last && l.release != nil {
		l.release()
	}
}

// AppliedIndex returns, on the CommitPath, the index of the last record
// of key range rng applied (0 for none).
func (s *Store) AppliedIndex(rng int) (uint64, error) {
	raw, err := s.Get(appliedKey(rng))
	if errors.Is(err, ErrNotFound) && rng == NodeRange {
		raw, err = s.Get(legacyAppliedKey)
	}
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return ParseUint64(raw), nil
}

// ApplyCommitted writes each range's records to badger in order, in as
// few transactions as badger takes, each range's applied index in the
// transaction of its last batch or the one after. A batch that cannot be
// written (larger than a badger transaction) fails alone and its
// record's proposer is told; an error means badger could not write, and
// the records were not all applied. It need not be durable when it
// returns: the logs keep the records until Flushed tells they are.
func (s *Store) ApplyCommitted(applied []Applied) error {
	start := time.Now()
	type span struct {
		id       uint64
		from, to int
	}
	var all []*pending
	var spans []span
	var fenced []int // indices in all of the batches a fence refused
	fs := fences{s: s}
	for _, a := range applied {
		for _, rec := range a.Records {
			if len(rec) < 8 {
				continue // not a round: nothing to apply
			}
			id := binary.BigEndian.Uint64(rec)
			if id == fenceRecordID {
				if n, ok := parseFenceRecord(rec[8:]); ok {
					if b := fs.set(a.Range, n); b != nil {
						all = append(all, &pending{b: b})
					}
				}
				continue
			}
			ps, err := decodeRound(rec[8:], id&fencedRound != 0)
			if err != nil && id&fencedRound != 0 {
				ps, err = decodeRound(rec[8:], false) // a record from before fences
			}
			if err != nil {
				continue // every replica refuses it alike
			}
			for i, p := range ps {
				if p.b.fence == 0 {
					continue
				}
				n, err := fs.of(a.Range)
				if err != nil {
					return err
				}
				if p.b.fence != n {
					fenced = append(fenced, len(all)+i)
					p.b = &Batch{}
				}
			}
			spans = append(spans, span{id &^ fencedRound, len(all), len(all) + len(ps)})
			all = append(all, ps...)
		}
		var b Batch
		b.Set(appliedKey(a.Range), []byte(Uint64(a.Index)))
		all = append(all, &pending{b: &b})
	}
	errs := make([]error, len(all))
	s.write(all, errs)
	for _, err := range errs {
		if err != nil && !errors.Is(err, badger.ErrTxnTooBig) {
			return fmt.Errorf("apply: %w", err)
		}
	}
	for _, i := range fenced {
		errs[i] = fmt.Errorf("%w: %w", ErrNotApplied, ErrFenced)
	}
	if s.bigValue && s.dir != "" {
		// A table flushed later would point into a value log never synced.
		if err := s.db.Sync(); err != nil {
			return err
		}
		s.bigValue = false
	}
	took := time.Since(start)
	s.applyMu.Lock()
	for _, sp := range spans {
		if f := s.flights[sp.id]; f != nil && len(f.round) == sp.to-sp.from {
			f.errs, f.of.took = errs[sp.from:sp.to:sp.to], took
		}
	}
	s.applyMu.Unlock()
	return nil
}

// Flushed tells, without syncing, how far what ApplyCommitted wrote is
// durable in badger's own files: it returns the numbers of badger's
// oldest memtable in memory (durable) and of its newest (newest).
// Everything applied before a call that returned newest n is durable once
// a later call returns durable > n: badger syncs a memtable's table and
// the manifest before it removes the memtable's log, and a value put in
// the value log was synced when it was applied. A store in memory holds
// nothing durably, and loses nothing to a crash it survives: everything
// counts as durable.
func (s *Store) Flushed() (durable, newest uint64, err error) {
	if s.dir == "" {
		return 1, 0, nil
	}
	mems, err := memLogs(s.dir)
	if err != nil {
		return 0, 0, err
	}
	return uint64(mems[0]), uint64(mems[len(mems)-1]), nil
}

// SyncApplied makes every ApplyCommitted before it durable in badger's
// own files.
func (s *Store) SyncApplied() error {
	if s.dir == "" {
		return nil
	}
	return s.syncBadger()
}

// ForgetApplied deletes every key range's applied index, durably: the
// ranges' data stays, as the state their new logs start from. A node
// calls it when the logs that index pointed into are gone (a node's own
// log, once a cluster's groups take its data over); nothing may apply
// records meanwhile.
func (s *Store) ForgetApplied() error {
	err := s.db.Update(func(txn *badger.Txn) error {
		var keys [][]byte
		err := scan(txn, appliedPrefix, nil, false, func(k, _ []byte) error {
			keys = append(keys, bytes.Clone(k))
			return nil
		})
		if err != nil {
			return err
		}
		for _, k := range append(keys, legacyAppliedKey) {
			if err := txn.Delete(k); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("storage: forget the applied indexes: %w", err)
	}
	return s.SyncApplied()
}

// decodeRound returns the batches of a round record's body; fenced: each
// batch starts with its fence.
func decodeRound(body []byte, fenced bool) ([]*pending, error) {
	var ps []*pending
	for len(body) > 0 {
		var fence uint64
		if fenced {
			f, k := binary.Uvarint(body)
			if k <= 0 {
				return nil, errors.New("bad batch fence")
			}
			fence, body = f, body[k:]
		}
		n, k := binary.Uvarint(body)
		if k <= 0 {
			return nil, errors.New("bad batch length")
		}
		body = body[k:]
		b := &Batch{ops: make([]op, 0, n), fence: fence}
		for range n {
			if len(body) == 0 {
				return nil, errors.New("short batch")
			}
			kind := body[0]
			key, rest, err := uvarintBytes(body[1:])
			if err != nil {
				return nil, err
			}
			o := op{key: key, del: kind == opDelete}
			if kind == opSet {
				if o.value, rest, err = uvarintBytes(rest); err != nil {
					return nil, err
				}
			} else if kind != opDelete {
				return nil, fmt.Errorf("unknown write kind %d", kind)
			}
			b.ops = append(b.ops, o)
			body = rest
		}
		ps = append(ps, &pending{b: b})
	}
	return ps, nil
}
