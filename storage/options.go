package storage

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/dgraph-io/badger/v4"
	"github.com/dgraph-io/badger/v4/options"
)

// Options tune the store. A zero field takes the default its comment
// names, so the zero value is a sound default for one node; a negative
// one is an error. Open reports every field it cannot run with.
type Options struct {
	// InMemory keeps everything in memory (tests and benchmarks only).
	InMemory bool
	// Logger receives badger's warnings and errors; nil discards them.
	Logger *slog.Logger
	// OnRound, if set, is told of every commit round: its batches, keys
	// written, and the time spent writing and syncing.
	OnRound func(batches, ops int, write, sync time.Duration)
	// CommitPath, if set, makes batches durable instead of the commit
	// log (experimental): each round is one record per key range of that
	// replicated log, applied to badger once the log has committed it. On
	// it, OnRound is told once a round's last record has landed; its
	// write is the time spent applying and sync the rest of the round.
	CommitPath CommitPath

	// MaxBatchesPerRound caps how many batches one group commit gathers.
	// Default 4096.
	MaxBatchesPerRound int
	// MaxOpsPerRound caps the writes of one round (batches are never split),
	// so that a round stays short and urgent batches wait little.
	// Default 4096.
	MaxOpsPerRound int
	// TxnOps is the most keys the committer writes in one badger
	// transaction of background batches; between two such transactions it
	// looks for urgent batches. Smaller lets an urgent batch in sooner,
	// larger costs fewer transactions. At most MaxOpsPerRound. Default 256.
	TxnOps int
	// QueueBatches is how many background batches may wait for the
	// committer before Commit blocks. Default 4096.
	QueueBatches int
	// UrgentQueueBatches is how many urgent batches may wait for the
	// committer before CommitUrgent blocks. Default 1024.
	UrgentQueueBatches int
	// UrgentCalm is how long after an urgent batch background rounds stay
	// small (TxnOps keys): a client's next write then waits for a short
	// sync, not for one of a full round. Default 50 ms.
	UrgentCalm time.Duration
	// BusyGap: urgent rounds closer than this mean clients are writing,
	// and background rounds rest between them. Default 20 ms (more than 50
	// urgent rounds a second).
	BusyGap time.Duration
	// StarveAfter is how long urgent rounds may keep background batches
	// waiting before one takes a background transaction along.
	// Default 10 ms.
	StarveAfter time.Duration

	// SegmentBytes is the size at which the commit log starts a new
	// segment. A segment goes once badger has flushed the memtables that
	// hold its transactions, so smaller segments free disk sooner and cost
	// more seals. Default 8 MiB.
	SegmentBytes int64
	// SpareSegments is how many commit log segments done with are kept to
	// be written over; more are deleted. A flushed memtable retires about
	// MemTableSize/SegmentBytes segments at once, and each seal until the
	// next flush takes a spare: with fewer, some segments are new files,
	// appended to, and some retired ones are deleted in the commit path.
	// Default 8.
	SpareSegments int

	// MemTableSize is the size of badger's memtables, and so of each of
	// its memtable logs. Badger needs 15% of it to hold a 1 MiB value: at
	// least 6,990,507 bytes. Default 32 MiB.
	MemTableSize int64
	// NumLevelZeroTables is how many level-0 tables badger gathers before
	// it compacts them into level 1. A fan-out writes keys all over the
	// key space, so every level-0 table overlaps the whole base level and
	// each L0 compaction rewrites it: more tables a compaction means fewer
	// compactions, and on two cores each holds both processors for tens
	// of milliseconds while requests wait (docs/BENCHMARKS.md). Default 30.
	NumLevelZeroTables int
	// NumLevelZeroTablesStall is how many level-0 tables stall badger's
	// writes until a compaction ends. More than NumLevelZeroTables.
	// Default 60.
	NumLevelZeroTablesStall int
	// BlockCacheSize is badger's cache of table blocks, in bytes. Default
	// 32 MiB.
	BlockCacheSize int64
	// IndexCacheSize is badger's cache of table indexes and bloom filters,
	// in bytes. Default 16 MiB.
	IndexCacheSize int64
	// ValueLogFileSize is the size of each of badger's value log files:
	// at least 1 MiB, less than 2 GiB. Default 256 MiB.
	ValueLogFileSize int64
	// ValueLogGCInterval is how often the store reclaims value log space.
	// Default 5 minutes.
	ValueLogGCInterval time.Duration
	// ValueLogGCDiscardRatio is the share of a value log file that must be
	// stale before the value log GC rewrites it, in (0, 1). Default 0.5.
	ValueLogGCDiscardRatio float64
}

// minMemTableSize is the smallest MemTableSize badger accepts: a badger
// transaction holds at most 15% of a memtable, and must hold a value of
// badger's value threshold (1 MiB).
const minMemTableSize = (1<<20*100 + 14) / 15

// withDefaults returns o with every zero field set to its default; it is
// the one place the defaults are.
func (o Options) withDefaults() Options {
	o.MaxBatchesPerRound = cmp.Or(o.MaxBatchesPerRound, 4096)
	o.MaxOpsPerRound = cmp.Or(o.MaxOpsPerRound, 4096)
	o.TxnOps = cmp.Or(o.TxnOps, 256)
	o.QueueBatches = cmp.Or(o.QueueBatches, 4096)
	o.UrgentQueueBatches = cmp.Or(o.UrgentQueueBatches, 1024)
	o.UrgentCalm = cmp.Or(o.UrgentCalm, 50*time.Millisecond)
	o.BusyGap = cmp.Or(o.BusyGap, 20*time.Millisecond)
	o.StarveAfter = cmp.Or(o.StarveAfter, 10*time.Millisecond)
	o.SegmentBytes = cmp.Or(o.SegmentBytes, 8<<20)
	o.SpareSegments = cmp.Or(o.SpareSegments, 8)
	o.MemTableSize = cmp.Or(o.MemTableSize, 32<<20)
	o.NumLevelZeroTables = cmp.Or(o.NumLevelZeroTables, 30)
	o.NumLevelZeroTablesStall = cmp.Or(o.NumLevelZeroTablesStall, 60)
	o.BlockCacheSize = cmp.Or(o.BlockCacheSize, 32<<20)
	o.IndexCacheSize = cmp.Or(o.IndexCacheSize, 16<<20)
	o.ValueLogFileSize = cmp.Or(o.ValueLogFileSize, 256<<20)
	o.ValueLogGCInterval = cmp.Or(o.ValueLogGCInterval, 5*time.Minute)
	o.ValueLogGCDiscardRatio = cmp.Or(o.ValueLogGCDiscardRatio, 0.5)
	return o
}

// validate reports every field of o (defaults applied) that the store
// cannot run with, each by its name.
func (o Options) validate() error {
	var errs []error
	nonNegative(&errs, "MaxBatchesPerRound", o.MaxBatchesPerRound)
	nonNegative(&errs, "MaxOpsPerRound", o.MaxOpsPerRound)
	nonNegative(&errs, "TxnOps", o.TxnOps)
	nonNegative(&errs, "QueueBatches", o.QueueBatches)
	nonNegative(&errs, "UrgentQueueBatches", o.UrgentQueueBatches)
	nonNegative(&errs, "UrgentCalm", o.UrgentCalm)
	nonNegative(&errs, "BusyGap", o.BusyGap)
	nonNegative(&errs, "StarveAfter", o.StarveAfter)
	nonNegative(&errs, "SegmentBytes", o.SegmentBytes)
	nonNegative(&errs, "SpareSegments", o.SpareSegments)
	nonNegative(&errs, "NumLevelZeroTables", o.NumLevelZeroTables)
	nonNegative(&errs, "BlockCacheSize", o.BlockCacheSize)
	nonNegative(&errs, "IndexCacheSize", o.IndexCacheSize)
	nonNegative(&errs, "ValueLogGCInterval", o.ValueLogGCInterval)
	if o.TxnOps > o.MaxOpsPerRound {
		errs = append(errs, fieldError("TxnOps", o.TxnOps, fmt.Sprintf("at most MaxOpsPerRound (%d)", o.MaxOpsPerRound)))
	}
	if o.MemTableSize < minMemTableSize {
		errs = append(errs, fieldError("MemTableSize", o.MemTableSize, fmt.Sprintf("at least %d", minMemTableSize)))
	}
	if o.NumLevelZeroTablesStall <= o.NumLevelZeroTables {
		errs = append(errs, fieldError("NumLevelZeroTablesStall", o.NumLevelZeroTablesStall,
			fmt.Sprintf("more than NumLevelZeroTables (%d): badger would stall its writes before it compacts", o.NumLevelZeroTables)))
	}
	if o.ValueLogFileSize < 1<<20 || o.ValueLogFileSize >= 2<<30 {
		errs = append(errs, fieldError("ValueLogFileSize", o.ValueLogFileSize, "at least 1 MiB and less than 2 GiB"))
	}
	if o.ValueLogGCDiscardRatio <= 0 || o.ValueLogGCDiscardRatio >= 1 {
		errs = append(errs, fieldError("ValueLogGCDiscardRatio", o.ValueLogGCDiscardRatio, "more than 0 and less than 1"))
	}
	return errors.Join(errs...)
}

func nonNegative[T int | int64 | time.Duration](errs *[]error, field string, v T) {
	if v < 0 {
		*errs = append(*errs, fieldError(field, v, "0 (the default) or more"))
	}
}

func fieldError(field string, v any, want string) error {
	return fmt.Errorf("option %s is %v, want %s", field, v, want)
}

// badgerOptions returns the badger options of a store in dir with o
// (defaults applied).
func (o Options) badgerOptions(dir string) badger.Options {
	bo := badger.DefaultOptions(dir).
		WithLogger(badgerLogger{o.Logger}).
		WithSyncWrites(false).      // the committer syncs once per round
		WithDetectConflicts(false). // the committer is the only writer
		WithNumVersionsToKeep(1).
		WithMemTableSize(o.MemTableSize).
		WithNumLevelZeroTables(o.NumLevelZeroTables).
		WithNumLevelZeroTablesStall(o.NumLevelZeroTablesStall).
		WithBlockCacheSize(o.BlockCacheSize).
		WithIndexCacheSize(o.IndexCacheSize).
		WithValueLogFileSize(o.ValueLogFileSize).
		WithCompactL0OnClose(false)
	if o.InMemory {
		// Tables in memory need no cache of their blocks, and uncompressed
		// blocks need none at all.
		bo = bo.WithDir("").WithValueDir("").WithInMemory(true).
			WithCompression(options.None).WithBlockCacheSize(0).WithIndexCacheSize(0)
	}
	return bo
}
