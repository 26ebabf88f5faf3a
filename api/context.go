package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"

	"persona/actors"
	"persona/wire"
)

func (s *Server) contextRoutes() {
	s.handle("GET", "/rooms/{roomId}/context/{eventId}", s.authed(s.eventContext))
}

// eventContext answers /context: an event and the events around it.
func (s *Server) eventContext(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err != nil {
		return nil, err
	}
	eventID := r.PathValue("eventId")
	if !strings.HasPrefix(eventID, "$") || len(eventID) > 255 {
		return nil, invalidParam("Invalid event ID.")
	}
	limit := uint64(10)
	if v := r.URL.Query().Get("limit"); v != "" {
		if limit, err = strconv.ParseUint(v, 10, 32); err != nil {
			return nil, invalidParam("limit must be a non-negative integer.")
		}
		limit = min(limit, 1000)
	}
	msg := &wire.GetContext{RoomId: room, UserId: string(sess.user), DeviceId: sess.device, EventId: eventID, Limit: uint32(limit)}
	if f := r.URL.Query().Get("filter"); f != "" {
		if !json.Valid([]byte(f)) || !strings.HasPrefix(strings.TrimSpace(f), "{") {
			return nil, invalidParam("filter must be a JSON object.")
		}
		msg.FilterJson = []byte(f)
	}
	reply, err := askAs[*wire.ContextReply](r.Context(), s, actors.KindRoom, room, msg)
	if err != nil {
		return nil, err
	}
	if limit == 0 {
		// The spec allows limit 0: the event alone.
		reply.EventsBefore, reply.EventsAfter = nil, nil
	}
	return map[string]any{
		"event": json.RawMessage(reply.Event), "events_before": rawArray(reply.EventsBefore),
		"events_after": rawArray(reply.EventsAfter), "start": reply.Start, "end": reply.End,
		"state": rawArray(reply.State),
	}, nil
}

// rawArray is a JSON array of raw events ([] when none).
func rawArray(evs [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(evs))
	for i, e := range evs {
		out[i] = e
	}
	return out
}
