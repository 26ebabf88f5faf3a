package storage

import (
	"sync"

	"github.com/dgraph-io/badger/v4"
)

// Reads never wait for writes. Badger runs in managed mode: the committer,
// its only writer, gives each transaction the next timestamp and publishes
// it once badger has taken the transaction whole; a read transaction takes
// the last published timestamp. In badger's own mode every read
// transaction waits for the commit in progress to land, and during a
// fan-out one nearly always is: rooms waking for a rename spent 18% of
// their time there.
//
// Compaction may drop a key's older versions only at or below a timestamp
// no read in progress still uses: reads register theirs while they run,
// and after each round the committer tells badger the oldest (discard).

// readTimes is the last published timestamp and the timestamps of the
// reads in progress.
type readTimes struct {
	mu   sync.Mutex
	last uint64
	open map[uint64]int // timestamp -> reads at it
}

// begin returns the timestamp a new read uses, registered until end.
func (r *readTimes) begin() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open == nil {
		r.open = map[uint64]int{}
	}
	r.open[r.last]++
	return r.last
}

// end unregisters a read that began at ts.
func (r *readTimes) end(ts uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.open[ts]--; r.open[ts] <= 0 {
		delete(r.open, ts)
	}
}

// publish makes the transaction at ts, and every one before it, visible to
// the reads that begin from now on.
func (r *readTimes) publish(ts uint64) {
	r.mu.Lock()
	r.last = ts
	r.mu.Unlock()
}

// oldest is the oldest timestamp a read may still use: the earliest read in
// progress, or the last published one. A read that begins later uses a
// timestamp at least as new.
func (r *readTimes) oldest() uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ts := r.last
	for t := range r.open {
		ts = min(ts, t)
	}
	return ts
}

// view runs fn in a read transaction at the last published timestamp.
func (s *Store) view(fn func(txn *badger.Txn) error) error {
	v := s.Snapshot()
	defer v.Close()
	return fn(v.txn)
}

// newTxn starts the write transaction that commits as seq in the commit
// log: it records that number in the store.
func (s *Store) newTxn(seq uint64) *badger.Txn {
	txn := s.db.NewTransactionAt(s.ts, true)
	_ = txn.Set(seqKey, []byte(Uint64(seq))) // the first write of a transaction: it fits
	return txn
}

// commitTxn commits txn at the next timestamp and publishes it (committer
// only). A timestamp is never used twice, even by a commit that failed.
func (s *Store) commitTxn(txn *badger.Txn) error {
	s.ts++
	if err := txn.CommitAt(s.ts, nil); err != nil {
		return err
	}
	s.reads.publish(s.ts)
	return nil
}

// discard lets compaction drop the versions no read can see any more.
func (s *Store) discard() { s.db.SetDiscardTs(s.reads.oldest()) }
