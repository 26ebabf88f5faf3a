package actors

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"strings"

	"persona/storage"
)

// The state index holds one key per state event of a room,
//
//	p/<partition>/r/<room>/sp/<type>\0<state key>\0<position>
//
// the position big-endian, written in the batch that appends the event.
// The keys of one (type, state key) form a run in position order: the
// state event in force at position p is the last key of its run at or
// before p, one reverse seek, however long the room's history; the
// current one is the run's last key. The value is what the index said of
// the current event before it was keyed by position: the position alone
// (8 bytes), or for a member event a memberIndex (older stores' entries
// keep their shorter forms).
//
// Types and state keys may hold any byte: stateIndexPart escapes NUL, so
// that a run's prefix is the prefix of no other run's keys.

// stateIndexPart is s with NUL written as 0x01 0x01 and 0x01 as 0x01 0x02:
// the same string for every type and state key without either byte.
func stateIndexPart(s string) string {
	if !strings.ContainsAny(s, "\x00\x01") {
		return s
	}
	return strings.NewReplacer("\x01", "\x01\x02", "\x00", "\x01\x01").Replace(s)
}

// parseStateIndexPart undoes stateIndexPart.
func parseStateIndexPart(s string) string {
	if !strings.Contains(s, "\x01") {
		return s
	}
	return strings.NewReplacer("\x01\x01", "\x00", "\x01\x02", "\x01").Replace(s)
}

// stateRunOf is the prefix of the index keys of (typ, key) in the room
// whose keys start with base.
func stateRunOf(base []byte, typ, key string) []byte {
	return storage.Key(string(base)+"sp", stateIndexPart(typ), stateIndexPart(key), "")
}

// stateIndexKeyOf is the index key of the state event at position pos.
func stateIndexKeyOf(base []byte, typ, key string, pos uint64) []byte {
	return append(stateRunOf(base, typ, key), storage.Uint64(pos)...)
}

// parseStateIndexKey splits the part of an index key after the index's
// prefix into the run's prefix length, type, state key and position.
func parseStateIndexKey(rest []byte) (run int, typ, key string, pos uint64, err error) {
	if len(rest) < 10 || rest[len(rest)-9] != 0 {
		return 0, "", "", 0, fmt.Errorf("state index key %q: no position", rest)
	}
	typ, key, ok := strings.Cut(string(rest[:len(rest)-9]), "\x00")
	if !ok || strings.IndexByte(key, 0) >= 0 {
		return 0, "", "", 0, fmt.Errorf("state index key %q: not type and state key", rest)
	}
	return len(rest) - 8, parseStateIndexPart(typ), parseStateIndexPart(key), storage.ParseUint64(rest), nil
}

func (r *room) stateRun(typ, key string) []byte { return stateRunOf(r.key(""), typ, key) }

func (r *room) stateIndexKey(typ, key string, pos uint64) []byte {
	return stateIndexKeyOf(r.key(""), typ, key, pos)
}

// before is the state event of ev's type and state key in force before
// position pos (nil: none), ev being the one in force now: from memory
// while ev and those it replaced are being committed (storage may not
// hold them yet), then from the state index.
func (r *room) before(ev *evRecord, pos uint64) *evRecord {
	for ev != nil && ev.Pos >= pos {
		if ev.prev == nil {
			if ev.PrevID == "" || pos == 0 {
				return nil
			}
			past, err := r.pastState().event(ev.Type, *ev.StateKey, pos-1)
			if err != nil {
				r.h.log.Error("room cannot read its state history", "room", r.id, "err", err)
			}
			return past
		}
		ev = ev.prev
	}
	return ev
}

// membershipAt is user's membership after the event at position pos
// ("leave" when none), told by the state index's entry alone where it can.
func (r *room) membershipAt(user string, pos uint64) string {
	ev := r.state[stateKey{"m.room.member", user}]
	for ev != nil && ev.Pos > pos {
		if ev.prev == nil {
			if ev.PrevID == "" {
				return "leave"
			}
			m, err := r.pastState().membership(user, pos)
			if err != nil {
				r.h.log.Error("room cannot read its state history", "room", r.id, "err", err)
			}
			return m
		}
		ev = ev.prev
	}
	if ev == nil {
		return "leave"
	}
	return membershipOf(ev)
}

// stateHistory answers, for one request, which state event was in force
// at positions behind the room's current state: from one storage snapshot
// and the state index, two seeks per answer, each answer kept for the
// request as the span of positions it holds for, so the events of a page
// that share a state event ask storage once.
type stateHistory struct {
	r         *room
	snap      *storage.Snapshot
	back, fwd *storage.Iterator
	spans     map[stateKey][]stateSpan
}

// stateSpan is what the state index says of one state key over positions
// from..to: the entry at from (none when present is false) is in force.
type stateSpan struct {
	from, to uint64
	present  bool
	entry    []byte    // the entry's value
	ev       *evRecord // the event, once read
}

// pastState is the request's stateHistory, opened on first use and closed
// by endRequest.
func (r *room) pastState() *stateHistory {
	if r.past == nil {
		r.past = &stateHistory{r: r}
	}
	return r.past
}

// endRequest closes what the request opened to read the state history.
func (r *room) endRequest() {
	if r.past == nil {
		return
	}
	if r.past.snap != nil {
		r.past.back.Close()
		r.past.fwd.Close()
		r.past.snap.Close()
	}
	r.past = nil
}

// span finds the span of (typ, key) that holds position pos.
func (s *stateHistory) span(typ, key string, pos uint64) (*stateSpan, error) {
	sk := stateKey{typ, key}
	spans := s.spans[sk]
	for i := range spans {
		if spans[i].from <= pos && pos <= spans[i].to {
			return &spans[i], nil
		}
	}
	if s.snap == nil {
		s.snap = s.r.h.store.Snapshot()
		prefix := s.r.key("sp", "")
		s.back, s.fwd = s.snap.Iterator(prefix, true), s.snap.Iterator(prefix, false)
		s.spans = map[stateKey][]stateSpan{}
	}
	run := s.r.stateRun(typ, key)
	inRun := func(it *storage.Iterator) bool {
		return it.Valid() && len(it.Key()) == len(run)+8 && bytes.HasPrefix(it.Key(), run)
	}
	sp := stateSpan{to: math.MaxUint64}
	if s.back.Seek(append(run, storage.Uint64(pos)...)); inRun(s.back) {
		sp.from, sp.present = storage.ParseUint64(s.back.Key()), true
		if err := s.back.Value(func(v []byte) error { sp.entry = bytes.Clone(v); return nil }); err != nil {
			return nil, fmt.Errorf("read state index of %s %q: %w", typ, key, err)
		}
	}
	if pos < math.MaxUint64 {
		if s.fwd.Seek(append(run, storage.Uint64(pos+1)...)); inRun(s.fwd) {
			sp.to = storage.ParseUint64(s.fwd.Key()) - 1
		}
	}
	s.spans[sk] = append(spans, sp)
	return &s.spans[sk][len(s.spans[sk])-1], nil
}

// event is the state event for (typ, key) in force at position pos (after
// the event at pos), or nil.
func (s *stateHistory) event(typ, key string, pos uint64) (*evRecord, error) {
	sp, err := s.span(typ, key, pos)
	if err != nil || !sp.present {
		return nil, err
	}
	if sp.ev == nil {
		raw, err := s.snap.Get(s.r.key("ev", storage.Uint64(sp.from)))
		if err != nil {
			return nil, fmt.Errorf("read event %d: %w", sp.from, err)
		}
		ev := new(evRecord)
		if err := json.Unmarshal(raw, ev); err != nil {
			return nil, fmt.Errorf("decode event %d: %w", sp.from, err)
		}
		sp.ev = ev
	}
	return sp.ev, nil
}

// membership is user's membership at position pos (after the event at
// pos), from the index entry if it names it, else from the event.
func (s *stateHistory) membership(user string, pos uint64) (string, error) {
	sp, err := s.span("m.room.member", user, pos)
	if err != nil || !sp.present {
		return "leave", err
	}
	if m, ok := parseMemberIndex(sp.entry); ok {
		return memberships[m.membership], nil
	}
	ev, err := s.event("m.room.member", user, pos)
	if err != nil || ev == nil {
		return "leave", err
	}
	return membershipOf(ev), nil
}
