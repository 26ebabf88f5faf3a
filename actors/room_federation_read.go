package actors

import (
	"slices"

	"github.com/matrix-org/gomatrixserverlib"

	"persona/internal/mxid"
	"persona/wire"
)

// What a room tells other servers that fill gaps in their copy of it:
// the state at an event, an event's auth chain, the events before some
// (backfill) and the events between two sets (get_missing_events).

// maxFederationRead is the most events one read answers.
const maxFederationRead = 100

// federationRead answers m for the server m.Origin.
func (r *room) federationRead(m *wire.FederationRead) *wire.FederationReadReply {
	if !r.serverAllowed(m.Origin) {
		return &wire.FederationReadReply{Error: forbidden("The room's server ACL denies your server.")}
	}
	if !r.serverMayRead(m.Origin) {
		return &wire.FederationReadReply{Error: forbidden("Your server has no member in this room.")}
	}
	limit := int(min(max(m.Limit, 1), maxFederationRead))
	switch m.What {
	case "event":
		ev := r.eventByID(m.EventId)
		if ev == nil || ev.Pos >= r.durable {
			return &wire.FederationReadReply{Error: notFound(wire.Error_EVENT, "Event not found.")}
		}
		j, err := r.signedPDU(ev)
		if err != nil {
			return &wire.FederationReadReply{Error: internal(err.Error())}
		}
		return &wire.FederationReadReply{Pdus: [][]byte{j}}
	case "state", "state_ids", "event_auth":
		ev := r.eventByID(m.EventId)
		if ev == nil || ev.Pos >= r.durable {
			return &wire.FederationReadReply{Error: notFound(wire.Error_EVENT, "Event not found.")}
		}
		var state []*evRecord
		if m.What == "event_auth" {
			state = []*evRecord{ev}
		} else if ev.Pos > 0 {
			state = r.stateAt(ev.Pos - 1) // the state before the event
		}
		return r.withAuthChain(state, m.What == "state_ids", m.What != "event_auth")
	case "backfill":
		return r.backfill(m.From, limit, r.serverSees(m.Origin))
	case "missing":
		return r.missingEvents(m.Earliest, m.From, limit, m.MinDepth, r.serverSees(m.Origin))
	}
	return &wire.FederationReadReply{Error: badValue(wire.Error_EVENT, "Unknown read.")}
}

// serverMayRead reports whether server has a joined member, or the room's
// history is world readable.
func (r *room) serverMayRead(server string) bool {
	if r.historyVisibility() == "world_readable" {
		return true
	}
	return slices.Contains(r.servers(), server)
}

// withAuthChain answers state (as PDUs or ids) and the auth chain of its
// events.
func (r *room) withAuthChain(state []*evRecord, idsOnly, withState bool) *wire.FederationReadReply {
	out := &wire.FederationReadReply{}
	add := func(ev *evRecord, pdus *[][]byte, ids *[]string) bool {
		if idsOnly {
			*ids = append(*ids, ev.ID)
			return true
		}
		j, err := r.signedPDU(ev)
		if err != nil {
			r.h.log.Error("room cannot rebuild an event", "room", r.id, "event", ev.ID, "err", err)
			return false
		}
		*pdus = append(*pdus, j)
		return true
	}
	seen := map[string]bool{}
	var queue []string
	for _, ev := range state {
		if withState && !add(ev, &out.Pdus, &out.PduIds) {
			return &wire.FederationReadReply{Error: internal("Cannot rebuild an event.")}
		}
		queue = append(queue, r.authRefs(ev)...)
	}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		ev := r.eventByID(id)
		if ev == nil {
			continue
		}
		if !add(ev, &out.AuthChain, &out.AuthChainIds) {
			return &wire.FederationReadReply{Error: internal("Cannot rebuild an event.")}
		}
		queue = append(queue, r.authRefs(ev)...)
	}
	return out
}

// serverSees decides which events a server may have whole, by the room's
// history visibility in force when each was sent: "world_readable" and
// "shared" events, the default, it may; "invited" events if one of its
// users was then invited or joined; "joined" events if one was then
// joined. The others it gets redacted (the spec's "Server behaviour" of
// history visibility).
func (r *room) serverSees(server string) func(*evRecord) bool {
	hv := r.state[stateKey{"m.room.history_visibility", ""}]
	if hv == nil || (permissive(hv) && hv.prev == nil && hv.PrevID == "") {
		return func(*evRecord) bool { return true }
	}
	var users []string
	for sk := range r.state {
		if sk.typ == "m.room.member" && mxid.ServerOf(sk.key) == server {
			users = append(users, sk.key)
		}
	}
	for user := range r.unreadMembers {
		if mxid.ServerOf(user) == server {
			users = append(users, user)
		}
	}
	return func(ev *evRecord) bool {
		setting := "shared" // before any history_visibility event
		if h := r.before(hv, ev.Pos); h != nil {
			setting = historySetting(h)
		}
		if setting != "joined" && setting != "invited" {
			return true
		}
		for _, u := range users {
			switch r.membershipAt(u, ev.Pos) { // after ev: the server's own join counts
			case "join":
				return true
			case "invite":
				if setting == "invited" {
					return true
				}
			}
		}
		return false
	}
}

// pduFor is ev as a server that sees it (or not) gets it: whole, or
// redacted as the room's version redacts, signatures and hashes kept.
func (r *room) pduFor(ev *evRecord, sees func(*evRecord) bool) ([]byte, error) {
	j, err := r.signedPDU(ev)
	if err != nil || sees(ev) {
		return j, err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(r.meta.Version))
	if err != nil {
		return nil, err
	}
	return verImpl.RedactEventJSON(j)
}

// backfill answers up to limit events from those in from backwards, in
// the room's order, newest first as the spec's examples give them,
// redacted where sees says.
func (r *room) backfill(from []string, limit int, sees func(*evRecord) bool) *wire.FederationReadReply {
	start := uint64(0)
	for _, id := range from {
		if ev := r.eventByID(id); ev != nil && ev.Pos < r.durable {
			start = max(start, ev.Pos)
		}
	}
	out := &wire.FederationReadReply{}
	var failed error
	_ = r.scan(start, true, func(ev *evRecord) bool {
		j, err := r.pduFor(ev, sees)
		if err != nil {
			failed = err
			return false
		}
		out.Pdus = append(out.Pdus, j)
		return len(out.Pdus) < limit && ev.Pos > 0
	})
	if failed != nil {
		return &wire.FederationReadReply{Error: internal(failed.Error())}
	}
	return out
}

// missingEvents walks prev_events back from latest, stopping at earliest
// and at min_depth, and answers what it found oldest first, redacted where
// sees says.
func (r *room) missingEvents(earliest, latest []string, limit int, minDepth int64, sees func(*evRecord) bool) *wire.FederationReadReply {
	stop := map[string]bool{}
	for _, id := range earliest {
		stop[id] = true
	}
	var found []*evRecord
	seen := map[string]bool{}
	queue := []string{}
	for _, id := range latest {
		if ev := r.eventByID(id); ev != nil {
			prev, _ := r.prevOf(ev)
			queue = append(queue, prev...)
		}
	}
	for len(queue) > 0 && len(found) < limit {
		id := queue[0]
		queue = queue[1:]
		if seen[id] || stop[id] {
			continue
		}
		seen[id] = true
		ev := r.eventByID(id)
		if ev == nil || ev.Depth < minDepth || ev.Outlier {
			continue
		}
		found = append(found, ev)
		prev, _ := r.prevOf(ev)
		queue = append(queue, prev...)
	}
	slices.SortFunc(found, func(a, b *evRecord) int { return int(a.Pos) - int(b.Pos) })
	out := &wire.FederationReadReply{}
	for _, ev := range found {
		j, err := r.pduFor(ev, sees)
		if err != nil {
			return &wire.FederationReadReply{Error: internal(err.Error())}
		}
		out.Pdus = append(out.Pdus, j)
	}
	return out
}
