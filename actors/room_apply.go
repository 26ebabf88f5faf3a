package actors

import (
	"encoding/json"

	"github.com/asynkron/protoactor-go/actor"

	"persona/storage"
	"persona/wire"
)

// applyUpdates is the room's side of profile propagation. For each version
// newer than the last one applied for the user, in order, it decides key by
// key whether the room takes the new value (mode, per-room override, old
// global value), appends one m.room.member event when the content changes,
// and records the version. Older or repeated versions are acknowledged and
// ignored, so deliveries may be repeated, reordered or resent: the effect is
// exactly once and never goes backwards. The ack is cumulative and speaks
// only for durable versions: a repeat of a version whose write is under way
// is left to that write, whose failure leaves it unacknowledged (it comes
// again), and a write that lands while an earlier one fails records no
// version the earlier one applied.
//
// A snapshot (versions folded beyond max_backlog) is applied only from the
// version it follows: its old values are the global ones there. Built from
// a cursor behind what the room applied (acks lost, or not yet arrived, at
// a resend or a restart), it is refused and answered with the version the
// room has, from which the user actor sends again; judged against the
// room's newer values, a propagate_to=unchanged fold would leave the room
// at an older name while acknowledging the last.
func (r *room) applyUpdates(ctx actor.Context, m *wire.ProfileUpdates) {
	if r.membership(m.UserId) != "join" {
		r.ackUpdates(m.UserId, lastVersion(m), true, 0)
		return
	}
	if _, err := r.readMember(m.UserId); err != nil { // into r.state, for memberContent
		r.h.log.Error("room cannot read a member event", "room", r.id, "err", err)
		return // not acknowledged: the user actor sends it again
	}
	rec := r.member(m.UserId)
	if m.Snapshot && m.After != nil && *m.After < rec.Version {
		if _, ok := r.applying[m.UserId]; !ok {
			r.ackUpdates(m.UserId, rec.Version, false, 0)
		} // else the write under way acknowledges what the room has
		return
	}
	before, own := rec.Version, len(rec.Own)
	var b storage.Batch
	b.Grow(2*len(m.Updates) + 1) // an event and its state index per version, maybe the member record
	written, events, ok := r.applyMember(&b, m.UserId, m.Updates)
	if !ok {
		return // not acknowledged: the user actor sends it again
	}
	if rec.Version == before { // nothing new: a duplicate
		if _, ok := r.applying[m.UserId]; !ok {
			r.ackUpdates(m.UserId, rec.Version, false, 0)
		} // else the write under way acknowledges it, or fails and it comes again
		return
	}
	if m.Snapshot && r.h.metrics != nil {
		r.h.metrics.Coalesced(int(m.Skipped))
	}
	user, version := m.UserId, rec.Version
	w, ok := r.applying[user]
	if !ok {
		w.from = before
	}
	if events == 0 || len(rec.Own) != own {
		// The version applied travels in the index entry of the last
		// event appended; with no event, or an own key dropped, the
		// member record holds it.
		b.Set(r.key("mr", user), mustJSON(rec))
	}
	if r.applying == nil {
		r.applying = map[string]underWay{}
	}
	w.to = version
	r.applying[user] = w
	r.commit(ctx, &b, nil, func() {
		if w, ok := r.applying[user]; ok && w.to == version {
			delete(r.applying, user)
		} else if ok {
			w.from = max(w.from, version)
			r.applying[user] = w
		}
		r.ackUpdates(user, version, false, written)
	})
}

// applyMember applies ups to user's member content in b: one member event
// per version that changes it. The member event must be in r.state
// (readMember). False: an event could not be appended, and the room
// aborted what b held.
func (r *room) applyMember(b *storage.Batch, user string, ups []*wire.MemberUpdate) (writtenMs int64, events int, ok bool) {
	contents, written := applyVersions(r.member(user), r.memberContent(user), ups, r.h.cfg.Profile.PreserveRoomOverrides)
	for _, content := range contents {
		sk := user
		ev := &evRecord{Type: "m.room.member", StateKey: &sk, Sender: user, Content: content, membership: joined}
		if err := r.append(b, ev); err != nil {
			r.h.log.Error("room cannot append", "room", r.id, "err", err)
			r.abort()
			return 0, 0, false
		}
	}
	return written, len(contents), true
}

// applyVersions applies, in order, the versions of ups newer than
// rec.Version to content (the member content now) and returns the member
// content of each event to append, encoded: one per version that changed
// something. rec advances to the last version seen.
func applyVersions(rec *memberRec, content map[string]any, ups []*wire.MemberUpdate, preserve bool) (events []json.RawMessage, writtenMs int64) {
	for _, u := range ups {
		if u.Version <= rec.Version {
			continue // a duplicate or a resend: already applied
		}
		if takeUpdate(rec, content, u, preserve) {
			events = append(events, mustJSON(content))
		}
		rec.Version, writtenMs = u.Version, u.WrittenMs
	}
	return events, writtenMs
}

// takeUpdate applies one version to content (changed in place) and reports
// whether it changed. The rule per key: all takes the value and drops the
// room's own value; default takes it unless the room holds a value of its
// own (and preserve is on); unchanged takes it only where the room's value
// equals the old global value (MSC4466).
func takeUpdate(rec *memberRec, content map[string]any, u *wire.MemberUpdate, preserve bool) bool {
	changed := false
	apply := func(key string, sets bool, value, old string) {
		if !sets {
			return
		}
		have, _ := content[key].(string)
		switch u.Mode {
		case wire.Propagate_PROPAGATE_NONE:
			return
		case wire.Propagate_PROPAGATE_UNCHANGED:
			if have != old {
				return
			}
		case wire.Propagate_PROPAGATE_DEFAULT:
			if rec.Own[key] && preserve {
				return
			}
		}
		delete(rec.Own, key)
		if have == value {
			return
		}
		if value == "" {
			delete(content, key)
		} else {
			content[key] = value
		}
		changed = true
	}
	apply("displayname", u.SetsDisplayname, u.Displayname, u.OldDisplayname)
	apply("avatar_url", u.SetsAvatarUrl, u.AvatarUrl, u.OldAvatarUrl)
	if changed {
		strip(content)
		content["membership"] = "join"
	}
	return changed
}

// memberContent is a copy of the user's current member content.
func (r *room) memberContent(user string) map[string]any {
	c := map[string]any{}
	if ev := r.state[stateKey{"m.room.member", user}]; ev != nil {
		_ = json.Unmarshal(ev.Content, &c)
	}
	return c
}

// ackUpdates acknowledges every version up to version to the user's actor.
func (r *room) ackUpdates(user string, version uint64, notMember bool, written int64) {
	a := &wire.UpdateAck{RoomId: r.id, UserId: user, Version: version, NotMember: notMember, WrittenMs: written}
	if notMember {
		a.Stream, _ = r.memberStream(user)
	}
	r.h.ack(a)
}

func lastVersion(m *wire.ProfileUpdates) uint64 {
	if len(m.Updates) == 0 {
		return 0
	}
	return m.Updates[len(m.Updates)-1].Version
}
