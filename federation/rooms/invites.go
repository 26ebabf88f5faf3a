package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/internal/mxid"
	"persona/wire"
)

// Invites across servers (invite v2). Another server's invite of a local
// user is checked, signed by this server too, and kept by the room's actor
// here (the room then exists only as the invite until the user joins). A
// local user's invite of a remote user is built from the room's template,
// signed here, sent to the invitee's server for its signature, and handed
// to the room. The room sends a kick of such an invitee (the invite
// rescinded) to the invitee's server too, which takes it from the inviter
// alone (receiveInvited).

// inviteV2 is PUT /_matrix/federation/v2/invite/{roomId}/{eventId}.
func (s *Service) inviteV2(r *http.Request, origin spec.ServerName) (any, error) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "M_UNKNOWN", "Could not read the body.")
	}
	var req struct {
		RoomVersion string            `json:"room_version"`
		Event       json.RawMessage   `json:"event"`
		InviteState []json.RawMessage `json:"invite_room_state"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "Bad invite: %v", err)
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(req.RoomVersion))
	if err != nil {
		return nil, &incompatible{req.RoomVersion}
	}
	signed, err := s.checkInvite(r.Context(), origin, verImpl, r.PathValue("roomID"), r.PathValue("eventID"), req.Event)
	if err != nil {
		return nil, err
	}
	msg := &wire.InvitedRemote{RoomId: signed.RoomID().String(), RoomVersion: req.RoomVersion, Invite: signed.JSON()}
	for _, st := range req.InviteState {
		msg.InviteState = append(msg.InviteState, st)
	}
	reply, err := ask[*wire.ReceiveReply](r.Context(), s, actors.KindRoom, msg.RoomId, msg)
	if err != nil {
		return nil, err
	}
	if reply.Rejected != "" {
		return nil, errorf(http.StatusForbidden, "M_FORBIDDEN", "%s", reply.Rejected)
	}
	return map[string]any{"event": json.RawMessage(signed.JSON())}, nil
}

// checkInvite checks an invite of a local user that origin sent, and signs
// it with this server's key.
func (s *Service) checkInvite(ctx context.Context, origin spec.ServerName, verImpl gomatrixserverlib.IRoomVersion, room, eventID string, raw []byte) (gomatrixserverlib.PDU, error) {
	ev, err := s.verifySender(ctx, verImpl, raw)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "%v", err)
	}
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	switch {
	case ev.EventID() != eventID || ev.RoomID().String() != room:
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "The event is not %s of %s.", eventID, room)
	case ev.Type() != "m.room.member" || ev.StateKey() == nil || c.Membership != "invite":
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "Not an invite.")
	case mxid.ServerOf(string(ev.SenderID())) != string(origin):
		return nil, errorf(http.StatusForbidden, "M_FORBIDDEN", "The inviter is not of the server that sent the invite.")
	case mxid.ServerOf(*ev.StateKey()) != s.cfg.ServerName:
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "The invitee is not of this server.")
	}
	p, err := s.actors.Request(ctx, actors.KindUser, *ev.StateKey(), &wire.GetProfile{UserId: *ev.StateKey()})
	if pr, ok := p.(*wire.ProfileReply); err != nil || !ok || !pr.Exists {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "Unknown user %s.", *ev.StateKey())
	}
	id := s.fed.Identity()
	return ev.Sign(string(id.ServerName), id.KeyID, id.PrivateKey), nil
}

// receiveInvited hands a PDU of a room held here only as remote invites
// to the room, which takes it only as the inviter's rescinding of an
// invite (a leave of the invitee); held is false when the room is not held
// that way.
func (s *Service) receiveInvited(ctx context.Context, origin spec.ServerName, room string, raw []byte) (id string, held bool, err error) {
	info, err := ask[*wire.RoomVersionReply](ctx, s, actors.KindRoom, room, &wire.GetRoomVersion{RoomId: room})
	if err != nil || !info.InvitedOnly {
		return "", false, nil
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(info.RoomVersion))
	if err != nil {
		return "", false, nil
	}
	ev, err := s.verify(ctx, verImpl, raw)
	if err != nil {
		if ev, perr := parseUntrusted(verImpl, raw); perr == nil {
			return ev.EventID(), true, reject("signature", err)
		}
		return "", true, reject("malformed", err)
	}
	reply, err := ask[*wire.ReceiveReply](ctx, s, actors.KindRoom, room, &wire.ReceivePDU{RoomId: room, Origin: string(origin), Pdu: ev.JSON()})
	switch {
	case err != nil:
		return ev.EventID(), true, err
	case reply.Rejected != "":
		return ev.EventID(), true, reject("unknown_room", errors.New(reply.Rejected))
	}
	return ev.EventID(), true, nil
}

// Invite has a local user (sender) invite a user of another server; the
// invite's content carries reason and, for a direct chat, is_direct.
func (s *Service) Invite(ctx context.Context, room, sender, target, reason string, isDirect bool) error {
	tmpl, err := ask[*wire.MakeMembershipReply](ctx, s, actors.KindRoom, room, &wire.MakeMembership{RoomId: room, UserId: target, Membership: "invite", Sender: sender})
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(tmpl.RoomVersion))
	if err != nil {
		return err
	}
	var proto gomatrixserverlib.ProtoEvent
	if err := json.Unmarshal(tmpl.Event, &proto); err != nil {
		return err
	}
	content := map[string]any{"membership": "invite"}
	if reason != "" {
		content["reason"] = reason
	}
	if isDirect {
		content["is_direct"] = true
	}
	if proto.Content, err = json.Marshal(content); err != nil {
		return err
	}
	id := s.fed.Identity()
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), id.ServerName, id.KeyID, id.PrivateKey)
	if err != nil {
		return err
	}
	var state []gomatrixserverlib.InviteStrippedState
	for _, raw := range tmpl.InviteState {
		var st gomatrixserverlib.InviteStrippedState
		if json.Unmarshal(raw, &st) == nil {
			state = append(state, st)
		}
	}
	req, err := fclient.NewInviteV2Request(ev, state)
	if err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.fed.Client().SendInviteV2(sctx, id.ServerName, spec.ServerName(mxid.ServerOf(target)), req)
	if err != nil {
		return fmt.Errorf("the invitee's server: %w", err)
	}
	signed, err := s.verify(ctx, verImpl, resp.Event)
	if err != nil || signed.EventID() != ev.EventID() {
		return fmt.Errorf("the invitee's server answered a bad event: %v", err)
	}
	reply, err := ask[*wire.SendMembershipReply](ctx, s, actors.KindRoom, room, &wire.SendMembership{RoomId: room, Origin: string(id.ServerName), Pdu: signed.JSON(), Membership: "invite"})
	if err != nil {
		return err
	}
	if reply.Rejected != "" {
		return errorf(http.StatusForbidden, "M_FORBIDDEN", "%s", reply.Rejected)
	}
	return nil
}

// RejectInvite rejects another server's invite of a local user: a leave
// built from a template of one of the room's servers (make_leave), signed
// here and sent back (send_leave). The servers are tried in turn: the
// inviting server, the others the invites name (their stripped state's
// senders), then the room id's server.
func (s *Service) RejectInvite(ctx context.Context, room, user string) error {
	info, err := ask[*wire.RoomVersionReply](ctx, s, actors.KindRoom, room, &wire.GetRoomVersion{RoomId: room})
	if err != nil {
		return err
	}
	var errs []error
	for _, server := range ServersOf(room, info.Servers) {
		if server == s.cfg.ServerName {
			continue
		}
		sctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		err := s.leaveThrough(sctx, spec.ServerName(server), room, user)
		cancel()
		if err == nil {
			return nil
		}
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	return fmt.Errorf("no server took the rejection: %v", errs)
}

// leaveThrough runs make_leave and send_leave with server.
func (s *Service) leaveThrough(ctx context.Context, server spec.ServerName, room, user string) error {
	id := s.fed.Identity()
	tmpl, err := s.fed.Client().MakeLeave(ctx, id.ServerName, server, room, user)
	if err != nil {
		return err
	}
	verImpl, err := gomatrixserverlib.GetRoomVersion(tmpl.RoomVersion)
	if err != nil {
		return err
	}
	proto := tmpl.LeaveEvent
	proto.Type, proto.RoomID = "m.room.member", room
	ev, err := verImpl.NewEventBuilderFromProtoEvent(&proto).Build(time.Now(), id.ServerName, id.KeyID, id.PrivateKey)
	if err != nil {
		return err
	}
	return s.fed.Client().SendLeave(ctx, id.ServerName, server, ev)
}
