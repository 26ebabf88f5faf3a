package actors

import (
	"encoding/json"
	"math"
	"slices"
	"time"

	"persona/storage"
)

// append adds ev to the room in b: the next position, a stream position, the
// event-id index, and the state index entry of a state event. It updates the
// in-memory state at once; the caller commits b.
func (r *room) append(b *storage.Batch, ev *evRecord) error {
	if ev.TS == 0 {
		ev.TS = time.Now().UnixMilli()
	}
	if ev.StateKey != nil && ev.Type == "m.room.member" {
		if _, err := r.readMember(*ev.StateKey); err != nil { // into r.state, for prev and auth_events
			return err
		}
	}
	if ev.PDU == nil && !ev.Stripped {
		if err := r.seal(ev); err != nil {
			return err
		}
	}
	stream, err := r.h.stream.take(r.part)
	if err != nil {
		return err
	}
	ev.Pos, ev.Stream = r.meta.NextPos, stream
	r.meta.NextPos++
	if ev.PDU != nil && !ev.Outlier { // a redaction may have come first
		if err := r.redactIfAwaited(b, ev); err != nil {
			return err
		}
	}
	r.tip = tip{ev.ID, ev.Depth}
	b.Set(r.key("eid", ev.ID), []byte(storage.Uint64(ev.Pos)))
	header := r.noteAuthState(ev) || ev.Pos == 0
	if ev.PDU == nil && len(r.meta.Extremities) > 0 { // a local event follows every extremity (receive sets them after a remote one)
		r.meta.Extremities, r.meta.Depth, header = nil, 0, true
	}
	if ev.StateKey != nil {
		sk := stateKey{ev.Type, *ev.StateKey}
		if prev := r.state[sk]; prev != nil {
			ev.Prev, ev.PrevSender, ev.PrevID = prev.Content, prev.Sender, prev.ID
			ev.prev = prev
		}
		r.state[sk] = ev
		r.unsynced = append(r.unsynced, ev)
		index := []byte(storage.Uint64(ev.Pos))
		if sk.typ == "m.room.member" {
			_ = membershipOf(ev) // sets ev.membership (0 for a value outside memberships: the index then names the position alone)
			var version uint64
			if rec := r.members[sk.key]; rec != nil {
				version = rec.Version
			}
			index = memberIndex{ev.Pos, ev.Stream, ev.membership, version}.encode()
		}
		b.Set(r.stateIndexKey(ev.Type, *ev.StateKey, ev.Pos), index)
	}
	b.Set(r.key("ev", storage.Uint64(ev.Pos)), r.encodeEvent(ev))
	if ev.Txn != "" {
		b.Set(r.txnKey(ev.Redacts != "", ev.Sender, ev.Device, ev.Txn), []byte(ev.ID))
	}
	if ev.Type == "m.room.redaction" && !ev.Outlier && !ev.Stripped {
		if err := r.applyRedaction(b, ev); err != nil {
			return err
		}
	}
	if header { // the next position is the last event's, plus one: it is not stored
		b.Set(r.key("meta"), mustJSON(r.meta))
	}
	if ev.Type == "m.room.member" && (ev.prev == nil || membershipOf(ev.prev) != membershipOf(ev)) {
		r.remote = nil // a rename keeps who is joined: the servers stand
	}
	r.noteOutbound(b, ev)
	r.inFlight = append(r.inFlight, stream)
	r.wakeUsers = append(r.wakeUsers, r.audience(ev)...)
	return nil
}

// audience is who a new event concerns: joined and invited members, and the
// target of a membership event.
func (r *room) audience(ev *evRecord) []string {
	var users []string
	for sk, e := range r.state {
		if sk.typ == "m.room.member" {
			if m := membershipOf(e); m == "join" || m == "invite" {
				users = append(users, sk.key)
			}
		}
	}
	for user, m := range r.unreadMembers {
		if m := memberships[m.membership]; m == "join" || m == "invite" {
			users = append(users, user)
		}
	}
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		users = append(users, *ev.StateKey)
	}
	return users
}

// clientEvent is an event in the Matrix client format, as viewer's device
// sees it: its own events carry their transaction id, and every event the
// viewer's membership at that point (unsigned.membership, MSC4115).
func (r *room) clientEvent(ev *evRecord, device, viewer string) []byte {
	return mustJSON(r.clientFields(ev, device, viewer, true))
}

// clientFields is clientEvent's object; a redacted event carries the
// redaction (redacted_because) when because is set. A redacted event
// shows no prev_content (the redaction algorithm keeps no unsigned).
func (r *room) clientFields(ev *evRecord, device, viewer string, because bool) map[string]any {
	unsigned := map[string]any{"age": max(0, time.Now().UnixMilli()-ev.TS)}
	if viewer != "" {
		unsigned["membership"] = r.membershipAt(viewer, ev.Pos)
	}
	if ev.Prev != nil {
		if ev.RedactedBy == "" {
			unsigned["prev_content"] = ev.Prev
			unsigned["prev_sender"] = ev.PrevSender
		}
		unsigned["replaces_state"] = ev.PrevID
	}
	if ev.Txn != "" && device != "" && ev.Device == device {
		unsigned["transaction_id"] = ev.Txn
	}
	out := map[string]any{
		"event_id": ev.ID, "type": ev.Type, "sender": ev.Sender, "origin_server_ts": ev.TS,
		"content": ev.Content, "room_id": r.id, "unsigned": unsigned,
	}
	if ev.StateKey != nil {
		out["state_key"] = *ev.StateKey
	}
	if ev.RedactedBy != "" || ev.Redacts != "" {
		r.clientRedaction(ev, out, unsigned, because)
	}
	return out
}

// stateContent returns the content of a state event, decoded, or nil.
func (r *room) stateContent(typ, key string) map[string]any {
	ev := r.state[stateKey{typ, key}]
	if ev == nil {
		return nil
	}
	var c map[string]any
	_ = json.Unmarshal(ev.Content, &c)
	return c
}

// membership is a user's membership now ("leave" when none).
func (r *room) membership(user string) string {
	ev := r.state[stateKey{"m.room.member", user}]
	if ev == nil {
		if m, ok := r.unreadMembers[user]; ok {
			return memberships[m.membership]
		}
		return "leave"
	}
	return membershipOf(ev)
}

func membershipOf(ev *evRecord) string {
	if ev.membership != 0 {
		return memberships[ev.membership]
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(ev.Content, &c)
	if c.Membership == "" {
		c.Membership = "leave"
	}
	if i := slices.Index(memberships[:], c.Membership); i > 0 {
		ev.membership = uint8(i)
	}
	return c.Membership
}

// memberships are the values evRecord.membership names (0: not read yet).
var memberships = [...]string{"", "join", "leave", "invite", "ban", "knock"}

// joined is "join" in memberships.
const joined uint8 = 1

// powerLevel is a user's power level; from room version 12 the room's
// creators hold one above any other (MSC4289).
func (r *room) powerLevel(user string) int64 {
	if versionAtLeast(r.meta.Version, 12) && r.isCreator(user) {
		return math.MaxInt64
	}
	pl := r.stateContent("m.room.power_levels", "")
	if pl == nil {
		if user == r.meta.Creator {
			return 100
		}
		return 0
	}
	if users, ok := pl["users"].(map[string]any); ok {
		if v, ok := users[user].(float64); ok {
			return int64(v)
		}
	}
	if v, ok := pl["users_default"].(float64); ok {
		return int64(v)
	}
	return 0
}

// isCreator reports whether user created the room (its create event's
// sender) or is named in its additional_creators.
func (r *room) isCreator(user string) bool {
	if user == r.meta.Creator {
		return true
	}
	c := r.stateContent("m.room.create", "")
	extra, _ := c["additional_creators"].([]any)
	for _, u := range extra {
		if u == user {
			return true
		}
	}
	return false
}

// required is the power level an action or event type needs.
func (r *room) required(action string, eventType string, isState bool) int64 {
	pl := r.stateContent("m.room.power_levels", "")
	def := map[string]int64{"ban": 50, "kick": 50, "redact": 50, "invite": 0, "events_default": 0, "state_default": 50}
	num := func(k string) int64 {
		if pl != nil {
			if v, ok := pl[k].(float64); ok {
				return int64(v)
			}
		}
		if pl == nil && (k == "state_default" || k == "events_default") {
			return 0 // no power levels yet: anyone may (spec)
		}
		return def[k]
	}
	if action != "" {
		return num(action)
	}
	if pl != nil {
		if evs, ok := pl["events"].(map[string]any); ok {
			if v, ok := evs[eventType].(float64); ok {
				return int64(v)
			}
		}
	}
	if isState {
		return num("state_default")
	}
	return num("events_default")
}

// strip removes the keys a copied member content must not carry
// (MSC4466), and third_party_invite, which belongs to the join it came
// with (and which servers redact differently from room version 11).
func strip(content map[string]any) {
	delete(content, "reason")
	delete(content, "join_authorised_via_users_server")
	delete(content, "third_party_invite")
}
