package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// kvMachine is a StateMachine on a real badger: a command "key=value"
// sets key in its group's key range g/<group>/k/, and g/<group>/applied
// holds the group's applied index. Writes are not synced: they are
// durable once badger has flushed their memtable to a table, as a node's
// are.
type kvMachine struct {
	db        *badger.DB
	dir       string
	restores  atomic.Int64 // restores done
	restoring atomic.Int64 // restores begun
	slow      atomic.Int64 // nanoseconds a snapshot's read and a restore wait first
}

func openKV(dir string) (*kvMachine, error) {
	opts := badger.DefaultOptions(dir).WithLogger(nil).WithSyncWrites(false).
		WithMemTableSize(8 << 20).WithValueThreshold(1 << 10).WithNumCompactors(2)
	db, err := badger.Open(opts)
	if err != nil {
		return nil, err
	}
	return &kvMachine{db: db, dir: dir}, nil
}

func (m *kvMachine) close() error { return m.db.Close() }

func groupPrefix(group uint64) []byte { return binary.BigEndian.AppendUint64([]byte("g/"), group) }

func appliedKey(group uint64) []byte { return append(groupPrefix(group), "/applied"...) }

func dataPrefix(group uint64) []byte { return append(groupPrefix(group), "/k/"...) }

func (m *kvMachine) Applied(group uint64) (uint64, error) {
	var index uint64
	err := m.db.View(func(txn *badger.Txn) error {
		it, err := txn.Get(appliedKey(group))
		if errors.Is(err, badger.ErrKeyNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		return it.Value(func(v []byte) error { index = binary.BigEndian.Uint64(v); return nil })
	})
	return index, err
}

// Apply writes the round in one badger transaction, or in several, each
// holding whole updates, when one is too big.
func (m *kvMachine) Apply(updates []Update) error {
	txn := m.db.NewTransaction(true)
	defer func() { txn.Discard() }()
	for _, u := range updates {
		set := func(t *badger.Txn) error {
			for _, c := range u.Commands {
				k, v, ok := bytes.Cut(c, []byte("="))
				if !ok {
					return fmt.Errorf("command %q is no key=value", c)
				}
				if err := t.Set(append(dataPrefix(u.Group), k...), bytes.Clone(v)); err != nil {
					return err
				}
			}
			return t.Set(appliedKey(u.Group), binary.BigEndian.AppendUint64(nil, u.Index))
		}
		if err := set(txn); errors.Is(err, badger.ErrTxnTooBig) {
			txn.Discard()
			txn = m.db.NewTransaction(true) // the update goes whole into a new one
			if err := set(txn); err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
	}
	return txn.Commit()
}

// Flushed reads the numbers of badger's memtable logs: a memtable's log
// is removed once its table and the manifest are synced.
func (m *kvMachine) Flushed() (durable, newest uint64, err error) {
	names, err := filepath.Glob(filepath.Join(m.dir, "*.mem"))
	if err != nil || len(names) == 0 {
		return 0, 0, fmt.Errorf("badger's memtable logs: %d, %v", len(names), err)
	}
	durable = math.MaxUint64
	for _, name := range names {
		n, err := strconv.ParseUint(strings.TrimSuffix(filepath.Base(name), ".mem"), 10, 64)
		if err != nil {
			return 0, 0, err
		}
		durable, newest = min(durable, n), max(newest, n)
	}
	return durable, newest, nil
}

func (m *kvMachine) Snapshot(group uint64) (func() ([]byte, error), error) {
	txn := m.db.NewTransaction(false)
	return func() ([]byte, error) {
		defer txn.Discard()
		time.Sleep(time.Duration(m.slow.Load()))
		var out []byte
		err := scanTxn(txn, group, func(k, v []byte) {
			out = binary.AppendUvarint(out, uint64(len(k)))
			out = append(out, k...)
			out = binary.AppendUvarint(out, uint64(len(v)))
			out = append(out, v...)
		})
		return out, err
	}, nil
}

func (m *kvMachine) Restore(group, index uint64, data []byte) error {
	m.restoring.Add(1)
	time.Sleep(time.Duration(m.slow.Load()))
	var old [][]byte
	if err := m.scan(group, func(k, _ []byte) { old = append(old, bytes.Clone(k)) }); err != nil {
		return err
	}
	wb := m.db.NewWriteBatch()
	defer wb.Cancel()
	for _, k := range old {
		if err := wb.Delete(append(dataPrefix(group), k...)); err != nil {
			return err
		}
	}
	r := reader{b: data}
	for len(r.b) > 0 && r.err == nil {
		k, v := r.bytes(), r.bytes()
		if err := wb.Set(append(dataPrefix(group), k...), bytes.Clone(v)); err != nil {
			return err
		}
	}
	if r.err != nil {
		return r.err
	}
	if err := wb.Set(appliedKey(group), binary.BigEndian.AppendUint64(nil, index)); err != nil {
		return err
	}
	if err := wb.Flush(); err != nil {
		return err
	}
	m.restores.Add(1)
	return m.db.Sync()
}

// scan calls fn with every key (without the group's prefix) and value of
// group's state.
func (m *kvMachine) scan(group uint64, fn func(k, v []byte)) error {
	return m.db.View(func(txn *badger.Txn) error { return scanTxn(txn, group, fn) })
}

// scanTxn is scan in txn.
func scanTxn(txn *badger.Txn, group uint64, fn func(k, v []byte)) error {
	prefix := dataPrefix(group)
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	it := txn.NewIterator(o)
	defer it.Close()
	for it.Rewind(); it.Valid(); it.Next() {
		v, err := it.Item().ValueCopy(nil)
		if err != nil {
			return err
		}
		fn(it.Item().Key()[len(prefix):], v)
	}
	return nil
}

// dump returns group's state as a map.
func (m *kvMachine) dump(group uint64) (map[string]string, error) {
	out := map[string]string{}
	err := m.scan(group, func(k, v []byte) { out[string(k)] = string(v) })
	return out, err
}
