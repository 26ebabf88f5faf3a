package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"persona/actors"
)

// readRoutes registers the timeline reads.
func (s *Server) readRoutes() {
	s.handleFunc("GET", "/rooms/{roomId}/messages", s.authedFunc(s.messages))
	s.handleFunc("GET", "/rooms/{roomId}/event/{eventId}", s.authedFunc(s.getEvent))
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
		return 0, errorf(400, "M_INVALID_PARAM", "limit must be a positive integer.")
	}
	return uint32(min(n, most)), nil
}

// isJSONObject reports whether b is a JSON object.
func isJSONObject(b []byte) bool {
	var obj map[string]json.RawMessage
	return json.Unmarshal(b, &obj) == nil && obj != nil
}

// messages pages the room's timeline from a token, backwards or forwards.
func (s *Server) messages(w http.ResponseWriter, r *http.Request, sess *session) {
	room, err := roomParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	q := r.URL.Query()
	msg := &actors.GetMessages{RoomId: room, UserId: string(sess.user), DeviceId: sess.device,
		From: q.Get("from"), To: q.Get("to"), Dir: q.Get("dir")}
	switch msg.Dir {
	case "":
		msg.Dir = "b"
	case "b", "f":
	default:
		writeError(w, errorf(400, "M_INVALID_PARAM", "dir must be b or f."))
		return
	}
	if msg.Limit, err = queryLimit(q.Get("limit"), 10, maxMessages); err != nil {
		writeError(w, err)
		return
	}
	if f := q.Get("filter"); f != "" {
		if !isJSONObject([]byte(f)) {
			writeError(w, errorf(400, "M_INVALID_PARAM", "filter must be a JSON object."))
			return
		}
		msg.FilterJson = []byte(f)
	}
	reply, err := askAs[*actors.MessagesReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		writeError(w, err)
		return
	}
	out := map[string]any{"chunk": rawEvents(reply.Chunk), "start": reply.Start}
	if reply.End != "" {
		out["end"] = reply.End
	}
	if len(reply.State) > 0 {
		out["state"] = rawEvents(reply.State)
	}
	writeJSON(w, 200, out)
}

// getEvent answers one event the user may see.
func (s *Server) getEvent(w http.ResponseWriter, r *http.Request, sess *session) {
	room, err := roomParam(r)
	if err != nil {
		writeError(w, err)
		return
	}
	eventID := r.PathValue("eventId")
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		writeError(w, errorf(400, "M_INVALID_PARAM", "Invalid event ID."))
		return
	}
	msg := &actors.GetEvent{RoomId: room, UserId: string(sess.user), EventId: eventID, DeviceId: sess.device}
	reply, err := askAs[*actors.EventReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		writeError(w, err)
		return
	}
	if len(reply.EventJson) == 0 {
		writeError(w, errorf(404, "M_NOT_FOUND", "Event not found."))
		return
	}
	writeJSON(w, 200, json.RawMessage(reply.EventJson))
}
