package actors

import (
	"encoding/json"
	"errors"
	"slices"
	"sort"
	"strconv"

	"persona/storage"
	"persona/wire"
)

// view is how much of the room a user may read: every event up to position
// upto (a departed member reads up to its leave).
func (r *room) view(user string) (upto uint64, e *wire.Error) {
	if rec := r.members[user]; rec != nil && rec.Forgotten && r.membership(user) != "join" {
		return 0, forbidden("You have forgotten this room.")
	}
	return r.history(user)
}

// history is view without the forgotten check: a forgotten room's leave
// still reaches the user's incremental sync. Reads stop at the last durable
// event: what memory holds beyond it is still being committed, and a crash
// could lose it.
func (r *room) history(user string) (upto uint64, e *wire.Error) {
	if r.durable == 0 {
		return 0, forbidden("You are not a member of this room.")
	}
	latest := r.durable - 1
	switch ev := r.before(r.state[stateKey{"m.room.member", user}], r.durable); {
	case ev != nil && membershipOf(ev) == "join":
		return latest, nil
	case ev != nil && (membershipOf(ev) == "leave" || membershipOf(ev) == "ban") && ev.Sender != "" && ev.Pos > 0:
		if r.historyVisibility() == "world_readable" {
			return latest, nil
		}
		return ev.Pos, nil
	case r.historyVisibility() == "world_readable":
		return latest, nil
	}
	return 0, forbidden("You are not a member of this room.")
}

func (r *room) historyVisibility() string {
	c := r.stateContent("m.room.history_visibility", "")
	v, _ := c["history_visibility"].(string)
	return v
}

// stateAt is the state in force at position pos (after the event at pos):
// at most one lookup in the state index per state key.
func (r *room) stateAt(pos uint64) []*evRecord {
	out := make([]*evRecord, 0, len(r.state))
	for _, ev := range r.state {
		if ev = r.before(ev, pos+1); ev != nil {
			out = append(out, ev)
		}
	}
	slices.SortFunc(out, func(a, b *evRecord) int { return int(a.Pos) - int(b.Pos) })
	return out
}

func (r *room) getState(m *wire.GetState) *wire.StateReply {
	upto, e := r.view(m.UserId)
	if e != nil {
		return &wire.StateReply{Error: e}
	}
	if m.At != "" {
		if pos, ok := r.parseToken(m.At); ok && pos > 0 && pos-1 < upto {
			upto = pos - 1
		}
	}
	var evs []*evRecord
	if !m.All && !m.Members {
		if ev := r.before(r.state[stateKey{m.Type, m.StateKey}], upto+1); ev != nil {
			evs = append(evs, ev)
		}
		if len(evs) == 0 {
			return &wire.StateReply{Error: notFound(wire.Error_EVENT, "No such state event.")}
		}
	} else {
		for _, ev := range r.stateAt(upto) {
			if m.Members {
				if ev.Type != "m.room.member" {
					continue
				}
				ms := membershipOf(ev)
				if (m.Membership != "" && ms != m.Membership) || (m.NotMembership != "" && ms == m.NotMembership) {
					continue
				}
			}
			evs = append(evs, ev)
		}
	}
	out := &wire.StateReply{}
	for _, ev := range evs {
		out.EventsJson = append(out.EventsJson, r.clientEvent(ev, "", ""))
	}
	return out
}

// Tokens: "p<N>" is the gap before room position N; a /sync token ("s<N>"
// or "t...", SyncToken) is the gap after the last event at or below its
// position in the room's partition.
func (r *room) parseToken(tok string) (uint64, bool) {
	if len(tok) < 2 {
		return 0, false
	}
	if tok[0] == 't' {
		t, err := ParseSyncToken(tok, r.h.rt.Partitions())
		if err != nil {
			return 0, false
		}
		return r.streamGap(t.Part(r.part)), true
	}
	n, err := strconv.ParseUint(tok[1:], 10, 64)
	if err != nil {
		return 0, false
	}
	switch tok[0] {
	case 'p':
		return min(n, r.meta.NextPos), true
	case 's':
		return r.streamGap(n), true
	}
	return 0, false
}

// streamGap is the position of the first event whose stream position is
// above n (the room's next position if none): events take both in the same
// order, so it gallops back from the end and then bisects, a few reads
// however far back n is. An event it cannot read counts as above.
func (r *room) streamGap(n uint64) uint64 {
	snap := r.h.store.Snapshot()
	defer snap.Close()
	above := func(p uint64) bool {
		ev, err := r.readEventFrom(snap, p)
		return err != nil || ev.Stream > n
	}
	lo, hi := uint64(0), r.meta.NextPos // below lo: at or below n; from hi on: above
	for step := uint64(1); hi > lo; step *= 2 {
		p := hi - min(step, hi)
		if !above(p) {
			lo = p + 1
			break
		}
		hi = p
	}
	return lo + uint64(sort.Search(int(hi-lo), func(i int) bool { return above(lo + uint64(i)) }))
}

func posToken(p uint64) string { return "p" + strconv.FormatUint(p, 10) }

// prevBatch is a sync timeline's prev_batch, first being the timeline's
// first position and upto its last. Usually that is the gap before first.
// A timeline read from the room's start (since 0: an initial sync, a room
// joined since the last sync, a left room with include_leave) that was not
// limited holds the whole room, and then prev_batch is the gap after upto,
// the sync's own position, as Synapse answers (handlers/sync.py
// _load_filtered_recents keeps upto_token's room key unless it trims the
// timeline; Dendrite does likewise on purpose). Clients pass prev_batch as
// /members?at=, which then names the members the sync saw, not the empty
// room before m.room.create. The cost, shared with Synapse (its issue
// #1509): /messages backwards from that token repeats the timeline.
func prevBatch(since uint64, limited bool, first, upto uint64) string {
	if since == 0 && !limited {
		return posToken(upto + 1)
	}
	return posToken(first)
}

// scan visits the events from position from (inclusive) in direction dir
// ("b": descending, "f": ascending) until fn returns false.
func (r *room) scan(from uint64, backward bool, fn func(*evRecord) bool) error {
	prefix := storage.Prefix(string(r.key("ev")))
	start := r.key("ev", storage.Uint64(from))
	visit := func(k, v []byte) error {
		var ev evRecord
		if err := json.Unmarshal(v, &ev); err != nil {
			return err
		}
		if ev.Outlier {
			return nil
		}
		if !fn(&ev) {
			return storage.ErrStopScan
		}
		return nil
	}
	if backward {
		return r.h.store.ScanReverse(prefix, start, visit)
	}
	return r.h.store.Scan(prefix, start, visit)
}

func (r *room) getMessages(m *wire.GetMessages) *wire.MessagesReply {
	upto, e := r.view(m.UserId)
	if e != nil {
		return &wire.MessagesReply{Error: e}
	}
	f, err := parseFilter(m.FilterJson)
	if err != nil {
		return &wire.MessagesReply{Error: malformed(wire.Error_FILTER, "Bad filter.")}
	}
	backward := m.Dir != "f"
	from := uint64(0)
	if backward {
		from = r.durable
	}
	if m.From != "" {
		var ok bool
		if from, ok = r.parseToken(m.From); !ok {
			return &wire.MessagesReply{Error: badValue(wire.Error_TOKEN, "Bad from token.")}
		}
	}
	to, hasTo := uint64(0), m.To != ""
	if hasTo {
		var ok bool
		if to, ok = r.parseToken(m.To); !ok {
			return &wire.MessagesReply{Error: badValue(wire.Error_TOKEN, "Bad to token.")}
		}
	}
	limit := int(m.Limit)
	if limit <= 0 {
		limit = 10
	}
	if f.Limit > 0 {
		limit = min(limit, f.Limit)
	}
	out := &wire.MessagesReply{Start: posToken(from)}
	var last uint64
	more := false
	seen := 0
	scanFrom := from
	if backward {
		if from == 0 {
			return out
		}
		scanFrom = from - 1
	}
	senders := map[string]bool{}
	v := r.visibility(m.UserId)
	err = r.scan(scanFrom, backward, func(ev *evRecord) bool {
		if ev.Pos > upto || (hasTo && ((backward && ev.Pos < to) || (!backward && ev.Pos >= to))) {
			if backward && ev.Pos > upto {
				return true // a departed member skips what came after its leave
			}
			return false
		}
		if seen == limit {
			more = true
			return false
		}
		seen++
		last = ev.Pos
		if f.matches(ev) && v.sees(ev) {
			out.Chunk = append(out.Chunk, r.clientEvent(ev, m.DeviceId, m.UserId))
			senders[ev.Sender] = true
		}
		return true
	})
	if err != nil && !errors.Is(err, storage.ErrStopScan) {
		return &wire.MessagesReply{Error: internal("read timeline")}
	}
	if len(out.Chunk) > 0 || more { // as Synapse: an end token whenever events came back
		if backward {
			out.End = posToken(last)
		} else {
			out.End = posToken(last + 1)
		}
	}
	if f.LazyLoadMembers {
		for s := range senders {
			if ev := r.before(r.state[stateKey{"m.room.member", s}], upto+1); ev != nil {
				out.State = append(out.State, r.clientEvent(ev, "", ""))
			}
		}
	}
	return out
}

func (r *room) getEvent(m *wire.GetEvent) *wire.EventReply {
	notFound := &wire.EventReply{Error: notFound(wire.Error_EVENT, "Event not found.")}
	upto, e := r.view(m.UserId)
	if e != nil {
		return notFound
	}
	ev := r.eventByID(m.EventId)
	if ev == nil || ev.Pos > upto || !r.visibility(m.UserId).sees(ev) {
		return notFound
	}
	return &wire.EventReply{EventJson: r.clientEvent(ev, m.DeviceId, m.UserId)}
}

// eventByID reads an event by its id, or nil.
func (r *room) eventByID(id string) *evRecord {
	raw, err := r.h.store.Get(r.key("eid", id))
	if err != nil {
		return nil
	}
	ev, err := r.readEvent(storage.ParseUint64(raw))
	if err != nil {
		return nil
	}
	return ev
}

// sync is the room's part of a /sync: the timeline since the user's last
// sync (at most limit events), the state the client lacks before it, and
// the room's membership counts.
func (r *room) sync(m *wire.RoomSync) *wire.RoomSyncReply {
	membership := r.membership(m.UserId)
	out := &wire.RoomSyncReply{Membership: membership}
	for sk, ev := range r.state {
		if sk.typ == "m.room.member" {
			switch membershipOf(ev) {
			case "join":
				out.Joined = append(out.Joined, sk.key)
				out.JoinedCount++
			case "invite":
				out.InvitedCount++
			}
		}
	}
	if membership == "invite" {
		// The stripped state the spec recommends, the invite itself, and
		// the inviter's member event, so that a client can name who invited.
		state := r.stateAt(r.durable - 1)
		inviter := ""
		for _, ev := range state {
			if ev.Type == "m.room.member" && *ev.StateKey == m.UserId {
				inviter = ev.Sender
			}
		}
		for _, ev := range state {
			switch ev.Type {
			case "m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption", "m.room.member":
				if ev.Type != "m.room.member" || *ev.StateKey == m.UserId || *ev.StateKey == inviter {
					out.State = append(out.State, r.clientEvent(ev, "", ""))
				}
			}
		}
		return out
	}
	if r.meta.InvitedOnly { // no timeline here: a rejected or rescinded invite shows as the user's leave alone
		if ev, err := r.readMember(m.UserId); err == nil && ev != nil && ev.Stream > m.Since && (m.Upto == 0 || ev.Stream <= m.Upto) {
			out.Timeline = [][]byte{r.clientEvent(ev, m.DeviceId, m.UserId)}
		}
		return out
	}
	upto, e := r.history(m.UserId)
	if e != nil {
		return &wire.RoomSyncReply{Error: e}
	}
	rf, err := parseRoomFilter(m.FilterJson)
	if err != nil {
		return &wire.RoomSyncReply{Error: malformed(wire.Error_FILTER, "Bad filter.")}
	}
	limit := int(m.Limit) // the filter's, or the default: 0 asks for no timeline at all
	if !m.FullState && r.quietSince(upto, m.Since, m.Upto) {
		out.PrevBatch = prevBatch(m.Since, false, upto+1, upto)
		return out // the usual room of an incremental sync: nothing new
	}
	// One backward scan finds the sync's cut and reads the timeline: events
	// take positions and stream positions in the same order, so the first
	// event at or below m.Upto is the last one this sync covers.
	var timeline []*evRecord
	v := r.visibility(m.UserId)
	first, scanned, cut := upto+1, 0, m.Upto == 0
	_ = r.scan(upto, true, func(ev *evRecord) bool {
		if m.Upto > 0 && ev.Stream > m.Upto {
			return true // committed after the sync's position: the next sync has it
		}
		if !cut {
			upto, first, cut = ev.Pos, ev.Pos+1, true
		}
		if ev.Stream <= m.Since {
			return false
		}
		if scanned == limit { // the limit counts events before filtering, as Synapse does
			out.Limited = true
			return false
		}
		scanned++
		first = ev.Pos
		if rf.Timeline.matches(ev) && v.sees(ev) {
			timeline = append(timeline, ev)
		}
		return true
	})
	senders := map[string]bool{m.UserId: true}
	slices.Reverse(timeline)
	for _, ev := range timeline {
		out.Timeline = append(out.Timeline, r.clientEvent(ev, m.DeviceId, m.UserId))
		senders[ev.Sender] = true
	}
	out.PrevBatch = prevBatch(m.Since, out.Limited, first, upto)
	initial := m.Since == 0 || m.FullState
	if !initial && !out.Limited {
		return out // every state change since m.Since is in the timeline
	}
	for _, ev := range r.stateAt(first - 1) {
		if !initial && ev.Stream <= m.Since {
			continue
		}
		if ev.Type == "m.room.member" && rf.State.LazyLoadMembers && !senders[*ev.StateKey] {
			continue
		}
		if rf.State.matches(ev) {
			out.State = append(out.State, r.clientEvent(ev, "", ""))
		}
	}
	return out
}

// quietSince is whether the room has no event after stream position since up
// to position upto, told by reading the event at upto alone (cheaper than
// a scan): positions and stream positions grow together. since 0 is never
// quiet; nor is an event above the sync's position upto (in flight).
func (r *room) quietSince(upto, since, syncUpto uint64) bool {
	if since == 0 {
		return false
	}
	ev, err := r.readEvent(upto)
	return err == nil && ev.Stream <= since && (syncUpto == 0 || ev.Stream <= syncUpto)
}
