package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"persona/actors"
	"persona/wire"
)

// stateRoutes registers the room state, send and member routes. A state key
// is optional: /state/{type} and /state/{type}/ both mean the empty key, and
// {stateKey...} keeps a key that holds slashes.
func (s *Server) stateRoutes() {
	s.handle("GET", "/rooms/{roomId}/state", s.authed(s.getAllState))
	s.handle("GET", "/rooms/{roomId}/state/{eventType}", s.authed(s.getStateEvent))
	s.handle("GET", "/rooms/{roomId}/state/{eventType}/{stateKey...}", s.authed(s.getStateEvent))
	s.handle("PUT", "/rooms/{roomId}/state/{eventType}", s.authed(s.putStateEvent))
	s.handle("PUT", "/rooms/{roomId}/state/{eventType}/{stateKey...}", s.authed(s.putStateEvent))
	s.handle("PUT", "/rooms/{roomId}/send/{eventType}/{txnId}", s.authed(s.sendEvent))
	s.handle("PUT", "/rooms/{roomId}/redact/{eventId}/{txnId}", s.authed(s.redactEvent))
	s.handle("GET", "/rooms/{roomId}/members", s.authed(s.members))
	s.handle("GET", "/rooms/{roomId}/joined_members", s.authed(s.joinedMembers))
}

// eventTarget is a request's room, event type and state key, checked.
func eventTarget(r *http.Request) (room, typ, stateKey string, err error) {
	if room, err = roomParam(r); err != nil {
		return "", "", "", err
	}
	typ, stateKey = r.PathValue("eventType"), r.PathValue("stateKey")
	if typ == "" || len(typ) > 255 {
		return "", "", "", invalidParam("Invalid event type.")
	}
	if len(stateKey) > 255 {
		return "", "", "", invalidParam("State key too long.")
	}
	return room, typ, stateKey, nil
}

func (s *Server) getAllState(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	msg := &wire.GetState{RoomId: room, UserId: string(sess.user), All: true}
	reply, err := askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	return rawEvents(reply.EventsJson), nil
}

// getStateEvent answers one state event's content, or with ?format=event the
// whole event.
func (s *Server) getStateEvent(r *http.Request, sess *session) (any, error) {
	room, typ, key, err := eventTarget(r)
	if err != nil {
		return nil, err
	}
	msg := &wire.GetState{RoomId: room, UserId: string(sess.user), Type: typ, StateKey: key}
	reply, err := askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	if len(reply.EventsJson) == 0 {
		return nil, notFound("Event not found.")
	}
	ev := reply.EventsJson[0]
	if r.URL.Query().Get("format") == "event" {
		return json.RawMessage(ev), nil
	}
	var e struct {
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(ev, &e); err != nil || jsonKind(e.Content) != '{' {
		e.Content = json.RawMessage("{}")
	}
	return e.Content, nil
}

// putStateEvent sends a state event. A member event a user sends about
// themselves carries their global profile, so the room can tell a per-room
// name or avatar from the global one.
func (s *Server) putStateEvent(r *http.Request, sess *session) (any, error) {
	room, typ, key, err := eventTarget(r)
	if err != nil {
		return nil, err
	}
	content, err := s.readContent(r)
	if err != nil {
		return nil, err
	}
	if typ == "m.room.canonical_alias" {
		if err := s.checkNewCanonicalAlias(r.Context(), room, string(sess.user), key, content); err != nil {
			return nil, err
		}
	}
	msg := &wire.SendEvent{RoomId: room, Sender: string(sess.user), DeviceId: sess.device, Type: typ,
		IsState: true, StateKey: key, ContentJson: content}
	if typ == "m.room.member" && key == string(sess.user) {
		if msg.GlobalProfileJson, msg.ProfileVersion, _, err = s.memberProfile(r.Context(), key); err != nil {
			return nil, err
		}
	}
	return s.send(r, msg)
}

// sendEvent sends a message event; the room answers a repeated transaction
// (same sender, device and txn id) with the first event's id.
func (s *Server) sendEvent(r *http.Request, sess *session) (any, error) {
	room, typ, _, err := eventTarget(r)
	if err != nil {
		return nil, err
	}
	txn := r.PathValue("txnId")
	if len(txn) > 255 {
		return nil, invalidParam("Transaction ID too long.")
	}
	content, err := s.readContent(r)
	if err != nil {
		return nil, err
	}
	return s.send(r, &wire.SendEvent{RoomId: room, Sender: string(sess.user), DeviceId: sess.device,
		TxnId: txn, Type: typ, ContentJson: content})
}

// redactEvent redacts an event: the room sends an m.room.redaction with
// the body's reason (an empty body is {}). A repeated transaction of the
// same device gets the first redaction's id.
func (s *Server) redactEvent(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	eventID, txn := r.PathValue("eventId"), r.PathValue("txnId")
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		return nil, invalidParam("Invalid event ID.")
	}
	if len(txn) > 255 {
		return nil, invalidParam("Transaction ID too long.")
	}
	var body map[string]json.RawMessage
	if err := s.decode(r, &body, true); err != nil {
		return nil, err
	}
	if reason, ok := body["reason"]; ok && jsonKind(reason) != '"' {
		return nil, badJSON("reason must be a string.")
	}
	delete(body, "redacts") // the room puts it where the room version wants it
	content, err := json.Marshal(body)
	if err != nil || len(content)+eventOverhead > maxEventBytes {
		return nil, errorf(413, "M_TOO_LARGE", "The event would exceed 65536 bytes.")
	}
	reply, err := askAs[*wire.SendReply](r.Context(), s, actors.KindRoom, room, &wire.RedactEvent{RoomId: room,
		Sender: string(sess.user), DeviceId: sess.device, TxnId: txn, EventId: eventID, ContentJson: content})
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": reply.EventId}, nil
}

// readContent reads an event content body: a JSON object.
func (s *Server) readContent(r *http.Request) ([]byte, error) {
	obj, err := s.readObject(r)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(obj)
	if err != nil {
		return nil, errNotJSON
	}
	if len(b)+eventOverhead > maxEventBytes {
		return nil, errorf(413, "M_TOO_LARGE", "The event would exceed 65536 bytes.")
	}
	return b, nil
}

// An event may not exceed 64 KiB (spec, "Size limits"); eventOverhead is
// what the fields around the content take at most.
const (
	maxEventBytes = 65536
	eventOverhead = 1024
)

// send hands an event to its room and answers its id.
func (s *Server) send(r *http.Request, msg *wire.SendEvent) (any, error) {
	reply, err := askAs[*wire.SendReply](r.Context(), s, actors.KindRoom, msg.RoomId, msg)
	if err != nil {
		return nil, err
	}
	return map[string]string{"event_id": reply.EventId}, nil
}

// memberships are the values ?membership and ?not_membership may take.
var memberships = map[string]bool{"": true, "join": true, "invite": true, "leave": true, "ban": true, "knock": true}

// members answers the room's member events, filtered by ?membership,
// ?not_membership and ?at.
func (s *Server) members(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	msg := &wire.GetState{RoomId: room, UserId: string(sess.user), Members: true,
		Membership: q.Get("membership"), NotMembership: q.Get("not_membership"), At: q.Get("at")}
	if !memberships[msg.Membership] || !memberships[msg.NotMembership] {
		return nil, invalidParam("Unknown membership.")
	}
	reply, err := askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	return map[string]any{"chunk": rawEvents(reply.EventsJson)}, nil
}

// joinedMember is one entry of /joined_members.
// joinedMember is one entry of /joined_members; unset fields are null.
type joinedMember struct {
	DisplayName *string `json:"display_name"`
	AvatarURL   *string `json:"avatar_url"`
}

// joinedMembers answers the joined members with the name and avatar their
// member events carry.
func (s *Server) joinedMembers(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	msg := &wire.GetState{RoomId: room, UserId: string(sess.user), Members: true, Membership: "join"}
	reply, err := askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	joined := map[string]joinedMember{}
	for _, raw := range reply.EventsJson {
		var ev struct {
			StateKey string         `json:"state_key"`
			Content  map[string]any `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.StateKey == "" {
			continue
		}
		var m joinedMember
		if v, ok := ev.Content["displayname"].(string); ok {
			m.DisplayName = &v
		}
		if v, ok := ev.Content["avatar_url"].(string); ok {
			m.AvatarURL = &v
		}
		joined[ev.StateKey] = m
	}
	if _, ok := joined[string(sess.user)]; !ok {
		// Only members may list who is joined now.
		return nil, forbidden("You are not joined to this room.")
	}
	return map[string]any{"joined": joined}, nil
}
