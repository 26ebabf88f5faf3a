// Package storage is persona's embedded key-value store: badger v4 behind a
// small typed API (keys built from parts, prefix scans, atomic batches) and one
// group committer per node, so that every acknowledged write is synced to disk
// while thousands of writers share each fsync.
//
// storage owns the badger directory and the commit log in it
// (<dir>/commitlog); nothing else opens them. It knows nothing of users,
// rooms or Matrix and imports no other persona package: each actor owns a
// key prefix and is the only code that reads or writes it, and storage
// never interprets an actor's values, and of its keys only the partition
// a key is under (Key("p", partition, ...)), which is its key range: a
// batch's keys must share one. Its own key is the sequence number of the
// last transaction written (seqKey), for the commit log's recovery. With
// Options.CommitPath (experimental) a replicated log per key range (a
// partition, or the node's own keys: NodeRange) takes the commit log's
// place, and its own keys are each range's index of the last record of
// that log applied (appliedKey).
package storage

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// ErrNotFound is returned by Get for a key that holds no value.
var ErrNotFound = errors.New("storage: not found")

// ErrClosed is returned for writes after Close.
var ErrClosed = errors.New("storage: closed")

// Store is one node's badger database and its group committer.
type Store struct {
	opts    Options // with defaults applied
	db      *badger.DB
	commits chan *pending
	urgent  chan *pending
	stop    chan struct{}
	wg      sync.WaitGroup
	closeMu sync.RWMutex
	closed  bool
	// urgentOnlySince: since when rounds have written urgent batches alone
	// while background ones waited; zero if the last round wrote
	// background batches or none waited (committer goroutine only).
	urgentOnlySince time.Time
	urgentAt        time.Time // when the last urgent batch was written (committer goroutine only)
	urgentPrev      time.Time // when the one before it was
	// dir is the data directory ("" in memory). The rest is the
	// committer's: seq numbers the last transaction written, log is the
	// commit log (nil in memory) and sealed its full segments, logBroken
	// says its last write failed, bigValue that a value went to badger's
	// value log since the last sync.
	dir        string
	seq        uint64
	log        *commitLog
	sealed     []sealedSegment
	logBroken  bool
	bigValue   bool
	valueLimit int // badger's ValueThreshold
	stats      CommitStats
	statsMu    sync.Mutex
	failure    roundFailure // what Health reports of the last round
	// On the CommitPath: proposed numbers the proposer's last record
	// (from a number of this open's own, as the records of an earlier
	// one may be replayed), flights holds the records proposed and not
	// done, flying counts them.
	proposed   atomic.Uint64
	lastUrgent atomic.Int64 // when the last urgent batch was proposed, Unix nanoseconds
	applyMu    sync.Mutex
	flights    map[uint64]*flight
	flying     sync.WaitGroup
}

// CommitStats counts the committer's work since the store opened.
type CommitStats struct {
	Rounds  uint64 // fsyncs
	Batches uint64 // batches committed
	Ops     uint64 // keys written or deleted
	Dropped uint64 // commit log segments done with (their transactions in badger's tables): deleted or kept to write over
}

// Open opens (creating if needed) the store in dir. It fails with a clear
// message when another process holds the directory, and names every field
// of opts it cannot run with.
func Open(dir string, opts Options) (*Store, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	bo := opts.badgerOptions(dir)
	db, err := badger.Open(bo)
	if err != nil {
		if strings.Contains(err.Error(), lockedDirError) {
			return nil, fmt.Errorf("open store %s: the data directory is in use by another process (is another persona running?)", dir)
		}
		return nil, fmt.Errorf("open store %s: %w", dir, err)
	}
	s := &Store{
		opts:       opts,
		db:         db,
		commits:    make(chan *pending, opts.QueueBatches),
		urgent:     make(chan *pending, opts.UrgentQueueBatches),
		stop:       make(chan struct{}),
		valueLimit: int(bo.ValueThreshold),
	}
	if !opts.InMemory {
		s.dir = dir
		var applied int
		if s.seq, applied, err = s.recoverLog(); err != nil {
			db.Close()
			return nil, fmt.Errorf("open store %s: recover the commit log: %w", dir, err)
		}
		if applied > 0 && opts.Logger != nil {
			opts.Logger.Warn("storage: the database had lost acknowledged writes after a crash; applied them again from the commit log",
				"transactions", applied, "last", s.seq)
		}
		if opts.CommitPath != nil { // the commit log, recovered, is not written to
			s.log.f.Close()
			s.log = nil
		}
	}
	s.wg.Add(2)
	if opts.CommitPath != nil {
		s.proposed.Store(uint64(time.Now().UnixNano()) << 8 &^ (fencedRound | fencedRound>>1)) // bit 63 marks fenced rounds
		s.flights = map[uint64]*flight{}
		go s.proposer()
	} else {
		go s.committer()
	}
	go s.gcLoop()
	return s, nil
}

// lockedDirError is what badger's error says when another process holds
// the directory.
const lockedDirError = "Cannot acquire directory lock"

// Close stops the committer after it has committed every batch already
// submitted, then closes the CommitPath if it is an io.Closer, then
// badger.
func (s *Store) Close() error {
	s.closeMu.Lock()
	if s.closed {
		s.closeMu.Unlock()
		return nil
	}
	s.closed = true
	s.closeMu.Unlock()
	close(s.stop)
	s.wg.Wait()
	if s.log != nil {
		s.log.f.Close()
	}
	var err error
	if c, ok := s.opts.CommitPath.(io.Closer); ok {
		err = c.Close()
	}
	return errors.Join(err, s.db.Close())
}

// Get returns a copy of the value at key, or ErrNotFound.
func (s *Store) Get(key []byte) (out []byte, err error) {
	err = s.db.View(func(txn *badger.Txn) error {
		out, err = get(txn, key)
		return err
	})
	return out, err
}

// Scan calls fn for every key under prefix, in key order, starting at start
// (nil: the first key of prefix). fn's slices are valid only during the call.
// Returning ErrStopScan from fn ends the scan without error.
func (s *Store) Scan(prefix, start []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error { return scan(txn, prefix, start, false, fn) })
}

// ScanReverse calls fn as Scan does, in descending key order; start (nil:
// the last key of prefix) is the first key visited.
func (s *Store) ScanReverse(prefix, start []byte, fn func(key, value []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error { return scan(txn, prefix, start, true, fn) })
}

// ErrStopScan ends a Scan early when returned by its callback.
var ErrStopScan = errors.New("storage: stop scan")

// Snapshot is one read transaction: its reads all see the store at the
// moment it was taken, and a batch of them pays once for what badger does
// per transaction (among it, waiting for writes in progress to land). Close
// it when done.
type Snapshot struct{ txn *badger.Txn }

// Snapshot opens a Snapshot.
func (s *Store) Snapshot() *Snapshot { return &Snapshot{txn: s.db.NewTransaction(false)} }

// Get returns a copy of the value at key as the snapshot sees the store,
// or ErrNotFound.
func (v *Snapshot) Get(key []byte) ([]byte, error) { return get(v.txn, key) }

// Scan calls fn as Store.Scan does, on the keys the snapshot sees.
func (v *Snapshot) Scan(prefix, start []byte, fn func(key, value []byte) error) error {
	return scan(v.txn, prefix, start, false, fn)
}

// ScanReverse calls fn as Store.ScanReverse does, on the keys the
// snapshot sees.
func (v *Snapshot) ScanReverse(prefix, start []byte, fn func(key, value []byte) error) error {
	return scan(v.txn, prefix, start, true, fn)
}

// Close ends the snapshot.
func (v *Snapshot) Close() { v.txn.Discard() }

func get(txn *badger.Txn, key []byte) ([]byte, error) {
	it, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return it.ValueCopy(nil)
}

func scan(txn *badger.Txn, prefix, start []byte, reverse bool, fn func(key, value []byte) error) error {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.Reverse = reverse
	o.PrefetchValues = false
	it := txn.NewIterator(o)
	defer it.Close()
	seek := start
	if seek == nil {
		seek = prefix
		if reverse {
			seek = append(bytes.Clone(prefix), 0xff, 0xff, 0xff, 0xff)
		}
	}
	for it.Seek(seek); it.ValidForPrefix(prefix); it.Next() {
		item := it.Item()
		err := item.Value(func(v []byte) error { return fn(item.Key(), v) })
		if errors.Is(err, ErrStopScan) {
			return nil
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// Sizes reports badger's LSM and value-log sizes in bytes.
func (s *Store) Sizes() (lsm, vlog int64) { return s.db.Size() }

// Stats returns the committer's counters.
func (s *Store) Stats() CommitStats {
	s.statsMu.Lock()
	defer s.statsMu.Unlock()
	return s.stats
}

// gcLoop reclaims value-log space now and then.
func (s *Store) gcLoop() {
	defer s.wg.Done()
	t := time.NewTicker(s.opts.ValueLogGCInterval)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			for s.db.RunValueLogGC(s.opts.ValueLogGCDiscardRatio) == nil {
			}
		}
	}
}

// badgerLogger forwards badger's warnings and errors to slog.
type badgerLogger struct{ l *slog.Logger }

// Errorf logs a badger error.
func (b badgerLogger) Errorf(f string, a ...any) {
	if b.l != nil {
		b.l.Error(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
	}
}

// Warningf logs a badger warning.
func (b badgerLogger) Warningf(f string, a ...any) {
	if b.l != nil {
		b.l.Warn(strings.TrimSpace(fmt.Sprintf(f, a...)), "component", "badger")
	}
}

// Infof drops badger's information messages.
func (badgerLogger) Infof(string, ...any) {}

// Debugf drops badger's debug messages.
func (badgerLogger) Debugf(string, ...any) {}
