package actors

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"

	"persona/storage"
	"persona/wire"
)

// A gap in the room's DAG that get_missing_events left is filled from the
// state at the event the room lacks, as the server that sent the events
// after it tells (/state_ids): the federation layer asks the room which
// events of that state and its auth chain it lacks (lacking), fetches
// them, and hands them over with the state's ids (receiveState). The room
// checks each fetched event against the auth events it cites, an event's
// auth events before it: one the auth rules allow is held as an outlier,
// outside the timeline, the current state and the forward extremities;
// one they refuse, or one citing an auth event the room does not hold
// (refused, or not to be had), is recorded as rejected, and so are the
// events that cite it. The state after the missing event (the state
// before it, and the event itself when it is a state event the room
// holds) is kept under the event's id (gs/<event id>: per type and state
// key, the id of an event the room holds), so that an event naming it as
// a prev event is checked against that state (prevRecords, stateBefore).

// lacking answers which of m's events the room neither holds nor refused.
func (r *room) lacking(m *wire.GetLacking) *wire.LackingReply {
	out := &wire.LackingReply{}
	seen := map[string]bool{}
	for _, id := range m.EventIds {
		if seen[id] {
			continue
		}
		seen[id] = true
		if !r.known(id) && !r.isRejected(id) {
			out.EventIds = append(out.EventIds, id)
		}
	}
	return out
}

// receiveState takes the state at m.At that m.Origin gave: its events the
// room lacked, checked in the order of their auth events, and the state
// after m.At, answered once durable.
func (r *room) receiveState(ctx actor.Context, m *wire.ReceiveState) {
	switch {
	case r.meta.InvitedOnly:
		ctx.Respond(&wire.ReceiveReply{Rejected: "this server is not in the room"})
		return
	case !r.serverAllowed(m.Origin):
		ctx.Respond(&wire.ReceiveReply{Rejected: "the room's server ACL denies " + m.Origin})
		return
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(r.meta.Version))
	if err != nil {
		ctx.Respond(&wire.ReceiveReply{Rejected: "unsupported room version " + r.meta.Version})
		return
	}
	batch, raws := map[string]gomatrixserverlib.PDU{}, map[string][]byte{}
	for _, raw := range m.Pdus {
		ev, err := verImpl.NewEventFromTrustedJSON(raw, false)
		if err != nil || ev.RoomID().String() != r.id || r.known(ev.EventID()) || r.isRejected(ev.EventID()) {
			continue
		}
		batch[ev.EventID()], raws[ev.EventID()] = ev, raw
	}
	var b storage.Batch
	last, extremities, depth := r.tip, slices.Clone(r.extremities()), max(r.tip.depth, r.meta.Depth)
	held := map[string]gomatrixserverlib.PDU{}
	for _, ev := range authOrder(batch) {
		id := ev.EventID()
		if err := r.allowedByCited(verImpl, ev, held); err != nil {
			r.recordRejected(&b, id, ev.PrevEventIDs())
			continue
		}
		rec := recordOf(ev, raws[id])
		rec.Outlier, rec.StateKey = true, nil // its PDU keeps its state key
		if err := r.append(&b, rec); err != nil {
			r.abort()
			ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
			return
		}
		held[id] = ev
	}
	if len(held) > 0 { // outliers are not the room's last events: the next events follow what they followed
		r.tip, r.meta.Extremities, r.meta.Depth = last, extremities, depth
		b.Set(r.key("meta"), mustJSON(r.meta))
	}
	state := map[string]string{}
	for _, id := range append(slices.Clone(m.StateIds), m.At) {
		if typ, key, ok := r.stateKeyOf(id, held); ok {
			state[typ+"\x00"+key] = id
		}
	}
	b.Set(r.key("gs", m.At), mustJSON(state))
	r.commit(ctx, &b, &wire.ReceiveReply{}, func() { r.noteGap(m.At, state) })
}

// allowedByCited checks a fetched event against the auth events it cites:
// each must be held, by the room or among those of the same state taken
// before it (held), and the auth rules must allow the event by them.
func (r *room) allowedByCited(verImpl gomatrixserverlib.IRoomVersion, ev gomatrixserverlib.PDU, held map[string]gomatrixserverlib.PDU) error {
	cited, err := r.citedAuthEvents(verImpl, ev, held)
	if err != nil {
		return err
	}
	provider, err := gomatrixserverlib.NewAuthEvents(cited)
	if err != nil {
		return fmt.Errorf("auth events: %w", err)
	}
	if err := gomatrixserverlib.Allowed(ev, provider, userIDForSender); err != nil {
		return fmt.Errorf("auth by its auth events: %w", err)
	}
	return nil
}

// authOrder is batch's events, each after the events of batch it cites as
// auth events (by depth, then id, where that leaves a choice). Events in a
// loop of auth events are left out.
func authOrder(batch map[string]gomatrixserverlib.PDU) []gomatrixserverlib.PDU {
	var out []gomatrixserverlib.PDU
	done := map[string]bool{}
	for len(done) < len(batch) {
		var ready []gomatrixserverlib.PDU
		for id, ev := range batch {
			waits := slices.ContainsFunc(ev.AuthEventIDs(), func(a string) bool { _, in := batch[a]; return in && !done[a] })
			if !done[id] && !waits {
				ready = append(ready, ev)
			}
		}
		if len(ready) == 0 {
			break
		}
		slices.SortFunc(ready, func(a, b gomatrixserverlib.PDU) int {
			return cmp.Or(cmp.Compare(a.Depth(), b.Depth()), cmp.Compare(a.EventID(), b.EventID()))
		})
		for _, ev := range ready {
			done[ev.EventID()] = true
		}
		out = append(out, ready...)
	}
	return out
}

// stateKeyOf is the type and state key of the state event id, which the
// room holds or took just now (held); ok is false for any other.
func (r *room) stateKeyOf(id string, held map[string]gomatrixserverlib.PDU) (typ, key string, ok bool) {
	if ev, in := held[id]; in {
		if ev.StateKey() == nil {
			return "", "", false
		}
		return ev.Type(), *ev.StateKey(), true
	}
	rec := r.eventByID(id)
	switch {
	case rec == nil || rec.Pos >= r.meta.NextPos || rec.Stripped:
		return "", "", false
	case rec.StateKey != nil:
		return rec.Type, *rec.StateKey, true
	case rec.PDU == nil:
		return "", "", false
	}
	var pdu struct {
		StateKey *string `json:"state_key"`
	}
	if json.Unmarshal(rec.PDU, &pdu) != nil || pdu.StateKey == nil {
		return "", "", false
	}
	return rec.Type, *pdu.StateKey, true
}

// gapState is the state after the event id kept when id filled a gap
// (per type and state key, an event id), or nil.
func (r *room) gapState(id string) map[string]string {
	if state, ok := r.gaps[id]; ok {
		return state
	}
	raw, err := r.h.store.Get(r.key("gs", id))
	if err != nil {
		return nil
	}
	var state map[string]string
	if json.Unmarshal(raw, &state) != nil {
		return nil
	}
	r.noteGap(id, state)
	return state
}

// noteGap keeps the state after the event id that a gap's filling gave.
func (r *room) noteGap(id string, state map[string]string) {
	if r.gaps == nil {
		r.gaps = map[string]map[string]string{}
	}
	r.gaps[id] = state
}

// stateAfterPrev is the state event of (typ, key) after the prev event p:
// from the state kept for p when p filled a gap, else at p's position.
func (r *room) stateAfterPrev(p *evRecord, typ, key string) (*evRecord, error) {
	if p.Outlier {
		if state := r.gapState(p.ID); state != nil {
			id, ok := state[typ+"\x00"+key]
			if !ok {
				return nil, nil
			}
			return r.eventByID(id), nil
		}
	}
	return r.stateAfter(typ, key, p.Pos)
}
