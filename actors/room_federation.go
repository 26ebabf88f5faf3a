package actors

import (
	"encoding/json"
	"slices"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"

	"persona/internal/mxid"
	"persona/storage"
	"persona/wire"
)

// The room's side of the server-server handshakes: it is the resident
// server a remote user joins or leaves through (make_join, send_join,
// make_leave, send_leave), and it becomes a room here when a local user
// joins one that lives on another server (JoinedRemote).

// makeMembership answers the template of a remote user's join or leave.
func (r *room) makeMembership(m *wire.MakeMembership) *wire.MakeMembershipReply {
	if r.meta.InvitedOnly {
		return &wire.MakeMembershipReply{Error: notFound(wire.Error_ROOM, "This server is not in the room.")}
	}
	cur := r.membership(m.UserId)
	switch {
	case !r.serverAllowed(mxid.ServerOf(m.UserId)):
		return &wire.MakeMembershipReply{Error: forbidden("The room's server ACL denies your server.")}
	case m.Membership == "join" && cur == "ban":
		return &wire.MakeMembershipReply{Error: forbidden("You are banned from this room.")}
	case m.Membership == "join" && cur != "join" && cur != "invite" && r.joinRule() != "public":
		return &wire.MakeMembershipReply{Error: forbidden("You are not invited to this room.")}
	case m.Membership == "leave" && cur != "join" && cur != "invite" && cur != "knock":
		return &wire.MakeMembershipReply{Error: forbidden("You are not a member of this room.")}
	case m.Membership != "join" && m.Membership != "leave":
		return &wire.MakeMembershipReply{Error: badValue(wire.Error_MEMBERSHIP, "Unknown membership.")}
	}
	if _, err := r.readMember(m.UserId); err != nil {
		return &wire.MakeMembershipReply{Error: internal(err.Error())}
	}
	sk := m.UserId
	ev := &evRecord{Type: "m.room.member", StateKey: &sk, Sender: m.UserId, Content: mustJSON(map[string]string{"membership": m.Membership})}
	template := map[string]any{
		"type": ev.Type, "room_id": r.id, "sender": ev.Sender, "state_key": sk, "content": json.RawMessage(ev.Content),
		"prev_events": r.extremities(), "auth_events": r.authEvents(ev), "depth": max(r.tip.depth, r.meta.Depth) + 1,
	}
	return &wire.MakeMembershipReply{RoomVersion: r.meta.Version, Event: mustJSON(template)}
}

// sendMembership takes a remote user's signed join or leave and answers,
// once it is durable, the state before it and that state's auth chain.
func (r *room) sendMembership(ctx actor.Context, m *wire.SendMembership) {
	ev, reply := r.checkRemote(&wire.ReceivePDU{RoomId: r.id, Origin: m.Origin, Pdu: m.Pdu})
	refuse := func(why string) { ctx.Respond(&wire.SendMembershipReply{Rejected: why}) }
	switch {
	case ev == nil && reply.Error != nil:
		ctx.Respond(&wire.SendMembershipReply{Error: reply.Error})
		return
	case ev == nil && len(reply.Missing) > 0:
		refuse("unknown prev_events")
		return
	case ev == nil && reply.Rejected != "":
		refuse(reply.Rejected)
		return
	case ev == nil:
		if m.Membership != "join" { // held already
			ctx.Respond(&wire.SendMembershipReply{})
			return
		}
	case ev.Type() != "m.room.member" || ev.StateKey() == nil:
		refuse("not a member event")
		return
	case m.Membership != "invite" && *ev.StateKey() != string(ev.SenderID()):
		refuse("not a member event of its sender")
		return
	case mxid.ServerOf(string(ev.SenderID())) != m.Origin:
		refuse("the sender is not of the server that sent it")
		return
	}
	if ev != nil {
		var c struct {
			Membership string `json:"membership"`
		}
		if json.Unmarshal(ev.Content(), &c) != nil || c.Membership != m.Membership {
			refuse("the event's membership is not " + m.Membership)
			return
		}
	}
	var out *wire.SendMembershipReply
	if m.Membership == "join" && ev != nil {
		var err error
		if out, err = r.stateAndAuthChain(); err != nil {
			ctx.Respond(&wire.SendMembershipReply{Error: internal(err.Error())})
			return
		}
		out.ServersInRoom = append(r.servers(), r.h.cfg.ServerName)
	} else {
		out = &wire.SendMembershipReply{}
	}
	if ev == nil { // held already
		if m.Membership == "join" {
			if out, err := r.stateAndAuthChain(); err == nil {
				ctx.Respond(out)
				return
			}
		}
		ctx.Respond(&wire.SendMembershipReply{})
		return
	}
	var b storage.Batch
	if _, err := r.readMember(*ev.StateKey()); err != nil {
		ctx.Respond(&wire.SendMembershipReply{Error: internal(err.Error())})
		return
	}
	if err := r.appendRemote(&b, ev, m.Pdu, true); err != nil {
		ctx.Respond(&wire.SendMembershipReply{Error: internal(err.Error())})
		return
	}
	r.commit(ctx, &b, out, nil)
}

// stateAndAuthChain is the room's current state and its auth chain, as
// PDUs.
func (r *room) stateAndAuthChain() (*wire.SendMembershipReply, error) {
	out := &wire.SendMembershipReply{}
	inState := map[string]bool{}
	var queue []string
	for _, ev := range r.state {
		j, err := r.signedPDU(ev)
		if err != nil {
			return nil, err
		}
		out.State = append(out.State, j)
		inState[ev.ID] = true
		queue = append(queue, r.authRefs(ev)...)
	}
	seen := map[string]bool{}
	for len(queue) > 0 {
		id := queue[0]
		queue = queue[1:]
		if seen[id] {
			continue
		}
		seen[id] = true
		ev := r.eventByID(id)
		if ev == nil {
			continue // an auth event the room never had (it joined late): the peer asks /event_auth
		}
		j, err := r.signedPDU(ev)
		if err != nil {
			return nil, err
		}
		out.AuthChain = append(out.AuthChain, j)
		queue = append(queue, r.authRefs(ev)...)
	}
	return out, nil
}

// appendRemote appends a remote event checked by checkRemote, and sets
// the room's forward extremities. A relayed event (a join or leave the
// room took through send_join or send_leave) goes on to the other servers
// in the room, as the resident server's duty is.
func (r *room) appendRemote(b *storage.Batch, ev gomatrixserverlib.PDU, raw []byte, relay bool) error {
	extremities, depth := r.afterRemote(ev), max(r.tip.depth, r.meta.Depth)
	rec := recordOf(ev, raw)
	rec.Relay = relay
	if err := r.append(b, rec); err != nil {
		return err
	}
	r.arrived(rec)
	if forked := !slices.Equal(extremities, []string{rec.ID}); forked || len(r.meta.Extremities) > 0 {
		r.meta.Extremities, r.meta.Depth = nil, 0
		if forked {
			r.meta.Extremities, r.meta.Depth = extremities, max(depth, rec.Depth)
		}
		b.Set(r.key("meta"), mustJSON(r.meta))
	}
	return nil
}

// joinedRemote makes the room from what the resident server answered a
// local user's join: the auth chain and state events are stored as
// outliers (held for auth and state, outside the timeline), then the join
// event starts the timeline.
func (r *room) joinedRemote(ctx actor.Context, m *wire.JoinedRemote) {
	if r.exists && !r.meta.InvitedOnly {
		r.receive(ctx, &wire.ReceivePDU{RoomId: r.id, Pdu: m.Join}) // a rejoin: the room goes on
		return
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(m.RoomVersion))
	if err != nil {
		ctx.Respond(&wire.ReceiveReply{Rejected: err.Error()})
		return
	}
	parse := func(raw []byte) gomatrixserverlib.PDU {
		ev, err := verImpl.NewEventFromTrustedJSON(raw, false)
		if err != nil || ev.RoomID().String() != r.id {
			return nil
		}
		return ev
	}
	join := parse(m.Join)
	if join == nil {
		ctx.Respond(&wire.ReceiveReply{Rejected: "bad join event"})
		return
	}
	r.exists = true
	r.meta = roomMeta{Version: m.RoomVersion} // an invite held here is left in the history, outside the timeline
	var b storage.Batch
	seen := map[string]bool{}
	var outliers []gomatrixserverlib.PDU
	for _, raw := range append(slices.Clone(m.AuthChain), m.State...) {
		if ev := parse(raw); ev != nil && !seen[ev.EventID()] {
			seen[ev.EventID()] = true
			outliers = append(outliers, ev)
		}
	}
	slices.SortStableFunc(outliers, func(a, b gomatrixserverlib.PDU) int { return int(a.Depth() - b.Depth()) })
	inState := map[string]bool{}
	for _, raw := range m.State {
		if ev := parse(raw); ev != nil {
			inState[ev.EventID()] = true
		}
	}
	raws := map[string][]byte{}
	for _, raw := range append(slices.Clone(m.AuthChain), m.State...) {
		if ev := parse(raw); ev != nil {
			raws[ev.EventID()] = raw
		}
	}
	for _, ev := range outliers {
		rec := recordOf(ev, raws[ev.EventID()])
		rec.Outlier = true
		if !inState[ev.EventID()] { // in the auth chain, not in the state: kept out of it (its PDU keeps its state key)
			rec.StateKey = nil
		}
		if ev.Type() == "m.room.create" {
			var c struct {
				Creator string `json:"creator"`
			}
			_ = json.Unmarshal(ev.Content(), &c)
			r.meta.Creator = c.Creator
			if r.meta.Creator == "" {
				r.meta.Creator = string(ev.SenderID())
			}
		}
		if err := r.append(&b, rec); err != nil {
			r.exists = false
			r.abort()
			ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
			return
		}
	}
	r.meta.Extremities = nil
	rec := recordOf(join, m.Join)
	if err := r.append(&b, rec); err != nil {
		r.exists = false
		r.abort()
		ctx.Respond(&wire.ReceiveReply{Error: internal(err.Error())})
		return
	}
	b.Set(r.key("meta"), mustJSON(r.meta))
	user := r.member(m.UserId)
	user.Version = max(user.Version, m.ProfileVersion)
	r.putMember(&b, m.UserId)
	r.commitMembership(ctx, &b, &wire.ReceiveReply{}, []string{m.UserId})
}
