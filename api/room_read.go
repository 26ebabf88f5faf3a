package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"persona/actors"
	"persona/wire"
)

// readRoutes registers the timeline reads.
func (s *Server) readRoutes() {
	s.handle("GET", "/rooms/{roomId}/messages", s.authed(s.messages))
	s.handle("GET", "/rooms/{roomId}/event/{eventId}", s.authed(s.getEvent))
}

// maxMessages caps /messages' limit.
const maxMessages = 1000

// queryLimit parses a limit query parameter: def when absent, at least 1,
// capped at most.
func queryLimit(v string, def, most int) (uint32, error) {
	if v == "" {
		return uint32(def), nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		return 0, invalidParam("limit must be a positive integer.")
	}
	return uint32(min(n, most)), nil
}

// isJSONObject reports whether b is a JSON object.
func isJSONObject(b []byte) bool {
	var obj map[string]json.RawMessage
	return json.Unmarshal(b, &obj) == nil && obj != nil
}

// messages pages the room's timeline from a token, backwards or forwards.
func (s *Server) messages(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	q := r.URL.Query()
	msg := &wire.GetMessages{RoomId: room, UserId: string(sess.user), DeviceId: sess.device,
		From: q.Get("from"), To: q.Get("to"), Dir: q.Get("dir")}
	switch msg.Dir {
	case "":
		msg.Dir = "b"
	case "b", "f":
	default:
		return nil, invalidParam("dir must be b or f.")
	}
	if msg.Limit, err = queryLimit(q.Get("limit"), 10, maxMessages); err != nil {
		return nil, err
	}
	if f := q.Get("filter"); f != "" {
		if !isJSONObject([]byte(f)) {
			return nil, invalidParam("filter must be a JSON object.")
		}
		msg.FilterJson = []byte(f)
	}
	reply, err := askAs[*wire.MessagesReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	out := map[string]any{"chunk": rawEvents(reply.Chunk), "start": reply.Start}
	if reply.End != "" {
		out["end"] = reply.End
	}
	if len(reply.State) > 0 {
		out["state"] = rawEvents(reply.State)
	}
	return out, nil
}

// getEvent answers one event the user may see.
func (s *Server) getEvent(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	eventID := r.PathValue("eventId")
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		return nil, invalidParam("Invalid event ID.")
	}
	msg := &wire.GetEvent{RoomId: room, UserId: string(sess.user), EventId: eventID, DeviceId: sess.device}
	reply, err := askAs[*wire.EventReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	if len(reply.EventJson) == 0 {
		return nil, notFound("Event not found.")
	}
	return json.RawMessage(reply.EventJson), nil
}
