package storage

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/dgraph-io/badger/v4"
)

// A partition's state is its key range: ExportRange reads a range whole and
// ImportRange puts it in place of what another store holds under the same
// prefix. That is a raft snapshot of a partition, sent by a group's leader
// to a replica too far behind to catch up from the log.
//
// An export is a sequence of pairs, each the key's length (uvarint), the
// key, the value's length (uvarint) and the value.

// importingPrefix marks a range ImportRange has begun to replace and not
// finished: its key is importingPrefix + the range's prefix. The 0xff byte
// keeps it apart from every key built with Key.
var importingPrefix = []byte("\xffpersona-importing/")

// ExportRange returns every key under prefix with its value, as they are at
// one moment, encoded for ImportRange.
func (s *Store) ExportRange(prefix []byte) ([]byte, error) { return s.ExportRangeLater(prefix)() }

// ExportRangeLater fixes the moment of an ExportRange of prefix at the
// call, and returns the function that reads it: what is written after
// the call is not in it, however late the function runs. The function
// must be called once: until then the store keeps the versions it reads.
func (s *Store) ExportRangeLater(prefix []byte) func() ([]byte, error) {
	txn := s.db.NewTransaction(false)
	return func() ([]byte, error) {
		defer txn.Discard()
		var out []byte
		err := scan(txn, prefix, nil, false, func(k, v []byte) error {
			out = binary.AppendUvarint(out, uint64(len(k)))
			out = append(out, k...)
			out = binary.AppendUvarint(out, uint64(len(v)))
			out = append(out, v...)
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("storage: export %q: %w", prefix, err)
		}
		return out, nil
	}
}

// ImportRange replaces every key under prefix with the pairs of data, an
// ExportRange of the same prefix (on this store or another), then commits
// done (the caller's own record of the import, such as the raft index the
// export stands for) and returns once all of it is durable.
//
// The range is rewritten in several badger transactions; a crash between
// the first and done leaves it half replaced, and ImportUnfinished reports
// it until an ImportRange of the prefix completes. done's keys must lie
// outside prefix. ImportRange runs beside the committer's writes to other
// keys; nothing else may write under prefix meanwhile.
func (s *Store) ImportRange(prefix, data []byte, done *Batch) error {
	pairs, err := decodePairs(prefix, data)
	if err != nil {
		return fmt.Errorf("storage: import %q: %w", prefix, err)
	}
	for _, o := range done.ops {
		if bytes.HasPrefix(o.key, prefix) {
			return fmt.Errorf("storage: import %q: done writes %q, inside the range", prefix, o.key)
		}
	}
	mark := append(bytes.Clone(importingPrefix), prefix...)
	if err := s.db.Update(func(txn *badger.Txn) error { return txn.Set(mark, nil) }); err != nil {
		return fmt.Errorf("storage: import %q: mark: %w", prefix, err)
	}
	if err := s.SyncApplied(); err != nil {
		return fmt.Errorf("storage: import %q: sync the mark: %w", prefix, err)
	}
	wb := s.db.NewWriteBatch()
	defer wb.Cancel()
	err = s.db.View(func(txn *badger.Txn) error {
		o := badger.DefaultIteratorOptions
		o.Prefix, o.PrefetchValues = prefix, false
		it := txn.NewIterator(o)
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			if err := wb.Delete(it.Item().KeyCopy(nil)); err != nil {
				return err
			}
		}
		return nil
	})
	for i := 0; err == nil && i < len(pairs); i++ {
		err = wb.Set(pairs[i].key, pairs[i].value)
	}
	if err == nil {
		err = wb.Flush()
	}
	if err != nil {
		return fmt.Errorf("storage: import %q: write: %w", prefix, err)
	}
	err = s.db.Update(func(txn *badger.Txn) error {
		if err := s.apply(txn, done); err != nil {
			return err
		}
		return txn.Delete(mark)
	})
	if err != nil {
		return fmt.Errorf("storage: import %q: finish: %w", prefix, err)
	}
	if err := s.SyncApplied(); err != nil {
		return fmt.Errorf("storage: import %q: sync: %w", prefix, err)
	}
	return nil
}

// ImportUnfinished reports whether an ImportRange of prefix began and did
// not finish: the range then holds part of the old state and part of the
// new, and must be imported again before it is read.
func (s *Store) ImportUnfinished(prefix []byte) (bool, error) {
	_, err := s.Get(append(bytes.Clone(importingPrefix), prefix...))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// decodePairs returns the pairs of an export, each key under prefix.
func decodePairs(prefix, data []byte) ([]op, error) {
	var pairs []op
	for len(data) > 0 {
		k, rest, err := uvarintBytes(data)
		if err != nil {
			return nil, fmt.Errorf("pair %d: key: %w", len(pairs), err)
		}
		v, rest, err := uvarintBytes(rest)
		if err != nil {
			return nil, fmt.Errorf("pair %d: value: %w", len(pairs), err)
		}
		if !bytes.HasPrefix(k, prefix) {
			return nil, fmt.Errorf("pair %d: key %q is outside the range", len(pairs), k)
		}
		pairs = append(pairs, op{key: k, value: v})
		data = rest
	}
	return pairs, nil
}

// partitionPrefix starts every key of partition p's range: Key("p", name)
// with name p in four hex digits (host.PartitionKey), then the separator.
func partitionPrefix(p int) []byte { return Prefix("p", fmt.Sprintf("%04x", p)) }

// ExportPartition fixes an export of partition p's key range at the
// call, as ExportRangeLater does: a snapshot of p's raft group, at the
// index AppliedIndex(p) gives then.
func (s *Store) ExportPartition(p int) func() ([]byte, error) {
	return s.ExportRangeLater(partitionPrefix(p))
}

// RestorePartition replaces partition p's key range with data, an
// ExportPartition of p, and records index as p's applied index with it.
func (s *Store) RestorePartition(p int, index uint64, data []byte) error {
	done := &Batch{}
	done.Set(appliedKey(p), []byte(Uint64(index)))
	return s.ImportRange(partitionPrefix(p), data, done)
}

// DropPartition deletes partition p's key range and its applied index: the
// node no longer holds a replica of it.
func (s *Store) DropPartition(p int) error {
	done := &Batch{}
	done.Delete(appliedKey(p))
	return s.ImportRange(partitionPrefix(p), nil, done)
}
