package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"persona/actors"
)

func (s *Server) contextRoutes() {
	s.handleFunc("GET", "/rooms/{roomId}/context/{eventId}", s.authedFunc(s.eventContext))
}

// eventContext answers /context: an event and the events around it.
func (s *Server) eventContext(w http.ResponseWriter, r *http.Request, sess *session) {
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
	limit := uint64(10)
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.ParseUint(v, 10, 32); err != nil {
			writeError(w, errorf(400, "M_INVALID_PARAM", "limit must be a non-negative integer."))
			return
		}
		limit = min(limit, 1000)
	}
	msg := &actors.GetContext{RoomId: room, UserId: string(sess.user), DeviceId: sess.device, EventId: eventID, Limit: uint32(limit)}
	if f := r.URL.Query().Get("filter"); f != "" {
		if !json.Valid([]byte(f)) || !strings.HasPrefix(strings.TrimSpace(f), "{") {
			writeError(w, errorf(400, "M_INVALID_PARAM", "filter must be a JSON object."))
			return
		}
		msg.FilterJson = []byte(f)
	}
	reply, err := askAs[*actors.ContextReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		writeError(w, err)
		return
	}
	if limit == 0 {
		// The spec allows limit 0: the event alone.
		reply.EventsBefore, reply.EventsAfter = nil, nil
	}
	writeJSON(w, 200, map[string]any{
		"event": json.RawMessage(reply.Event), "events_before": rawArray(reply.EventsBefore),
		"events_after": rawArray(reply.EventsAfter), "start": reply.Start, "end": reply.End,
		"state": rawArray(reply.State),
	})
}

// rawArray is a JSON array of raw events ([] when none).
func rawArray(evs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e
	}
	return out
}
