package actors

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"testing"

	"persona/storage"
	"persona/wire"
)

// A store whose rooms hold the state index in its per-key form (one
// entry per state key under "st", the current event's, some in the
// shortest form: the position alone) gets the index built once at start:
// the room then answers of its past as its event log says, each current
// entry is the old one (a member's with the profile version the room
// applied), and no old entry is left.
func TestStateIndexBuiltFromThePerKeyIndex(t *testing.T) {
	t.Parallel()
	o := olderStore(t)
	want := o.indexEntries()
	o.h.Stop()
	o.toOldIndex(want, func(bool) bool { return false }, true)
	o.reopen(want)
}

// A start that stopped while building the index, before or after some old
// entries were deleted, builds the rest at the next start.
func TestStateIndexBuildResumesAfterAStop(t *testing.T) {
	t.Parallel()
	for _, stop := range []string{"writing entries", "deleting old entries"} {
		t.Run(stop, func(t *testing.T) {
			t.Parallel()
			o := olderStore(t)
			want := o.indexEntries()
			o.h.Stop()
			if stop == "writing entries" { // every old entry left, some history written
				o.toOldIndex(want, func(current bool) bool { return !current && o.rng.IntN(2) == 0 }, false)
			} else { // history written, some old entries deleted with their current entry written
				o.toOldIndex(want, func(current bool) bool { return !current || o.rng.IntN(2) == 0 }, false)
			}
			o.reopen(want)
		})
	}
}

// olderStore is a room with a random history whose readers' current
// member events carry the profile version of a global rename.
func olderStore(t *testing.T) *historyOps {
	o := newHistoryOps(t, t.TempDir())
	o.oldTypes = true
	o.run(120)
	o.settle()
	for i, u := range o.readers {
		eventually(t, u+"'s room known", func() bool {
			rooms := ask[*wire.RoomsReply](t, o.h, u, &wire.GetRooms{UserId: u}).Rooms
			return slices.ContainsFunc(rooms, func(r *wire.RoomMembership) bool { return r.RoomId == o.room && r.Membership == "join" })
		})
		setName(t, o.h, u, fmt.Sprint("global ", i), wire.Propagate_PROPAGATE_ALL)
		_, v := profileOf(t, o.h, u)
		eventually(t, u+"'s rename applied", func() bool {
			m, ok := parseMemberIndex(o.indexEntries()[string(currentIndexKey(t, o.h, o.st, o.room, u))])
			return ok && m.version == v
		})
	}
	return o
}

// indexEntries is the room's state index, key to value.
func (o *historyOps) indexEntries() map[string][]byte {
	out := map[string][]byte{}
	if err := o.st.Scan(newRoom(o.h, o.room).key("sp", ""), nil, func(k, v []byte) error {
		out[string(k)] = bytes.Clone(v)
		return nil
	}); err != nil {
		o.t.Fatal(err)
	}
	return out
}

// toOldIndex rewrites the room's index, entries (the host stopped), in
// the per-key form: each state key's current entry under "st", the
// creator's in the shortest form (its position alone). keep tells whether
// an entry of the index by position stays (current: whether it is its
// run's last); a current entry that stays has no per-key one, as after a
// start that built it. oldest says whether the creator's entry takes the
// shortest form. It deletes the mark of the index built.
func (o *historyOps) toOldIndex(entries map[string][]byte, keep func(current bool) bool, oldest bool) {
	base := newRoom(o.h, o.room).key("")
	spPrefix := newRoom(o.h, o.room).key("sp", "")
	var b storage.Batch
	keys := slices.Sorted(maps.Keys(entries))
	for i, k := range keys {
		run, typ, key, _, err := parseStateIndexKey([]byte(k[len(spPrefix):]))
		if err != nil {
			o.t.Fatal(err)
		}
		current := i == len(keys)-1 || !bytes.HasPrefix([]byte(keys[i+1]), []byte(k[:len(spPrefix)+run]))
		if keep(current) {
			continue
		}
		b.Delete([]byte(k))
		if !current {
			continue
		}
		v := entries[k]
		if oldest && typ == "m.room.member" && key == o.creator {
			v = v[len(v)-8:]
			entries[k] = v
		}
		b.Set(storage.Key(string(base)+"st", typ+"\x00"+key), v)
	}
	b.Delete(stateIndexMark)
	if err := o.st.CommitSync(&b); err != nil {
		o.t.Fatal(err)
	}
}

// reopen starts the node again, which builds the index, and checks it
// against want (the entries of history compared without the profile
// version, which no event holds) and the room's answers against its log.
func (o *historyOps) reopen(want map[string][]byte) {
	o.st.Close()
	o.h, o.st = newTestHost(o.t, o.dir, 0)
	if _, err := o.st.Get(stateIndexMark); err != nil {
		o.t.Fatalf("mark of the index built: %v", err)
	}
	if err := o.st.Scan(newRoom(o.h, o.room).key("st", ""), nil, func(k, _ []byte) error {
		return fmt.Errorf("old entry %q left", k)
	}); err != nil {
		o.t.Fatal(err)
	}
	got := o.indexEntries()
	keys := slices.Sorted(maps.Keys(want))
	if !slices.Equal(slices.Sorted(maps.Keys(got)), keys) {
		o.t.Fatalf("index built has %d entries, want %d", len(got), len(want))
	}
	for i, k := range keys {
		g, w := got[k], want[k]
		current := i == len(keys)-1 || !bytes.HasPrefix([]byte(keys[i+1]), []byte(k[:len(k)-8]))
		gm, gok := parseMemberIndex(g)
		wm, wok := parseMemberIndex(w)
		if !current && gok && wok {
			gm.version, wm.version = 0, 0
		}
		if !bytes.Equal(g, w) && !(!current && gok && wok && gm == wm) {
			o.t.Fatalf("entry %q = %x, want %x", k, g, w)
		}
	}
	o.check()
}
