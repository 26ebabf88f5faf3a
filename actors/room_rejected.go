package actors

import (
	"encoding/json"
	"slices"

	"persona/storage"
)

// Events the auth rules refused stay in the room's DAG: a later event of
// another server may name one as a prev event, and the room then takes the
// state after it to be the state before it, the state after its own prev
// events. A refused event is kept by id with its prev events, outside the
// timeline and the state; it is never an auth event, and never served.

// refusal is an event the auth rules refused: its id and prev events.
type refusal struct {
	id    string
	prevs []string
}

// rejectedPrevs are the prev events of a refused event, or nil when the
// room refused no event of that id.
func (r *room) rejectedPrevs(id string) []string {
	if prevs, ok := r.rejected[id]; ok {
		return prevs
	}
	raw, err := r.h.store.Get(r.key("rj", id))
	if err != nil {
		return nil
	}
	var prevs []string
	if json.Unmarshal(raw, &prevs) != nil {
		return nil
	}
	r.noteRejected(id, prevs)
	return prevs
}

// isRejected reports whether the room refused the event id.
func (r *room) isRejected(id string) bool { return r.rejectedPrevs(id) != nil }

// noteRejected keeps the prev events of a refused event in memory, where
// they are found before the batch that records them is durable.
func (r *room) noteRejected(id string, prevs []string) {
	if r.rejected == nil {
		r.rejected = map[string][]string{}
	}
	if prevs == nil {
		prevs = []string{}
	}
	r.rejected[id] = prevs
}

// recordRejected records in b that the room refused the event id.
func (r *room) recordRejected(b *storage.Batch, id string, prevs []string) {
	r.noteRejected(id, prevs)
	b.Set(r.key("rj", id), mustJSON(r.rejected[id]))
}

// prevRecords are the events whose state an event naming id as a prev
// event follows: that event, or for a refused one the events its own prev
// events lead to, unless a gap's filling gave the state after it (an
// outlier record then stands for it: room_gap.go); ok is false when one of
// them is unknown.
func (r *room) prevRecords(id string, seen map[string]bool) (recs []*evRecord, ok bool) {
	if seen[id] {
		return nil, true
	}
	seen[id] = true
	if p := r.eventByID(id); p != nil && p.Pos < r.meta.NextPos {
		return []*evRecord{p}, true
	}
	if r.gapState(id) != nil {
		return []*evRecord{{ID: id, Outlier: true}}, true
	}
	prevs := r.rejectedPrevs(id)
	if prevs == nil {
		return nil, false
	}
	for _, prev := range prevs {
		more, ok := r.prevRecords(prev, seen)
		if !ok {
			return nil, false
		}
		recs = append(recs, more...)
	}
	return recs, true
}

// citesRejected reports whether the event pdu cites as an auth event one
// the room refused.
func (r *room) citesRejected(pdu []byte) bool {
	dag, err := dagOf(pdu)
	if err != nil {
		return false
	}
	return slices.ContainsFunc(dag.Auth, func(id string) bool { return !r.known(id) && r.isRejected(id) })
}
