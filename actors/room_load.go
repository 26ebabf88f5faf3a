package actors

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"

	"persona/storage"
)

// A room's state between storage and memory: load on activation, release
// when idle, and the reads of what load left in storage.

// load reads the room's header, state index and member records, and the
// position of its last event, in one pass of one iterator: backwards from
// the end of the state index ("sp") through the member records ("mr") and
// the header ("meta") to the last event ("ev"), the keys sorting in that
// order. Of each run of the state index it reads the last entry, the
// current event's, and steps or seeks past the others (skipRun). Waking a
// room for a rename then costs one seek, and one more per state key with
// a long history, not one per part or per state event.
func (r *room) load() error {
	r.fence = r.h.rt.Fence(r.part) // before the state: what follows was written under it
	r.state, r.members, r.unread, r.unreadMembers = map[stateKey]*evRecord{}, map[string]*memberRec{}, nil, nil
	r.applying = nil
	r.meta, r.metaUnread, r.tip = roomMeta{}, true, tip{}
	snap := r.h.store.Snapshot()
	defer snap.Close()
	spPrefix, mrPrefix, evPrefix, metaKey, obKey := r.key("sp", ""), r.key("mr", ""), r.key("ev", ""), r.key("meta"), r.key("ob")
	r.out, r.remote, r.outgoing, r.arriving = nil, nil, nil, nil
	var members []uint64 // member events the index does not describe
	var last *evRecord   // the room's last event
	found, err := false, error(nil)
	it := snap.Iterator(r.key(""), true)
	var run []byte
	for it.Seek(r.key("sp\x01")); err == nil && !found && it.Valid(); {
		k := it.Key()
		switch {
		case bytes.HasPrefix(k, spPrefix):
			var n int
			var pos uint64
			var unindexed bool
			err = it.Value(func(v []byte) (err error) {
				n, pos, unindexed, err = r.indexEntry(k[len(spPrefix):], v)
				return err
			})
			if err != nil {
				continue
			}
			if unindexed {
				members = append(members, pos)
			}
			run = append(run[:0], k[:len(spPrefix)+n]...)
			skipRun(it, run)
			continue
		case bytes.Equal(k, obKey):
			err = it.Value(func(v []byte) (err error) {
				r.out, err = decodeOutbound(v)
				return err
			})
		case bytes.HasPrefix(k, mrPrefix):
			err = it.Value(func(v []byte) error {
				var rec memberRec
				if err := json.Unmarshal(v, &rec); err != nil {
					return fmt.Errorf("decode member record: %w", err)
				}
				r.members[string(k[len(mrPrefix):])] = &rec
				return nil
			})
		case bytes.Equal(k, metaKey):
			err = it.Value(func(v []byte) error {
				if err := json.Unmarshal(v, &r.meta); err != nil {
					return fmt.Errorf("decode room meta: %w", err)
				}
				r.metaUnread = false
				return nil
			})
		case bytes.HasPrefix(k, evPrefix):
			// The last event's position says where the room goes on (the
			// header's is not rewritten per event).
			r.meta.NextPos, found = storage.ParseUint64(k)+1, true
			err = it.Value(func(v []byte) error { // its id and depth are the next event's prev_events and depth - 1
				last = new(evRecord)
				if err := json.Unmarshal(v, last); err != nil {
					return fmt.Errorf("decode the last event: %w", err)
				}
				return nil
			})
		}
		it.Next()
	}
	it.Close()
	if err != nil || !found { // a room without events does not exist: its creation writes its header and first events in one batch
		r.state, r.members, r.unread, r.unreadMembers = map[stateKey]*evRecord{}, map[string]*memberRec{}, nil, nil
		r.meta, r.metaUnread = roomMeta{}, false
		return err
	}
	r.exists, r.durable = true, r.meta.NextPos
	for user, m := range r.unreadMembers { // a rename's version may be in its event's entry alone
		if rec := r.members[user]; rec != nil && m.version > rec.Version {
			rec.Version = m.version
		}
	}
	r.tip = tip{last.ID, last.Depth}
	r.keepLast(last)
	for _, p := range members {
		ev, err := r.readEventFrom(snap, p)
		if err != nil {
			return err
		}
		r.state[stateKey{ev.Type, *ev.StateKey}] = ev
	}
	return nil
}

// runSteps is how many older entries of a run load steps over before it
// seeks past the rest: a step costs a tenth of a seek, and most runs are
// a member's join and a rename or two.
const runSteps = 8

// skipRun moves a reverse iterator at the last entry of run to the first
// key below the run.
func skipRun(it *storage.Iterator, run []byte) {
	for range runSteps {
		if it.Next(); !it.Valid() || !bytes.HasPrefix(it.Key(), run) {
			return
		}
	}
	it.Seek(run)
}

// keepLast keeps the room's last event if it is a member's current event:
// in a room where nothing happened since a member's last rename or join,
// the next rename needs that event, and has it without reading storage
// again.
func (r *room) keepLast(ev *evRecord) {
	if ev == nil || ev.Type != "m.room.member" || ev.StateKey == nil {
		return
	}
	if m, ok := r.unreadMembers[*ev.StateKey]; ok && m.pos == ev.Pos {
		r.state[stateKey{ev.Type, *ev.StateKey}] = ev
		delete(r.unreadMembers, *ev.StateKey)
	}
}

// indexEntry notes the current entry of one run of the state index, key
// (after the index's prefix) = v, as unread, and returns the length of the
// run's prefix in key. For a member event whose entry does not describe it
// (written by an older version) it returns the event's position and true:
// load reads that event at once.
func (r *room) indexEntry(key, v []byte) (run int, pos uint64, unindexed bool, err error) {
	run, typ, sk, pos, err := parseStateIndexKey(key)
	if err != nil {
		return 0, 0, false, err
	}
	if len(v) < 8 {
		return 0, 0, false, fmt.Errorf("state index entry %q: %d bytes", key, len(v))
	}
	switch m, ok := parseMemberIndex(v); {
	case typ == "m.room.member" && ok:
		if r.unreadMembers == nil {
			r.unreadMembers = map[string]memberIndex{}
		}
		m.pos = pos
		r.unreadMembers[sk] = m
	case typ == "m.room.member":
		return run, pos, true, nil
	default:
		r.unread = r.unread.add(typ, sk, pos)
	}
	return run, 0, false, nil
}

// release returns the state events other than members' that a room read
// for a client, once idle for Options.PropagationIdle, to storage: the state index
// keeps their positions, the next client request reads them again
// (readUnread), and the room passivates after the rest of passivate_after.
// Member events stay, for the renames to come. It reports whether it
// released; a room with commits in flight, or one to read again from
// storage (reloadDue), does not.
func (r *room) release() bool {
	rest := r.h.cfg.Actors.PassivateAfter - r.h.opts.PropagationIdle
	if !r.clientSeen || r.released || rest <= 0 || len(r.waiting) > 0 || len(r.held) > 0 || len(r.unsynced) > 0 || r.reloadDue() {
		return false
	}
	members := map[stateKey]*evRecord{} // a new map: a map does not shrink
	for sk, ev := range r.state {
		if sk.typ == "m.room.member" {
			members[sk] = ev
			continue
		}
		r.unread = r.unread.add(sk.typ, sk.key, ev.Pos)
	}
	r.state, r.released, r.parsed = members, true, nil
	r.idle.Set(rest)
	return true
}

// readUnread reads the header and state events load left in storage,
// before the room answers anything but propagation.
func (r *room) readUnread() error {
	if len(r.unread) == 0 && len(r.unreadMembers) == 0 && !r.metaUnread {
		return nil
	}
	snap := r.h.store.Snapshot()
	defer snap.Close()
	if err := r.readHeaderFrom(snap); err != nil {
		return err
	}
	for user, m := range r.unreadMembers {
		ev, err := r.readEventFrom(snap, m.pos)
		if err != nil {
			return err
		}
		r.state[stateKey{"m.room.member", user}] = ev
		delete(r.unreadMembers, user)
	}
	r.unreadMembers = nil // an emptied map keeps its memory
	return nil
}

// readUnreadHeader is readUnread but for the members.
func (r *room) readUnreadHeader() error {
	if len(r.unread) == 0 && !r.metaUnread {
		return nil
	}
	snap := r.h.store.Snapshot()
	defer snap.Close()
	return r.readHeaderFrom(snap)
}

// readHeaderFrom reads the meta and non-member state events load left in
// storage.
func (r *room) readHeaderFrom(snap *storage.Snapshot) error {
	if r.metaUnread {
		raw, err := snap.Get(r.key("meta"))
		if err != nil {
			return fmt.Errorf("read room meta: %w", err)
		}
		next := r.meta.NextPos
		if err := json.Unmarshal(raw, &r.meta); err != nil {
			return fmt.Errorf("decode room meta: %w", err)
		}
		r.meta.NextPos, r.metaUnread = next, false
	}
	for len(r.unread) > 0 {
		sk, p, rest := r.unread.next()
		ev, err := r.readEventFrom(snap, p)
		if err != nil {
			return err
		}
		r.state[sk], r.unread = ev, rest
	}
	r.unread = nil
	return nil
}

// unreadState lists the state events a room left in storage: for each, its
// type, state key and position, packed in one buffer. An idle room keeps
// its non-member state there; as a map of strings it cost the GC an
// object per event in every idle room.
type unreadState []byte

// add appends an event's type, state key and position.
func (u unreadState) add(typ, key string, pos uint64) unreadState {
	u = binary.AppendUvarint(u, uint64(len(typ)))
	u = append(u, typ...)
	u = binary.AppendUvarint(u, uint64(len(key)))
	u = append(u, key...)
	return binary.BigEndian.AppendUint64(u, pos)
}

// next decodes the first entry of a non-empty list and returns the rest.
func (u unreadState) next() (sk stateKey, pos uint64, rest unreadState) {
	field := func() string {
		n, k := binary.Uvarint(u)
		s := string(u[k : k+int(n)])
		u = u[k+int(n):]
		return s
	}
	sk.typ = field()
	sk.key = field()
	return sk, binary.BigEndian.Uint64(u), u[8:]
}

// readMember is user's member event (nil: none), read from storage if
// load left it there.
func (r *room) readMember(user string) (*evRecord, error) {
	sk := stateKey{"m.room.member", user}
	if ev := r.state[sk]; ev != nil {
		return ev, nil
	}
	m, ok := r.unreadMembers[user]
	if !ok {
		return nil, nil
	}
	ev, err := r.readEvent(m.pos)
	if err != nil {
		return nil, err
	}
	r.state[sk] = ev
	delete(r.unreadMembers, user)
	return ev, nil
}

// memberStream is the stream position of user's member event and whether
// there is one, from the event or the index.
func (r *room) memberStream(user string) (uint64, bool) {
	if ev := r.state[stateKey{"m.room.member", user}]; ev != nil {
		return ev.Stream, true
	}
	m, ok := r.unreadMembers[user]
	return m.stream, ok
}

func (r *room) readEvent(pos uint64) (*evRecord, error) { return r.readEventFrom(r.h.store, pos) }

func (r *room) readEventFrom(from interface{ Get([]byte) ([]byte, error) }, pos uint64) (*evRecord, error) {
	raw, err := from.Get(r.key("ev", storage.Uint64(pos)))
	if err != nil {
		return nil, fmt.Errorf("read event %d: %w", pos, err)
	}
	var ev evRecord
	if err := json.Unmarshal(raw, &ev); err != nil {
		return nil, fmt.Errorf("decode event %d: %w", pos, err)
	}
	return &ev, nil
}
