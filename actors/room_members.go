package actors

import (
	"encoding/json"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"maunium.net/go/mautrix/id"

	"persona/storage"
	"persona/wire"
)

// changeMembership is join, leave, invite, kick, ban or unban, with the
// checks of the room's join rules and power levels. extra is content a
// client set on its own member event (merged into the new event).
func (r *room) changeMembership(ctx actor.Context, m *wire.ChangeMembership) {
	var extra map[string]any
	if len(m.ContentJson) > 0 {
		_ = json.Unmarshal(m.ContentJson, &extra)
		delete(extra, "reason")
	}
	r.membershipEvent(ctx, m, extra)
}

func (r *room) membershipEvent(ctx actor.Context, m *wire.ChangeMembership, extra map[string]any) {
	if r.meta.InvitedOnly {
		r.invitedOnlyMembership(ctx, m)
		return
	}
	cur, target, sender := r.membership(m.Target), m.Target, m.Sender
	senderIn := r.membership(sender) == "join"
	content := map[string]any{}
	var e *wire.Error
	switch m.Action {
	case "forget":
		r.forget(ctx, m)
		return
	case "join":
		switch {
		case target != sender:
			e = forbidden("You can only join for yourself.")
		case cur == "ban":
			e = forbidden("You are banned from this room.")
		case cur == "join" && len(extra) == 0:
			ctx.Respond(&wire.SendReply{EventId: r.state[stateKey{"m.room.member", target}].ID})
			return
		case cur != "join" && cur != "invite" && r.joinRule() != "public":
			e = forbidden("You are not invited to this room.")
		}
		content = profileContent(m.ProfileJson)
		content["membership"] = "join"
	case "leave":
		if cur != "join" && cur != "invite" && cur != "knock" {
			e = forbidden("You are not a member of this room.")
		}
		content["membership"] = "leave"
	case "invite":
		switch {
		case !senderIn:
			e = forbidden("You are not joined to this room.")
		case r.powerLevel(sender) < r.required("invite", "", false):
			e = forbidden("Your power level is too low to invite.")
		case cur == "join":
			e = forbidden(target + " is already in the room.")
		case cur == "ban":
			e = forbidden(target + " is banned from the room.")
		}
		content = profileContent(m.ProfileJson)
		content["membership"] = "invite"
	case "kick":
		switch {
		case !senderIn:
			e = forbidden("You are not joined to this room.")
		case cur != "join" && cur != "invite" && cur != "knock":
			e = forbidden(target + " is not a member of this room.")
		case r.powerLevel(sender) < r.required("kick", "", false) || r.powerLevel(sender) <= r.powerLevel(target):
			e = forbidden("Your power level is too low to kick this user.")
		}
		content["membership"] = "leave"
	case "ban":
		switch {
		case !senderIn:
			e = forbidden("You are not joined to this room.")
		case r.powerLevel(sender) < r.required("ban", "", false) || r.powerLevel(sender) <= r.powerLevel(target):
			e = forbidden("Your power level is too low to ban this user.")
		}
		content["membership"] = "ban"
	case "unban":
		switch {
		case !senderIn:
			e = forbidden("You are not joined to this room.")
		case cur != "ban":
			e = forbidden(target + " is not banned.")
		case r.powerLevel(sender) < r.required("ban", "", false):
			e = forbidden("Your power level is too low to unban.")
		}
		content["membership"] = "leave"
	default:
		e = badValue(wire.Error_MEMBERSHIP, "Unknown membership action.")
	}
	if e != nil {
		ctx.Respond(&wire.SendReply{Error: e})
		return
	}
	for k, v := range extra {
		if k != "membership" {
			content[k] = v
		}
	}
	if m.Reason != "" {
		content["reason"] = m.Reason
	}
	var b storage.Batch
	sk := target
	ev := &evRecord{Type: "m.room.member", StateKey: &sk, Sender: sender, Content: mustJSON(content)}
	if err := r.append(&b, ev); err != nil {
		ctx.Respond(&wire.SendReply{Error: appendError(err)})
		return
	}
	rec := r.member(target)
	if m.Action == "join" {
		rec.Version = max(rec.Version, m.ProfileVersion)
		rec.Own, rec.Forgotten = nil, false
		r.markOwn(rec, content, m.ProfileJson) // a join's own displayname, say
	}
	r.putMember(&b, target)
	r.commitMembership(ctx, &b, &wire.SendReply{EventId: ev.ID}, []string{target})
}

func (r *room) joinRule() string {
	c := r.stateContent("m.room.join_rules", "")
	rule, _ := c["join_rule"].(string)
	return rule
}

// memberEvent is a client's PUT of an m.room.member state event. A joined
// user's own join event with new displayname or avatar_url sets this room's
// profile: the room remembers, key by key, which values differ from the
// user's global profile, and later global writes leave those alone.
func (r *room) memberEvent(ctx actor.Context, m *wire.SendEvent) {
	var content map[string]any
	if json.Unmarshal(m.ContentJson, &content) != nil || content == nil {
		ctx.Respond(&wire.SendReply{Error: malformed(wire.Error_MEMBERSHIP, "Member content must be an object.")})
		return
	}
	membership, _ := content["membership"].(string)
	cm := &wire.ChangeMembership{RoomId: r.id, Sender: m.Sender, Target: m.StateKey, ProfileJson: m.GlobalProfileJson, ProfileVersion: m.ProfileVersion}
	cm.Reason, _ = content["reason"].(string)
	switch membership {
	case "join":
		cm.Action = "join"
		if m.StateKey == m.Sender && r.membership(m.Sender) == "join" {
			r.ownProfile(ctx, m, content)
			return
		}
		r.membershipEvent(ctx, cm, content)
		return
	case "leave":
		cm.Action = "leave"
		if m.StateKey != m.Sender {
			cm.Action = "kick"
			if r.membership(m.StateKey) == "ban" {
				cm.Action = "unban"
			}
		}
	case "invite", "ban":
		cm.Action = membership
	default:
		ctx.Respond(&wire.SendReply{Error: malformed(wire.Error_MEMBERSHIP, "Unknown membership.")})
		return
	}
	r.membershipEvent(ctx, cm, content)
}

// markOwn records, per key, whether the member content holds a value of the
// user's own rather than the global profile's (nil: not known, no change).
func (r *room) markOwn(rec *memberRec, content map[string]any, globalJSON []byte) {
	if globalJSON == nil || !r.h.cfg.Profile.PreserveRoomOverrides {
		return
	}
	global := profileContent(globalJSON)
	for _, k := range []string{"displayname", "avatar_url"} {
		mine, _ := content[k].(string)
		theirs, _ := global[k].(string)
		switch {
		case mine == theirs:
			delete(rec.Own, k)
		case rec.Own == nil:
			rec.Own = map[string]bool{k: true}
		default:
			rec.Own[k] = true
		}
	}
	if len(rec.Own) == 0 {
		rec.Own = nil
	}
}

// ownProfile records a joined user's per-room profile.
func (r *room) ownProfile(ctx actor.Context, m *wire.SendEvent, content map[string]any) {
	strip(content)
	content["membership"] = "join"
	rec := r.member(m.Sender)
	r.markOwn(rec, content, m.GlobalProfileJson)
	var b storage.Batch
	sk := m.Sender
	ev := &evRecord{Type: "m.room.member", StateKey: &sk, Sender: m.Sender, Content: mustJSON(content), Txn: m.TxnId, Device: m.DeviceId}
	if err := r.append(&b, ev); err != nil {
		ctx.Respond(&wire.SendReply{Error: appendError(err)})
		return
	}
	r.putMember(&b, m.Sender)
	r.commit(ctx, &b, &wire.SendReply{EventId: ev.ID}, nil)
}

// commitMembership commits a membership change and then tells the actors of
// the local users concerned; until they acknowledge, the room keeps a wake
// mark so that a restart tells them again.
func (r *room) commitMembership(ctx actor.Context, b *storage.Batch, reply proto.Message, users []string) {
	b.Set(r.wakeKey(), nil)
	r.commit(ctx, b, reply, func() {
		for _, u := range users {
			r.notifyMember(u, 0)
		}
	})
}

func (r *room) wakeKey() []byte {
	return storage.Key("p", partitionName(r.h.Partition(r.id)), "wake", KindRoom, r.id)
}

func (r *room) local(user string) bool {
	return id.UserID(user).Homeserver() == r.h.cfg.ServerName
}

// notifyMember sends a local user's actor its membership here, if its
// latest member event is past after (the stream position acknowledged).
func (r *room) notifyMember(user string, after uint64) (sent bool) {
	stream, ok := r.memberStream(user)
	if !ok || stream <= after || !r.local(user) {
		return false
	}
	r.h.stream.memberNotified(user, r.id, stream)
	r.h.Send(KindUser, user, &wire.MembershipChanged{
		UserId: user, RoomId: r.id, Membership: r.membership(user), Stream: stream, ProfileVersion: r.member(user).Version,
	})
	r.armRenotify()
	return true
}

// armRenotify makes sure the room looks again, resend_after from now,
// for notices not acknowledged: a notice or its ack may be lost on the
// way. The look comes as a Wake through the room's partition, so it finds
// the room even if it passivated meanwhile (its wake mark stays until
// every notice is acknowledged).
func (r *room) armRenotify() {
	if r.renotify != nil {
		return
	}
	h, id := r.h, r.id
	r.renotify = time.AfterFunc(h.cfg.Propagation.ResendAfter, func() { h.Send(KindRoom, id, &wire.Wake{Id: id}) })
}

// renotifyMembers tells every local member whose actor has not
// acknowledged its latest membership: after a restart, and resend_after
// after a notice (armRenotify), until each is acknowledged.
func (r *room) renotifyMembers() {
	r.renotify = nil
	n := 0
	for user, rec := range r.members {
		if r.notifyMember(user, rec.Notified) {
			n++
		}
	}
	if n > 0 && r.h.metrics != nil {
		r.h.metrics.NoticesResent(n)
	}
}

func (r *room) membershipAcked(ctx actor.Context, m *wire.MembershipAck) {
	rec := r.members[m.UserId]
	if rec == nil || m.Stream <= rec.Notified {
		return
	}
	var b storage.Batch
	rec.Notified = m.Stream
	r.putMember(&b, m.UserId)
	if !r.noticesPending() {
		r.settle(&b)
		if r.renotify != nil && r.renotify.Stop() { // every notice acknowledged: no Wake needed
			r.renotify = nil
		}
	}
	r.commit(ctx, &b, nil, nil)
}

// noticesPending reports whether a local user's actor has not acknowledged
// its latest membership here.
func (r *room) noticesPending() bool {
	for user, rec := range r.members {
		if stream, ok := r.memberStream(user); ok && r.local(user) && stream > rec.Notified {
			return true
		}
	}
	return false
}

// settle removes the room's wake mark in b when nothing is owed: no notice
// to a local user's actor, no event to another server.
func (r *room) settle(b *storage.Batch) {
	if !r.noticesPending() && !r.outboundPending() {
		b.Delete(r.wakeKey())
	}
}

// forget marks the room forgotten for a user who is not in it: the user can
// no longer read it, until joining again.
func (r *room) forget(ctx actor.Context, m *wire.ChangeMembership) {
	if cur := r.membership(m.Sender); cur == "join" || cur == "invite" {
		ctx.Respond(&wire.SendReply{Error: conflict(wire.Error_MEMBERSHIP, "You are still in the room: leave it first.")})
		return
	}
	rec := r.member(m.Sender)
	rec.Forgotten = true
	var b storage.Batch
	r.putMember(&b, m.Sender)
	r.commit(ctx, &b, &wire.SendReply{}, nil)
}
