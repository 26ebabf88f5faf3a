package actors

import (
	"crypto/rand"
	"encoding/json"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"

	"persona/internal/mxid"
	"persona/storage"
	"persona/wire"
)

// Invites across servers. A local user's invite of a remote user needs the
// invitee's server's signature before the room may hold it: the room hands
// out the template (makeInvite), the federation layer builds and signs it,
// has the invitee's server sign it too (/invite), and gives it back
// (SendMembership "invite"). A remote server's invite of a local user makes
// a room here that holds only the invite and the stripped state that came
// with it (invitedRemote), enough for the user's /sync, until the user
// joins through the inviting server, rejects the invite, or the inviter
// rescinds it (rescinded).

// makeInvite answers the template of sender's invite of a remote user.
func (r *room) makeInvite(m *wire.MakeMembership) *wire.MakeMembershipReply {
	if r.meta.InvitedOnly {
		return &wire.MakeMembershipReply{Error: forbidden("You are not joined to this room.")}
	}
	cur := r.membership(m.UserId)
	switch {
	case r.membership(m.Sender) != "join":
		return &wire.MakeMembershipReply{Error: forbidden("You are not joined to this room.")}
	case r.powerLevel(m.Sender) < r.required("invite", "", false):
		return &wire.MakeMembershipReply{Error: forbidden("Your power level is too low to invite.")}
	case cur == "join":
		return &wire.MakeMembershipReply{Error: forbidden(m.UserId + " is already in the room.")}
	case cur == "ban":
		return &wire.MakeMembershipReply{Error: forbidden(m.UserId + " is banned from the room.")}
	}
	if _, err := r.readMember(m.UserId); err != nil {
		return &wire.MakeMembershipReply{Error: internal(err.Error())}
	}
	if _, err := r.readMember(m.Sender); err != nil {
		return &wire.MakeMembershipReply{Error: internal(err.Error())}
	}
	sk := m.UserId
	ev := &evRecord{Type: "m.room.member", StateKey: &sk, Sender: m.Sender, Content: mustJSON(map[string]string{"membership": "invite"})}
	template := map[string]any{
		"type": ev.Type, "room_id": r.id, "sender": ev.Sender, "state_key": sk, "content": json.RawMessage(ev.Content),
		"prev_events": r.extremities(), "auth_events": r.authEvents(ev), "depth": max(r.tip.depth, r.meta.Depth) + 1,
	}
	out := &wire.MakeMembershipReply{RoomVersion: r.meta.Version, Event: mustJSON(template)}
	for sk, ev := range r.state {
		switch sk.typ {
		case "m.room.create", "m.room.name", "m.room.topic", "m.room.avatar", "m.room.join_rules", "m.room.canonical_alias", "m.room.encryption":
		case "m.room.member":
			if sk.key != m.Sender {
				continue
			}
		default:
			continue
		}
		out.InviteState = append(out.InviteState, mustJSON(map[string]any{"type": ev.Type, "state_key": sk.key, "content": ev.Content, "sender": ev.Sender}))
	}
	return out
}

// invitedRemote keeps a remote server's invite of a local user (or, in a
// room this server is in, takes the invite as any remote event).
func (r *room) invitedRemote(ctx actor.Context, m *wire.InvitedRemote) {
	if r.exists && !r.meta.InvitedOnly {
		r.receive(ctx, &wire.ReceivePDU{RoomId: r.id, Pdu: m.Invite})
		return
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(m.RoomVersion))
	if err != nil {
		ctx.Respond(&wire.ReceiveReply{Rejected: err.Error()})
		return
	}
	ev, err := verImpl.NewEventFromTrustedJSON(m.Invite, false)
	if err != nil || ev.StateKey() == nil || !r.local(*ev.StateKey()) {
		ctx.Respond(&wire.ReceiveReply{Rejected: "not an invite of a local user"})
		return
	}
	if !r.exists {
		r.exists, r.meta = true, roomMeta{Version: m.RoomVersion, Creator: string(ev.SenderID()), InvitedOnly: true}
	}
	var b storage.Batch
	for _, raw := range m.InviteState {
		var st struct {
			Type     string          `json:"type"`
			StateKey *string         `json:"state_key"`
			Content  json.RawMessage `json:"content"`
			Sender   string          `json:"sender"`
		}
		if json.Unmarshal(raw, &st) != nil || st.StateKey == nil || st.Type == "" || (st.Type == "m.room.member" && *st.StateKey == *ev.StateKey()) {
			continue
		}
		rec := &evRecord{ID: "$stripped-" + randomID(20), Type: st.Type, StateKey: st.StateKey, Sender: st.Sender, Content: st.Content, Outlier: true, Stripped: true}
		if err := r.append(&b, rec); err != nil {
			r.abort()
			ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
			return
		}
	}
	user := *ev.StateKey()
	if _, err := r.readMember(user); err != nil {
		ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
		return
	}
	rec := recordOf(ev, m.Invite)
	rec.Outlier = true
	if err := r.append(&b, rec); err != nil {
		r.abort()
		ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
		return
	}
	b.Set(r.key("meta"), mustJSON(r.meta))
	r.commitMembership(ctx, &b, &wire.ReceiveReply{}, []string{user})
}

// rescinded takes, in a room held only as remote invites, the leave of an
// invited local user by the user who invited them, from that user's
// server: the inviter rescinds the invite, and its server sends the leave
// to the invitee's, which is not in the room. An invite the room holds
// already is a resend; any other event of the room is refused.
func (r *room) rescinded(ctx actor.Context, m *wire.ReceivePDU) {
	refuse := func(why string) { ctx.Respond(&wire.ReceiveReply{Rejected: why}) }
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(r.meta.Version))
	if err != nil {
		refuse("unsupported room version " + r.meta.Version)
		return
	}
	ev, err := verImpl.NewEventFromTrustedJSON(m.Pdu, false)
	if err != nil || ev.RoomID().String() != r.id {
		refuse("malformed event")
		return
	}
	if r.known(ev.EventID()) {
		ctx.Respond(&wire.ReceiveReply{}) // held already
		return
	}
	var invite *evRecord
	if ev.Type() == "m.room.member" && ev.StateKey() != nil && r.local(*ev.StateKey()) {
		if invite, err = r.readMember(*ev.StateKey()); err != nil {
			ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
			return
		}
	}
	membership, _ := ev.Membership()
	switch {
	case invite == nil || membershipOf(invite) != "invite" || membership != "leave":
		refuse("this server is not in the room")
		return
	case string(ev.SenderID()) != invite.Sender || mxid.ServerOf(invite.Sender) != m.Origin:
		refuse("only the user who invited may rescind an invite")
		return
	}
	rec := recordOf(ev, m.Pdu)
	rec.Outlier = true
	var b storage.Batch
	if err := r.append(&b, rec); err != nil {
		r.abort()
		ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
		return
	}
	r.commitMembership(ctx, &b, &wire.ReceiveReply{}, []string{*ev.StateKey()})
}

// inviteServers are the servers a room held only as remote invites is
// reached through: the first inviting server, the others that invited,
// then those of the senders of the stripped state that came with the
// invites (the room's creator's, say), each once.
func (r *room) inviteServers() []string {
	var invites, others, out []string
	for sk, ev := range r.state {
		if sk.typ == "m.room.member" && r.local(sk.key) && membershipOf(ev) == "invite" {
			invites = append(invites, ev.Sender)
		} else {
			others = append(others, ev.Sender)
		}
	}
	slices.Sort(invites)
	slices.Sort(others)
	for _, user := range slices.Concat([]string{r.meta.Creator}, invites, others) {
		if s := mxid.ServerOf(user); s != "" && s != r.h.cfg.ServerName && !slices.Contains(out, s) {
			out = append(out, s)
		}
	}
	return out
}

// invitedOnlyMembership answers a local membership change in a room held
// only as a remote invite: a join or a leave goes through the room's
// servers (the room answers "not found", and the api goes through Remote),
// and once they were asked, the leave is recorded here, whether one took
// the rejection or none could: the invite leaves the user's invites.
func (r *room) invitedOnlyMembership(ctx actor.Context, m *wire.ChangeMembership) {
	switch {
	case m.Action == "join" || (m.Action == "leave" && !m.ToldRemote):
		ctx.Respond(&wire.SendReply{Error: notFound(wire.Error_ROOM, "The room is on another server: go through it.")})
		return
	case m.Action != "leave" || m.Target != m.Sender || r.membership(m.Sender) != "invite":
		ctx.Respond(&wire.SendReply{Error: forbidden("You are not joined to this room.")})
		return
	}
	sk := m.Sender
	rec := &evRecord{ID: "$stripped-" + randomID(20), Type: "m.room.member", StateKey: &sk, Sender: m.Sender,
		Content: mustJSON(map[string]string{"membership": "leave"}), Outlier: true, Stripped: true}
	var b storage.Batch
	if err := r.append(&b, rec); err != nil {
		r.abort()
		ctx.Respond(&wire.SendReply{Error: internal(err.Error())})
		return
	}
	r.commitMembership(ctx, &b, &wire.SendReply{EventId: rec.ID}, []string{m.Sender})
}

// randomID is n random characters from [A-Za-z0-9].
func randomID(n int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
