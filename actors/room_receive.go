package actors

import (
	"encoding/json"
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/storage"
	"persona/wire"
)

// A room takes events from other servers here. The federation layer has
// checked each PDU's signatures and content hash and fetched what the
// room said it lacked; the room checks the rest: the event belongs to it,
// its prev_events are known, the auth rules allow it by the auth events it
// cites (each held by the room: one it rejected never is) and against the
// state before it (the state after its prev event, or the resolution (state
// resolution v2) of the states after each where the DAG forks). An
// accepted event takes the next position like a local one; the room's
// forward extremities lose its prev_events and gain it.

// receive answers m with the outcome for its PDU.
func (r *room) receive(ctx actor.Context, m *wire.ReceivePDU) {
	if r.meta.InvitedOnly {
		r.rescinded(ctx, m)
		return
	}
	r.refused = nil
	ev, reply := r.checkRemote(m)
	if refused := r.refused; refused != nil {
		r.refused = nil
		reply.AuthRejected = r.citesRejected(m.Pdu)
		var b storage.Batch
		r.recordRejected(&b, refused.id, refused.prevs)
		r.commit(ctx, &b, reply, nil)
		return
	}
	if ev == nil {
		if reply.Rejected == "" && reply.Error == nil && len(reply.Missing) == 0 && len(r.waiting) > 0 {
			// Held already, maybe on its way to disk: answered once what
			// is before it is durable.
			r.commit(ctx, &storage.Batch{}, reply, nil)
			return
		}
		ctx.Respond(reply)
		return
	}
	var b storage.Batch
	if ev.StateKey() != nil && ev.Type() == "m.room.member" {
		if _, err := r.readMember(*ev.StateKey()); err != nil {
			ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
			return
		}
	}
	if err := r.appendRemote(&b, ev, m.Pdu, false); err != nil {
		ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
		return
	}
	r.keepParsed(ev, r.meta.NextPos-1)
	var notify []string
	if ev.Type() == "m.room.member" && ev.StateKey() != nil && r.local(*ev.StateKey()) {
		notify = []string{*ev.StateKey()}
	}
	if len(notify) > 0 {
		r.commitMembership(ctx, &b, &wire.ReceiveReply{}, notify)
		return
	}
	r.commit(ctx, &b, &wire.ReceiveReply{}, nil)
}

// checkRemote parses and checks m's PDU; a nil event comes with the answer
// to give (accepted already, refused, or prev events missing). An event the
// auth rules refuse is left in r.refused, for receive to record.
func (r *room) checkRemote(m *wire.ReceivePDU) (gomatrixserverlib.PDU, *wire.ReceiveReply) {
	if !r.serverAllowed(m.Origin) {
		return nil, &wire.ReceiveReply{Rejected: "the room's server ACL denies " + m.Origin}
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(r.meta.Version))
	if err != nil {
		return nil, &wire.ReceiveReply{Rejected: "unsupported room version " + r.meta.Version}
	}
	var ev gomatrixserverlib.PDU
	if m.EventId != "" {
		ev, err = verImpl.NewEventFromTrustedJSONWithEventID(m.EventId, m.Pdu, false)
	} else {
		ev, err = verImpl.NewEventFromTrustedJSON(m.Pdu, false)
	}
	if err != nil {
		return nil, &wire.ReceiveReply{Rejected: "malformed event: " + err.Error()}
	}
	if ev.RoomID().String() != r.id {
		return nil, &wire.ReceiveReply{Rejected: "the event is not of this room"}
	}
	if r.meta.InvitedOnly {
		return nil, &wire.ReceiveReply{Rejected: "this server is not in the room"}
	}
	if r.known(ev.EventID()) {
		return nil, &wire.ReceiveReply{} // a resend: held already
	}
	if r.isRejected(ev.EventID()) {
		return nil, &wire.ReceiveReply{Rejected: "the auth rules refused this event before"}
	}
	var missing []string
	var prevs []*evRecord
	seen := map[string]bool{}
	for _, id := range ev.PrevEventIDs() {
		if recs, ok := r.prevRecords(id, seen); ok {
			prevs = append(prevs, recs...)
		} else {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &wire.ReceiveReply{Missing: missing}
	}
	if len(prevs) == 0 {
		return nil, &wire.ReceiveReply{Rejected: "the event follows no event of the room"}
	}
	if err := r.allowedByAuthEvents(verImpl, ev); err != nil {
		r.refused = &refusal{ev.EventID(), ev.PrevEventIDs()}
		return nil, &wire.ReceiveReply{Rejected: err.Error()}
	}
	state, err := r.stateBefore(verImpl, ev, prevs)
	if err != nil {
		return nil, &wire.ReceiveReply{Rejected: err.Error()}
	}
	provider, err := gomatrixserverlib.NewAuthEvents(state)
	if err != nil {
		return nil, &wire.ReceiveReply{Rejected: err.Error()}
	}
	if err := gomatrixserverlib.Allowed(ev, provider, userIDForSender); err != nil {
		r.refused = &refusal{ev.EventID(), ev.PrevEventIDs()}
		return nil, &wire.ReceiveReply{Rejected: "auth: " + err.Error()}
	}
	return ev, nil
}

// allowedByAuthEvents checks ev against the events it cites as its auth
// events: each must be one the room holds (a rejected event never is), and
// the auth rules must allow ev by them.
func (r *room) allowedByAuthEvents(verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU) error {
	return r.allowedByCited(verImpl, ev, nil)
}

// citedAuthEvents is the auth events ev cites, parsed: from held (events
// checked together with ev) or the room. Each must be one the room holds;
// a rejected event never is.
func (r *room) citedAuthEvents(verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, held map[string]gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	var cited []gomatrixserverlib.PDU
	for _, id := range ev.AuthEventIDs() {
		if a, ok := held[id]; ok {
			cited = append(cited, a)
			continue
		}
		if p, ok := r.parsed[id]; ok && p.pos < r.meta.NextPos {
			cited = append(cited, p.ev)
			continue
		}
		rec := r.eventByID(id)
		if rec == nil || rec.Pos >= r.meta.NextPos {
			if r.isRejected(id) {
				return nil, fmt.Errorf("auth event %s was rejected", id)
			}
			return nil, fmt.Errorf("auth event %s is unknown", id)
		}
		a, err := r.parsePDU(verImpl, rec)
		if err != nil {
			return nil, err
		}
		cited = append(cited, a)
	}
	return cited, nil
}

// userIDForSender maps a sender to its user id: in the room versions
// persona speaks they are the same.
func userIDForSender(_ spec.RoomID, s spec.SenderID) (*spec.UserID, error) {
	return spec.NewUserID(string(s), true)
}

// known reports whether the room holds an event, on disk or on its way
// there: a PDU that comes again while its first copy is being committed is
// a resend too.
func (r *room) known(id string) bool {
	if _, ok := r.arriving[id]; ok {
		return true
	}
	_, err := r.h.store.Get(r.key("eid", id))
	return err == nil
}

// arrived notes a remote event just appended, for known and
// redactionTarget, until it is durable (forgetArrived).
func (r *room) arrived(ev *evRecord) {
	if r.arriving == nil {
		r.arriving = map[string]*evRecord{}
	}
	r.arriving[ev.ID] = ev
}

// forgetArrived forgets the remote events durable since they were
// appended: storage answers for them.
func (r *room) forgetArrived() {
	for id, e := range r.arriving {
		if e.Pos < r.durable {
			delete(r.arriving, id)
		}
	}
	if len(r.arriving) == 0 {
		r.arriving = nil // an emptied map keeps its memory
	}
}

// stateBefore is the state ev's auth needs, as it was before ev: after its
// prev event, or resolved across its prev events.
func (r *room) stateBefore(verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, prevs []*evRecord) ([]gomatrixserverlib.PDU, error) {
	tuples := gomatrixserverlib.StateNeededForAuth([]gomatrixserverlib.PDU{ev}).Tuples()
	var sets [][]gomatrixserverlib.PDU
	for _, p := range prevs {
		var set []gomatrixserverlib.PDU
		for _, t := range tuples {
			rec, err := r.stateAfterPrev(p, t.EventType, t.StateKey)
			if err != nil {
				return nil, err
			}
			if rec == nil {
				continue
			}
			e, err := r.parsePDU(verImpl, rec)
			if err != nil {
				return nil, err
			}
			set = append(set, e)
		}
		sets = append(sets, set)
	}
	if len(sets) == 1 {
		return sets[0], nil
	}
	var chain []gomatrixserverlib.PDU
	for _, set := range sets {
		c, err := r.authChain(verImpl, set)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c...)
	}
	return gomatrixserverlib.ResolveConflictsNew(verImpl.Version(), sets, chain, userIDForSender, func(string) bool { return false })
}

// stateAfter is the state event of (typ, key) in force after the event at
// position pos, or nil.
func (r *room) stateAfter(typ, key string, pos uint64) (*evRecord, error) {
	if cur := r.state[stateKey{typ, key}]; cur != nil && cur.Pos <= pos {
		return cur, nil
	}
	if pos+1 == r.meta.NextPos { // the last event: the current state
		if typ == "m.room.member" {
			return r.readMember(key)
		}
		if err := r.readUnreadHeader(); err != nil {
			return nil, err
		}
		return r.state[stateKey{typ, key}], nil
	}
	return r.pastState().event(typ, key, pos)
}

// authChain is the events that events' auth_events name, and theirs, to
// the create event.
func (r *room) authChain(verImpl gomatrixserverlib.IRoomVersion, events []gomatrixserverlib.PDU) ([]gomatrixserverlib.PDU, error) {
	seen := map[string]bool{}
	var out []gomatrixserverlib.PDU
	queue := slices.Clone(events)
	for len(queue) > 0 {
		e := queue[0]
		queue = queue[1:]
		for _, id := range e.AuthEventIDs() {
			if seen[id] {
				continue
			}
			seen[id] = true
			rec := r.eventByID(id)
			if rec == nil {
				return nil, fmt.Errorf("auth event %s is missing", id)
			}
			a, err := r.parsePDU(verImpl, rec)
			if err != nil {
				return nil, err
			}
			out = append(out, a)
			queue = append(queue, a)
		}
	}
	return out, nil
}

// parsedEvent is an event the room holds at pos, parsed.
type parsedEvent struct {
	ev  gomatrixserverlib.PDU
	pos uint64
}

// maxParsed bounds a room's parsed events: past it they are dropped
// together, and the ones still cited are parsed again.
const maxParsed = 32

// parsePDU is a stored event as gomatrixserverlib's PDU (unsigned when
// local: it stays in the room), parsed once while it stays in r.parsed.
func (r *room) parsePDU(verImpl gomatrixserverlib.IRoomVersion, rec *evRecord) (gomatrixserverlib.PDU, error) {
	if p, ok := r.parsed[rec.ID]; ok && p.pos == rec.Pos {
		return p.ev, nil
	}
	raw := rec.PDU
	if raw == nil {
		var err error
		if raw, err = r.unsignedPDU(rec); err != nil {
			return nil, err
		}
	}
	ev, err := verImpl.NewEventFromTrustedJSONWithEventID(rec.ID, raw, false)
	if err != nil {
		return nil, err
	}
	r.keepParsed(ev, rec.Pos)
	return ev, nil
}

// keepParsed keeps ev, held at pos, for parsePDU and the auth checks.
func (r *room) keepParsed(ev gomatrixserverlib.PDU, pos uint64) {
	if r.parsed == nil || len(r.parsed) >= maxParsed {
		r.parsed = make(map[string]parsedEvent, maxParsed)
	}
	r.parsed[ev.EventID()] = parsedEvent{ev, pos}
}

// afterRemote is the room's forward extremities once ev joins them.
func (r *room) afterRemote(ev gomatrixserverlib.PDU) []string {
	var out []string
	for _, id := range r.extremities() {
		if !slices.Contains(ev.PrevEventIDs(), id) {
			out = append(out, id)
		}
	}
	return append(out, ev.EventID())
}

// recordOf is a remote event as the room stores it.
func recordOf(ev gomatrixserverlib.PDU, raw []byte) *evRecord {
	rec := &evRecord{ID: ev.EventID(), Type: ev.Type(), StateKey: ev.StateKey(), Sender: string(ev.SenderID()),
		TS: int64(ev.OriginServerTS()), Content: json.RawMessage(ev.Content()), PrevEvents: ev.PrevEventIDs(),
		AuthEvents: ev.AuthEventIDs(), Depth: ev.Depth(), Redacts: redactsOf(ev), PDU: raw}
	if ev.Type() == "m.room.member" {
		_ = membershipOf(rec)
	}
	return rec
}
