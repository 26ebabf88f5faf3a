package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// CommitPath is a replicated log that takes the commit log's place
// (Options.CommitPath, experimental): the committer hands it each round
// as one record, and the log makes the record durable, orders it among
// the others and gives it back to ApplyCommitted, which writes it to
// badger. A raft group whose only member is this node (cluster/raft,
// adapted in internal/node) is such a log; the store never sees raft.
//
// On this path the store keeps no commit log and no sequence number:
// badger holds the index of the last record applied (AppliedIndex) in
// the transaction that applies it, and the log replays what comes after
// it when it opens. A record's writes are plain sets and deletes, so
// applying the first part of a record again, after a crash cut it short,
// gives the same state.
type CommitPath interface {
	// Commit returns once round is durable in the log and the store has
	// applied it (ApplyCommitted returned), or with the reason it will
	// not be. The committer calls it one round at a time.
	Commit(round []byte) error
}

// appliedKey holds, on the CommitPath, the index of the last record
// applied; the 0xff byte keeps it apart from every key built with Key.
var appliedKey = []byte("\xffpersona-applied-index")

// A round record is the round's id (8 bytes), then each batch: its
// number of writes (uvarint) and the writes, encoded as in a commit log
// record.

// proposeRound is commitRound on the CommitPath: it takes the round's
// batches as commitRound would (urgent ones alone, background ones up to
// the same limits), commits them as one record and reports.
func (s *Store) proposeRound(urgent, backlog []*pending) []*pending {
	start := time.Now()
	txns := s.backgroundTxns(len(urgent) > 0, len(backlog) > 0, start)
	if len(urgent) > 0 {
		s.noteUrgent(start)
	}
	limit := s.opts.MaxOpsPerRound
	if start.Sub(s.urgentAt) < s.opts.UrgentCalm || txns == 1 {
		limit = s.opts.TxnOps
	}
	round := urgent[:len(urgent):len(urgent)]
	if txns != 0 {
		n, ops := 0, 0
		for n < len(backlog) && (n == 0 || ops+len(backlog[n].b.ops) <= limit) {
			ops += len(backlog[n].b.ops)
			n++
		}
		round, backlog = append(round, backlog[:n]...), backlog[n:]
	}
	if len(round) == 0 {
		return backlog
	}
	s.proposed++
	id := s.proposed
	rec := binary.BigEndian.AppendUint64(make([]byte, 0, 64), id)
	for _, p := range round {
		rec = binary.AppendUvarint(rec, uint64(len(p.b.ops)))
		rec = appendOps(rec, p.b.ops)
	}
	s.applyMu.Lock()
	s.waitID, s.waitErrs, s.applyTook = id, make([]error, len(round)), 0
	s.applyMu.Unlock()
	err := s.opts.CommitPath.Commit(rec)
	s.applyMu.Lock()
	errs, took := s.waitErrs, s.applyTook
	s.waitID, s.waitErrs = 0, nil
	s.applyMu.Unlock()
	if err != nil {
		for i := range errs {
			if errs[i] == nil {
				errs[i] = err
			}
		}
	}
	s.noteRound(err)
	if s.opts.OnRound != nil {
		s.opts.OnRound(len(round), opsIn(round), took, time.Since(start)-took)
	}
	s.report(round, errs)
	return backlog
}

// AppliedIndex returns, on the CommitPath, the index of the last record
// applied (0 for none).
func (s *Store) AppliedIndex() (uint64, error) {
	raw, err := s.Get(appliedKey)
	if errors.Is(err, ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return ParseUint64(raw), nil
}

// ApplyCommitted writes rounds, the records of the CommitPath's entries
// up to index, to badger in order, and records index as applied in the
// transaction after them. A batch that cannot be written (larger than a
// badger transaction) fails alone and its round's caller is told; an
// error means badger could not write, and the records were not all
// applied. It need not be durable when it returns: the log keeps the
// records until SyncApplied.
func (s *Store) ApplyCommitted(index uint64, rounds [][]byte) error {
	start := time.Now()
	for _, rec := range rounds {
		if len(rec) < 8 {
			continue // not a round: nothing to apply
		}
		id := binary.BigEndian.Uint64(rec)
		ps, err := decodeRound(rec[8:])
		if err != nil {
			continue // every replica refuses it alike
		}
		errs := make([]error, len(ps))
		s.write(ps, errs)
		for _, err := range errs {
			if err != nil && !errors.Is(err, badger.ErrTxnTooBig) {
				return fmt.Errorf("apply round %d: %w", id, err)
			}
		}
		s.applyMu.Lock()
		if id == s.waitID {
			s.waitErrs = errs
		}
		s.applyMu.Unlock()
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	if err := txn.Set(appliedKey, []byte(Uint64(index))); err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		return err
	}
	if s.bigValue && s.dir != "" {
		// A table flushed later would point into a value log never synced.
		if err := s.db.Sync(); err != nil {
			return err
		}
		s.bigValue = false
	}
	s.applyMu.Lock()
	s.applyTook += time.Since(start)
	s.applyMu.Unlock()
	return nil
}

// SyncApplied makes every ApplyCommitted before it durable in badger's
// own files.
func (s *Store) SyncApplied() error {
	if s.dir == "" {
		return nil
	}
	return s.syncBadger()
}

// decodeRound returns the batches of a round record's body.
func decodeRound(body []byte) ([]*pending, error) {
	var ps []*pending
	for len(body) > 0 {
		n, k := binary.Uvarint(body)
		if k <= 0 {
			return nil, errors.New("bad batch length")
		}
		body = body[k:]
		b := &Batch{ops: make([]op, 0, n)}
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
