package storage

import "github.com/dgraph-io/badger/v4"

// Iterator walks the keys under one prefix of a Snapshot in one direction
// and seeks within them: a reader that wants the last key of each of many
// runs of keys jumps over each run instead of visiting it. Close it before
// the snapshot.
type Iterator struct {
	it     *badger.Iterator
	prefix []byte
}

// Iterator opens an iterator over the keys under prefix, in descending
// order if reverse. It points nowhere until Seek.
func (v *Snapshot) Iterator(prefix []byte, reverse bool) *Iterator {
	o := badger.DefaultIteratorOptions
	o.Prefix = prefix
	o.Reverse = reverse
	o.PrefetchValues = false
	return &Iterator{it: v.txn.NewIterator(o), prefix: prefix}
}

// Seek moves to key if present, else to the next key in the iterator's
// direction: the first key above it, or when reverse the last key below it.
func (i *Iterator) Seek(key []byte) { i.it.Seek(key) }

// Valid reports whether the iterator is at a key under its prefix.
func (i *Iterator) Valid() bool { return i.it.ValidForPrefix(i.prefix) }

// Next moves to the next key in the iterator's direction.
func (i *Iterator) Next() { i.it.Next() }

// Key returns the current key, valid until the iterator moves.
func (i *Iterator) Key() []byte { return i.it.Item().Key() }

// Value calls fn with the current value, valid only during the call, and
// returns its error.
func (i *Iterator) Value(fn func(v []byte) error) error { return i.it.Item().Value(fn) }

// Close releases the iterator.
func (i *Iterator) Close() { i.it.Close() }
