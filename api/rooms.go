package api

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"persona/actors"
	"persona/internal/mxid"
	"persona/wire"
)

// roomRoutes registers the rooms API, /sync and presence.
func (s *Server) roomRoutes() {
	s.handle("POST", "/createRoom", s.authed(s.createRoom))
	s.handle("POST", "/join/{roomIdOrAlias}", s.authed(s.joinByIDOrAlias))
	for _, action := range []string{"join", "leave", "invite", "kick", "ban", "unban", "forget"} {
		s.handle("POST", "/rooms/{roomId}/"+action, s.authed(s.membershipAction(action)))
	}
	s.handle("GET", "/joined_rooms", s.authed(s.joinedRooms))
	s.stateRoutes()
	s.readRoutes()
	s.handle("GET", "/sync", s.authed(s.sync))
	s.presenceRoutes()
}

// validRoomID checks the room ID grammar: !opaque:server.
// A room id is "!opaque:server", or from room version 12 "!" and the
// create event's hash (43 characters of unpadded URL-safe base64).
func validRoomID(room string) bool {
	if !strings.HasPrefix(room, "!") || len(room) > 255 {
		return false
	}
	opaque, server, ok := strings.Cut(room[1:], ":")
	if !ok {
		return len(opaque) == 43 && strings.Trim(opaque, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == ""
	}
	return opaque != "" && mxid.ValidServerName(server)
}

// roomParam is the {roomId} path value, checked.
func roomParam(r *http.Request) (string, error) {
	room := r.PathValue("roomId")
	if !validRoomID(room) {
		return "", invalidParam(fmt.Sprintf("Invalid room ID %q.", room))
	}
	return room, nil
}

// rawEvents turns events as actors send them into a JSON array (never null).
func rawEvents(evs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e
	}
	return out
}

// memberProfile is a user's global profile as member events carry it: a JSON
// object with displayname and avatar_url (those set as strings), and its
// version. exists is false for an unknown user.
func (s *Server) memberProfile(ctx context.Context, user string) (profile []byte, version uint64, exists bool, err error) {
	p, err := askAs[*wire.ProfileReply](ctx, s, actors.KindUser, user, &wire.GetProfile{UserId: user})
	if err != nil || !p.Exists {
		return nil, 0, false, err
	}
	var fields map[string]any
	_ = json.Unmarshal(p.FieldsJson, &fields)
	picked := map[string]string{}
	for _, k := range []string{"displayname", "avatar_url"} {
		if v, ok := fields[k].(string); ok {
			picked[k] = v
		}
	}
	b, _ := json.Marshal(picked)
	return b, p.Version, true, nil
}

// targetProfile is the profile of a local user about to be invited, who
// must exist.
func (s *Server) targetProfile(ctx context.Context, user string) ([]byte, uint64, error) {
	profile, version, exists, err := s.memberProfile(ctx, user)
	if err != nil {
		return nil, 0, err
	}
	if !exists {
		return nil, 0, notFound("Unknown user " + user + ".")
	}
	return profile, version, nil
}

// createRoom checks the body's known fields, then lets the new room's actor
// build the room from it.
func (s *Server) createRoom(r *http.Request, sess *session) (any, error) {
	body, err := s.readObject(r)
	var invitees map[string][]byte
	if err == nil {
		invitees, err = s.checkCreateRoom(r.Context(), body)
	}
	if err != nil {
		return nil, err
	}
	profile, version, _, err := s.memberProfile(r.Context(), string(sess.user))
	if err != nil {
		return nil, err
	}
	room := "!" + randomString(14)[:18] + ":" + s.cfg.ServerName
	var created int64
	if oneOf(body["room_version"], "12") { // the room id is the create event's hash
		created = time.Now().UnixMilli()
		raw, _ := json.Marshal(body)
		if room, err = actors.RoomIDForVersion12(s.cfg.ServerName, string(sess.user), raw, created); err != nil {
			return nil, badJSON("Bad creation_content: " + err.Error())
		}
	}
	alias, err := s.createAlias(r.Context(), body, room, string(sess.user))
	if err != nil {
		return nil, err
	}
	if err := s.checkInitialCanonicalAlias(r.Context(), body, room); err != nil {
		s.releaseAlias(r.Context(), alias, room, string(sess.user))
		return nil, err
	}
	remote := remoteInvitees(body, invitees)
	var isDirect bool // checked a boolean (checkCreateRoom)
	_ = json.Unmarshal(body["is_direct"], &isDirect)
	raw, _ := json.Marshal(body)
	msg := &wire.CreateRoom{RoomId: room, Creator: string(sess.user), RequestJson: raw,
		CreatorProfileJson: profile, CreatorProfileVersion: version, InviteeProfilesJson: invitees, CreatedMs: created}
	if _, err := askAs[*wire.SendReply](r.Context(), s, actors.KindRoom, room, msg); err != nil {
		s.releaseAlias(r.Context(), alias, room, string(sess.user))
		return nil, err
	}
	s.publishCreated(r.Context(), body, room)
	for _, u := range remote { // the room exists whatever another server answers
		if err := s.remote.Invite(r.Context(), room, string(sess.user), u, "", isDirect); err != nil {
			s.log.Warn("invite at room creation failed", "room", room, "invitee", u, "err", err)
		}
	}
	return map[string]string{"room_id": room}, nil
}

// remoteInvitees takes the users of other servers out of body's invite
// list (the room invites its own users as it is created) and returns them.
func remoteInvitees(body map[string]json.RawMessage, local map[string][]byte) []string {
	var invite, keep, remote []string
	if json.Unmarshal(body["invite"], &invite) != nil {
		return nil
	}
	for _, u := range invite {
		if _, ok := local[u]; ok {
			keep = append(keep, u)
		} else {
			remote = append(remote, u)
		}
	}
	if len(remote) > 0 {
		body["invite"], _ = json.Marshal(keep)
	}
	return remote
}

// jsonKind is the first byte of a valid JSON value, which names its type:
// '"' string, '{' object, '[' array, 't'/'f' bool, 'n' null, else a number.
func jsonKind(v json.RawMessage) byte {
	t := strings.TrimLeft(string(v), " \t\r\n")
	if t == "" {
		return 0
	}
	return t[0]
}

// checkCreateRoom checks the /createRoom fields the room relies on. A field
// of the wrong JSON type is M_BAD_JSON; a value outside an enumeration, or an
// invite that is not a list of user IDs, is M_INVALID_PARAM. Invitees must be
// local users that exist; their profiles, which their invite events carry,
// are returned.
func (s *Server) checkCreateRoom(ctx context.Context, body map[string]json.RawMessage) (map[string][]byte, error) {
	want := map[string]byte{"name": '"', "topic": '"', "power_level_content_override": '{', "creation_content": '{', "initial_state": '['}
	for k, kind := range want {
		if v, ok := body[k]; ok && jsonKind(v) != kind {
			return nil, badJSON("Field " + k + " has the wrong type.")
		}
	}
	if v, ok := body["is_direct"]; ok && jsonKind(v) != 't' && jsonKind(v) != 'f' {
		return nil, badJSON("Field is_direct must be a boolean.")
	}
	enums := map[string][]string{"preset": {"private_chat", "public_chat", "trusted_private_chat"}, "visibility": {"public", "private"}}
	for k, allowed := range enums {
		if v, ok := body[k]; ok && !oneOf(v, allowed...) {
			return nil, invalidParam("Field " + k + " must be one of " + strings.Join(allowed, ", ") + ".")
		}
	}
	if v, ok := body["room_version"]; ok {
		if jsonKind(v) != '"' {
			return nil, badJSON("room_version must be a string.")
		}
		if !oneOf(v, roomVersions...) {
			return nil, errorf(400, "M_UNSUPPORTED_ROOM_VERSION", "Unsupported room version.")
		}
	}
	if v, ok := body["initial_state"]; ok {
		if err := checkInitialState(v); err != nil {
			return nil, err
		}
	}
	profiles := map[string][]byte{}
	if v, ok := body["invite"]; ok {
		var invite []string
		if err := json.Unmarshal(v, &invite); err != nil || jsonKind(v) != '[' {
			return nil, invalidParam("Field invite must be a list of user IDs.")
		}
		for _, u := range invite {
			if _, _, err := parseUserID(u); err != nil {
				return nil, invalidParam(fmt.Sprintf("Invalid user ID %q in invite.", u))
			}
		}
		for _, u := range invite {
			if _, server, _ := parseUserID(u); server != s.cfg.ServerName {
				if s.remote == nil {
					return nil, forbidden("Cannot invite " + u + ": this server does not federate.")
				}
				continue // invited through its server once the room exists
			}
			profile, _, err := s.targetProfile(ctx, u)
			if err != nil {
				return nil, err
			}
			profiles[u] = profile
		}
	}
	return profiles, nil
}

// roomVersions are the room versions rooms may be created with: those
// whose event ids are reference hashes (from v3).
var roomVersions = []string{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}

// oneOf reports whether v is a JSON string equal to one of allowed.
func oneOf(v json.RawMessage, allowed ...string) bool {
	var str string
	if jsonKind(v) != '"' || json.Unmarshal(v, &str) != nil {
		return false
	}
	for _, a := range allowed {
		if str == a {
			return true
		}
	}
	return false
}

// checkInitialState checks that initial_state is a list of state events:
// objects with a non-empty string type, a string state_key and an object
// content when those are given.
func checkInitialState(v json.RawMessage) error {
	var evs []map[string]json.RawMessage
	if err := json.Unmarshal(v, &evs); err != nil {
		return badJSON("Field initial_state must be a list of events.")
	}
	for i, ev := range evs {
		bad := ev == nil || !isNonEmptyString(ev["type"])
		if k, ok := ev["state_key"]; ok && jsonKind(k) != '"' {
			bad = true
		}
		if c, ok := ev["content"]; ok && jsonKind(c) != '{' {
			bad = true
		}
		if bad {
			return badJSON(fmt.Sprintf("initial_state[%d] must be an event with a string type.", i))
		}
	}
	return nil
}

func isNonEmptyString(v json.RawMessage) bool {
	var str string
	return jsonKind(v) == '"' && json.Unmarshal(v, &str) == nil && str != ""
}

// joinByIDOrAlias is POST /join/{roomIdOrAlias}; an alias is resolved first.
func (s *Server) joinByIDOrAlias(r *http.Request, sess *session) (any, error) {
	target := r.PathValue("roomIdOrAlias")
	switch {
	case strings.HasPrefix(target, "#"):
		room, servers, err := s.resolveAliasServers(r.Context(), target)
		if err != nil {
			return nil, err
		}
		return s.changeMembership(r, sess, room, "join", servers...)
	case !validRoomID(target):
		return nil, invalidParam(fmt.Sprintf("Invalid room ID or alias %q.", target))
	default:
		return s.changeMembership(r, sess, target, "join")
	}
}

// membershipAction is the handler of POST /rooms/{roomId}/{action}.
func (s *Server) membershipAction(action string) authedHandler {
	return func(r *http.Request, sess *session) (any, error) {
		room, err := roomParam(r)
		if err != nil {
			return nil, err
		}
		return s.changeMembership(r, sess, room, action)
	}
}

type membershipBody struct {
	UserID *string `json:"user_id"`
	Reason *string `json:"reason"`
}

// changeMembership reads a membership body and sends the change to the
// room. Join and leave act on the sender and may have an empty body; the
// others name their target in user_id. Joins and invites carry the target's
// global profile, which becomes the member event's displayname and avatar.
// A join of a room this server does not hold goes through another server
// (Remote), the first that answers of servers, the request's server_name
// and the room id's server.
func (s *Server) changeMembership(r *http.Request, sess *session, room, action string, servers ...string) (any, error) {
	self := action == "join" || action == "leave" || action == "forget"
	raw, err := readBody(r, s.cfg.Limits.MaxRequestBytes)
	if err != nil {
		return nil, err
	}
	var body membershipBody
	if err := decodeBytes(raw, &body, self); err != nil {
		return nil, err
	}
	msg := &wire.ChangeMembership{RoomId: room, Sender: string(sess.user), Target: string(sess.user), Action: action}
	if action == "join" && len(bytes.TrimSpace(raw)) > 0 {
		msg.ContentJson = raw // custom member content (e.g. from /join's body)
	}
	if body.Reason != nil {
		msg.Reason = *body.Reason
	}
	if !self {
		if body.UserID == nil {
			return nil, missingParam("Missing user_id.")
		}
		if _, _, err := parseUserID(*body.UserID); err != nil {
			return nil, err
		}
		msg.Target = *body.UserID
	}
	if _, server, _ := parseUserID(msg.Target); action == "invite" && server != s.cfg.ServerName {
		if s.remote == nil {
			return nil, forbidden("Cannot invite " + msg.Target + ": this server does not federate.")
		}
		if err := s.remote.Invite(r.Context(), room, msg.Sender, msg.Target, msg.Reason, false); err != nil {
			return nil, remoteError(err)
		}
		return map[string]any{}, nil
	}
	switch action {
	case "join":
		msg.ProfileJson, msg.ProfileVersion, _, err = s.memberProfile(r.Context(), msg.Target)
	case "invite":
		msg.ProfileJson, msg.ProfileVersion, err = s.targetProfile(r.Context(), msg.Target)
	}
	if err == nil {
		_, err = askAs[*wire.SendReply](r.Context(), s, actors.KindRoom, room, msg)
		switch {
		case action == "join" && s.remote != nil && isKind(err, wire.Error_NOT_FOUND):
			err = s.joinRemote(r.Context(), msg, joinServers(r, room, servers))
		case action == "leave" && s.remote != nil && isKind(err, wire.Error_NOT_FOUND):
			// A rejection no server takes is recorded here all the same
			// (Synapse's out-of-band rejection): the invite leaves the
			// user's invites, as the spec has it.
			if rerr := s.remote.RejectInvite(r.Context(), room, msg.Sender); rerr != nil {
				s.log.Warn("invite rejected on this server only: no server of the room took the rejection", "room", room, "user", msg.Sender, "err", rerr)
			}
			msg.ToldRemote = true
			_, err = askAs[*wire.SendReply](r.Context(), s, actors.KindRoom, room, msg)
		}
	}
	if err == nil && action == "forget" {
		_, err = askAs[*wire.Done](r.Context(), s, actors.KindUser, string(sess.user), &wire.ForgetRoom{UserId: string(sess.user), RoomId: room})
	}
	switch {
	case err != nil:
		return nil, err
	case action == "join":
		return map[string]string{"room_id": room}, nil
	default:
		return map[string]any{}, nil
	}
}

// joinedRooms lists the rooms the user's actor has the user joined to.
func (s *Server) joinedRooms(r *http.Request, sess *session) (any, error) {
	user := string(sess.user)
	rooms, err := askAs[*wire.RoomsReply](r.Context(), s, actors.KindUser, user, &wire.GetRooms{UserId: user})
	if err != nil {
		return nil, err
	}
	joined := []string{}
	for _, m := range rooms.Rooms {
		if m.Membership == "join" {
			joined = append(joined, m.RoomId)
		}
	}
	return map[string][]string{"joined_rooms": joined}, nil
}
