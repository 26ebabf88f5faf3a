package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/dgraph-io/badger/v4"
	"golang.org/x/sys/unix"
)

// The commit log makes a round durable with one write and one fdatasync of
// a plain file.
//
// Badger writes its memtable log through a shared memory map. Syncing it
// (DB.Sync, msync) costs three to four times the CPU and twice the time of
// writing and syncing the same bytes with write and fdatasync
// (BenchmarkLogSync), and a client's write waits for that sync. So the
// committer appends every transaction it commits to badger, as one record,
// to a log of its own, and syncs that log. Badger's memtable logs are not
// synced at all: a memtable is flushed to a table, which badger syncs, and
// its log removed, usually before the kernel has written any of it.
//
// Every transaction also sets seqKey to its sequence number. After a crash
// badger replays its own log up to the last whole transaction, so seqKey
// names the last transaction it holds; on open, the records after it are
// applied again, in order. The store then holds a prefix of the committed
// transactions that includes every acknowledged one.
//
// The log is cut into segments; a segment is done with once badger has
// flushed to tables every memtable that may hold its transactions
// (sealSegment). A segment done with becomes a spare, and the next segment
// is written over a spare: fdatasync then writes the record's blocks
// alone, where an append also writes the file's new size. Recovery tells a
// recycled segment's old records by their sequence numbers, which badger
// holds already.

// logDir is the commit log's directory, inside badger's.
const logDir = "commitlog"

// seqKey holds the sequence number of the last transaction written; the
// 0xff byte keeps it apart from every key built with Key.
var seqKey = []byte("\xffpersona-commit-seq")

// castagnoli checksums records.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// commitLog is the segment being written. Only the committer uses it.
type commitLog struct {
	dir       string
	f         *os.File
	n         int   // segment number
	size      int64 // bytes written to the segment
	buf       []byte
	spares    []int // numbers of the segments done with, to write over
	maxSpares int   // how many spares to keep (Options.SpareSegments)
	reused    int   // segments written over a spare
}

// A record is: payload length (4 bytes), CRC-32C of the payload (4), and
// the payload: the transaction's sequence number (8), then its writes, each
// a kind byte (opSet, opDelete), the key's length (uvarint) and the key,
// and for a set the value's length (uvarint) and the value.
const (
	recordHeader = 8
	opSet        = 0
	opDelete     = 1
)

// add queues the record of transaction seq, which wrote batches.
func (l *commitLog) add(seq uint64, batches []*pending) {
	start := len(l.buf)
	l.buf = append(l.buf, make([]byte, recordHeader)...)
	l.buf = binary.BigEndian.AppendUint64(l.buf, seq)
	for _, p := range batches {
		l.buf = appendOps(l.buf, p.b.ops)
	}
	payload := l.buf[start+recordHeader:]
	binary.BigEndian.PutUint32(l.buf[start:], uint32(len(payload)))
	binary.BigEndian.PutUint32(l.buf[start+4:], crc32.Checksum(payload, castagnoli))
}

// appendOps appends the encoding of ops to b.
func appendOps(b []byte, ops []op) []byte {
	for _, o := range ops {
		kind := byte(opSet)
		if o.del {
			kind = opDelete
		}
		b = append(b, kind)
		b = binary.AppendUvarint(b, uint64(len(o.key)))
		b = append(b, o.key...)
		if !o.del {
			b = binary.AppendUvarint(b, uint64(len(o.value)))
			b = append(b, o.value...)
		}
	}
	return b
}

// flush writes the queued records and syncs them.
func (l *commitLog) flush() error {
	if len(l.buf) == 0 {
		return nil
	}
	n, err := l.f.WriteAt(l.buf, l.size)
	l.size += int64(n)
	l.buf = l.buf[:0]
	if err != nil {
		return err
	}
	return unix.Fdatasync(int(l.f.Fd()))
}

// next closes the segment and starts the following one.
func (l *commitLog) next() error {
	if err := l.f.Close(); err != nil {
		return err
	}
	return l.open(l.n + 1)
}

// open starts segment n, over a spare if there is one, and syncs the
// directory, so that the segment's name survives a crash.
func (l *commitLog) open(n int) error {
	path := segmentPath(l.dir, n)
	if k := len(l.spares); k > 0 {
		spare := l.spares[k-1]
		l.spares = l.spares[:k-1]
		if err := os.Rename(sparePath(l.dir, spare), path); err != nil {
			return err
		}
		l.reused++
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := syncFile(l.dir); err != nil {
		f.Close()
		return err
	}
	l.f, l.n, l.size = f, n, 0
	return nil
}

// retire makes segment n, done with, a spare; beyond maxSpares it is
// deleted.
func (l *commitLog) retire(n int) error {
	if len(l.spares) >= l.maxSpares {
		return removeSegments(l.dir, []int{n})
	}
	if err := os.Rename(segmentPath(l.dir, n), sparePath(l.dir, n)); err != nil {
		return err
	}
	l.spares = append(l.spares, n)
	return nil
}

func segmentPath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("%06d.log", n))
}

func sparePath(dir string, n int) string {
	return filepath.Join(dir, fmt.Sprintf("%06d.spare", n))
}

// segments lists the segment numbers in dir, in order.
func segments(dir string) ([]int, error) { return numbered(dir, ".log") }

// numbered lists, in order, the numbers of the files in dir named a
// number and ext.
func numbered(dir, ext string) ([]int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var ns []int
	for _, e := range entries {
		if name, ok := strings.CutSuffix(e.Name(), ext); ok {
			if n, err := strconv.Atoi(name); err == nil {
				ns = append(ns, n)
			}
		}
	}
	slices.Sort(ns)
	return ns, nil
}

// recoverLog applies the records badger lacks, makes badger's files
// durable, retires the old segments and starts a new one. It returns the
// sequence number of the last transaction in the store and how many
// records it applied.
func (s *Store) recoverLog() (last uint64, applied int, err error) {
	dir := filepath.Join(s.dir, logDir)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return 0, 0, err
	}
	if raw, err := s.Get(seqKey); err == nil {
		last = ParseUint64(raw)
	} else if !errors.Is(err, ErrNotFound) {
		return 0, 0, err
	}
	ns, err := segments(dir)
	if err != nil {
		return 0, 0, err
	}
	for _, n := range ns {
		err := readSegment(segmentPath(dir, n), func(seq uint64, payload []byte) (bool, error) {
			switch {
			case seq <= last: // badger holds it
				return true, nil
			case seq > last+1: // a gap: nothing after it can be applied
				return false, nil
			}
			if err := s.replay(seq, payload); err != nil {
				return false, err
			}
			last, applied = seq, applied+1
			return true, nil
		})
		if err != nil {
			return 0, 0, err
		}
	}
	l := &commitLog{dir: dir, maxSpares: s.opts.SpareSegments}
	if l.spares, err = numbered(dir, ".spare"); err != nil {
		return 0, 0, err
	}
	if len(ns) > 0 {
		if err := s.syncBadger(); err != nil {
			return 0, 0, err
		}
		for _, n := range ns {
			if err := l.retire(n); err != nil {
				return 0, 0, err
			}
		}
		if err := l.open(ns[len(ns)-1] + 1); err != nil {
			return 0, 0, err
		}
	} else if err := l.open(1); err != nil {
		return 0, 0, err
	}
	s.log = l
	return last, applied, nil
}

// readSegment calls fn with each whole record of the segment at path, in
// order, until fn returns false. A torn or corrupt record ends the segment:
// it was being written when the process or the machine stopped.
func readSegment(path string, fn func(seq uint64, payload []byte) (bool, error)) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	for len(data) >= recordHeader {
		size := int(binary.BigEndian.Uint32(data))
		if size < 8 || size > len(data)-recordHeader {
			return nil
		}
		payload := data[recordHeader : recordHeader+size]
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(data[4:]) {
			return nil
		}
		more, err := fn(binary.BigEndian.Uint64(payload), payload[8:])
		if err != nil || !more {
			return err
		}
		data = data[recordHeader+size:]
	}
	return nil
}

// replay applies one record's writes as the transaction seq.
func (s *Store) replay(seq uint64, payload []byte) error {
	txn := s.newTxn(seq)
	defer txn.Discard()
	for len(payload) > 0 {
		kind := payload[0]
		key, rest, err := uvarintBytes(payload[1:])
		if err != nil {
			return fmt.Errorf("commit log record %d: %w", seq, err)
		}
		switch kind {
		case opSet:
			var value []byte
			if value, rest, err = uvarintBytes(rest); err != nil {
				return fmt.Errorf("commit log record %d: %w", seq, err)
			}
			err = txn.Set(key, value)
		case opDelete:
			err = txn.Delete(key)
		default:
			return fmt.Errorf("commit log record %d: unknown write kind %d", seq, kind)
		}
		if err != nil {
			return err
		}
		payload = rest
	}
	return txn.Commit()
}

// uvarintBytes reads a uvarint length and that many bytes.
func uvarintBytes(b []byte) (field, rest []byte, err error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, io.ErrUnexpectedEOF
	}
	return b[k : k+int(n)], b[k+int(n):], nil
}

// newTxn starts badger transaction seq: it records its own number, except
// on the CommitPath, where ApplyCommitted records the applied index.
func (s *Store) newTxn(seq uint64) *badger.Txn {
	txn := s.db.NewTransaction(true)
	if s.opts.CommitPath == nil {
		_ = txn.Set(seqKey, []byte(Uint64(seq))) // the first write of a transaction: it fits
	}
	return txn
}

func removeSegments(dir string, ns []int) error {
	for _, n := range ns {
		if err := os.Remove(segmentPath(dir, n)); err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
	}
	return nil
}
