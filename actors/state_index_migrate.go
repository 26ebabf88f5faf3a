package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"persona/storage"
)

// Stores written before the state index was keyed by position held one
// entry per state key, p/<partition>/r/<room>/st/<type>\0<state key>,
// naming the current event alone. indexStateHistory rebuilds each such
// room's index from its events, once, at start: an entry per state
// event, the current one's value copied from the old entry (a member's
// carries the profile version the room applied, which no event holds).
// The old entries go, each in the batch that writes its current entry or
// a later one, after the room's entries of history, so that a start that
// stops half-way and runs again finds what is left; the mark
// stateIndexMark says every room is done. No room actor runs before
// it, so no room reads a half-built index.

// stateIndexMark is present once no room holds the old state index.
var stateIndexMark = []byte("migrated/state-index")

// migrateOps is the most writes of one migration batch.
const migrateOps = 4096

// indexStateHistory builds the state index of rooms stored before it was
// keyed by position, once.
func indexStateHistory(store *storage.Store, partitions int, log *slog.Logger) error {
	if _, err := store.Get(stateIndexMark); err == nil || !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	start, rooms := time.Now(), 0
	w := &indexWriter{store: store}
	for p := range partitions {
		n, err := w.partition(p)
		if err != nil {
			return fmt.Errorf("build the state index of partition %d: %w", p, err)
		}
		rooms += n
	}
	w.b.Set(stateIndexMark, []byte{})
	if err := w.flush(true); err != nil {
		return err
	}
	if rooms > 0 {
		log.Info("built the state index by position", "rooms", rooms, "took", time.Since(start))
	}
	return nil
}

// indexWriter writes the index built in batches of about migrateOps
// writes, several rooms' to a batch: the batches land in order, and each
// room's writes come in an order that a stop after any of them leaves
// resumable.
type indexWriter struct {
	store *storage.Store
	snap  *storage.Snapshot // the partition's keys before the build
	b     storage.Batch
}

func (w *indexWriter) flush(force bool) error {
	if w.b.Len() == 0 || (!force && w.b.Len() < migrateOps) {
		return nil
	}
	err := w.store.CommitSync(&w.b)
	w.b = storage.Batch{}
	return err
}

// partition builds the index of every room of partition p that holds old
// entries and returns how many did.
func (w *indexWriter) partition(p int) (int, error) {
	prefix := storage.Prefix("p", partitionName(p), "r")
	w.snap = w.store.Snapshot()
	defer w.snap.Close()
	it := w.snap.Iterator(prefix, false)
	defer it.Close()
	n := 0
	for it.Seek(prefix); it.Valid(); {
		room, _, _ := strings.Cut(string(it.Key()[len(prefix):]), "\x00")
		base := storage.Prefix("p", partitionName(p), "r", room)
		old := append(bytes.Clone(base), "st\x00"...)
		if it.Seek(old); it.Valid() && bytes.HasPrefix(it.Key(), old) {
			if err := w.room(base); err != nil {
				return n, fmt.Errorf("room %s: %w", room, err)
			}
			n++
		}
		it.Seek(append(base[:len(base)-1:len(base)-1], 1)) // the next room
	}
	return n, nil
}

// room writes the index of the room whose keys start with base from its
// events and old entries: the entries of history first, then each current
// entry with the deletion of its old one.
func (w *indexWriter) room(base []byte) error {
	oldPrefix := append(bytes.Clone(base), "st\x00"...)
	old := map[stateKey][]byte{} // the old entries: the current event's
	err := w.snap.Scan(oldPrefix, nil, func(k, v []byte) error {
		typ, key, _ := strings.Cut(string(k[len(oldPrefix):]), "\x00")
		old[stateKey{typ, key}] = bytes.Clone(v)
		return nil
	})
	if err != nil {
		return err
	}
	type entry struct {
		pos   uint64
		value []byte
	}
	current := map[stateKey]entry{} // per state key, its last event's entry: written last
	evPrefix := append(bytes.Clone(base), "ev\x00"...)
	err = w.snap.Scan(evPrefix, nil, func(k, v []byte) error {
		var ev evRecord
		if err := json.Unmarshal(v, &ev); err != nil {
			return fmt.Errorf("decode event %d: %w", storage.ParseUint64(k), err)
		}
		if ev.StateKey == nil {
			return nil
		}
		value := []byte(storage.Uint64(ev.Pos))
		if ev.Type == "m.room.member" {
			_ = membershipOf(&ev)
			value = memberIndex{pos: ev.Pos, stream: ev.Stream, membership: ev.membership}.encode()
		}
		sk := stateKey{ev.Type, *ev.StateKey}
		if e, ok := current[sk]; ok { // replaced: its entry is history
			w.b.Set(stateIndexKeyOf(base, sk.typ, sk.key, e.pos), e.value)
		}
		current[sk] = entry{ev.Pos, value}
		return w.flush(false)
	})
	if err != nil {
		return err
	}
	for sk, e := range current {
		if v, ok := old[sk]; ok && storage.ParseUint64(v) == e.pos {
			continue // its old entry is copied below
		}
		key := stateIndexKeyOf(base, sk.typ, sk.key, e.pos)
		if _, ok := old[sk]; !ok { // built by a start that stopped half-way, or never indexed
			if _, err := w.snap.Get(key); err == nil {
				continue
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
		}
		w.b.Set(key, e.value)
	}
	for sk, v := range old {
		if len(v) < 8 {
			return fmt.Errorf("state index entry %s %q: %d bytes", sk.typ, sk.key, len(v))
		}
		w.b.Set(stateIndexKeyOf(base, sk.typ, sk.key, storage.ParseUint64(v)), v)
		w.b.Delete(append(bytes.Clone(oldPrefix), sk.typ+"\x00"+sk.key...))
		if err := w.flush(false); err != nil {
			return err
		}
	}
	return nil
}
