package actors

import "persona/wire"

// summary is what the public room directory shows of the room: public
// information, read from current state whoever asks. Joined says whether
// m.UserId is joined; MayChange whether
// m.UserId is joined with the power to send m.room.canonical_alias, which
// also lets a user change the room's aliases and directory visibility.
func (r *room) summary(m *wire.RoomSummary) *wire.RoomSummaryReply {
	str := func(typ, field string) string {
		v, _ := r.stateContent(typ, "")[field].(string)
		return v
	}
	out := &wire.RoomSummaryReply{
		Name:              str("m.room.name", "name"),
		Topic:             str("m.room.topic", "topic"),
		CanonicalAlias:    str("m.room.canonical_alias", "alias"),
		AvatarUrl:         str("m.room.avatar", "url"),
		JoinRule:          r.joinRule(),
		HistoryVisibility: r.historyVisibility(),
		GuestAccess:       str("m.room.guest_access", "guest_access"),
		RoomType:          str("m.room.create", "type"),
	}
	for k, ev := range r.state {
		if k.typ == "m.room.member" && membershipOf(ev) == "join" {
			out.NumJoinedMembers++
		}
	}
	if m.UserId != "" && r.membership(m.UserId) == "join" {
		out.Joined = true
		out.MayChange = r.powerLevel(m.UserId) >= r.required("", "m.room.canonical_alias", true)
	}
	return out
}
