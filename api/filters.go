package api

import (
	"encoding/json"
	"net/http"
	"strings"

	"persona/actors"
	"persona/wire"
)

func (s *Server) filterRoutes() {
	s.handle("POST", "/user/{userId}/filter", s.authed(s.putFilter))
	s.handle("GET", "/user/{userId}/filter/{filterId}", s.authed(s.getFilter))
}

// ownUser checks that {userId} is the session's own user.
func ownUser(r *http.Request, sess *session) error {
	user, err := userIDParam(r)
	if err != nil {
		return err
	}
	if user != string(sess.user) {
		return forbidden("You can only manage your own filters.")
	}
	return nil
}

// putFilter stores a filter (a JSON object whose known fields have the
// right shapes) with the user's actor.
func (s *Server) putFilter(r *http.Request, sess *session) (any, error) {
	if err := ownUser(r, sess); err != nil {
		return nil, err
	}
	obj, err := s.readObject(r)
	if err != nil {
		return nil, err
	}
	if err := checkFilter(obj); err != nil {
		return nil, err
	}
	raw, _ := json.Marshal(obj)
	reply, err := askAs[*wire.FilterReply](r.Context(), s, actors.KindUser, string(sess.user), &wire.PutFilter{UserId: string(sess.user), FilterJson: raw})
	if err != nil {
		return nil, err
	}
	return map[string]string{"filter_id": reply.FilterId}, nil
}

// checkFilter refuses filters whose known fields have the wrong JSON type.
func checkFilter(obj map[string]json.RawMessage) error {
	kinds := map[string]byte{"event_fields": '[', "event_format": '"', "presence": '{', "account_data": '{', "room": '{'}
	for k, want := range kinds {
		if v, ok := obj[k]; ok && jsonKind(v) != want && jsonKind(v) != 'n' {
			return badJSON("Filter field " + k + " has the wrong type.")
		}
	}
	if v, ok := obj["event_format"]; ok && !oneOf(v, "client", "federation") {
		return badJSON("event_format must be client or federation.")
	}
	var room struct {
		Rooms, NotRooms            []any
		Timeline, State, Ephemeral *eventFilterJSON
		AccountData                *eventFilterJSON `json:"account_data"`
	}
	if raw, ok := obj["room"]; ok && jsonKind(raw) == '{' {
		if err := json.Unmarshal(raw, &room); err != nil {
			return badJSON("Bad room filter.")
		}
		for _, f := range []*eventFilterJSON{room.Timeline, room.State, room.Ephemeral, room.AccountData} {
			if err := f.check(); err != nil {
				return err
			}
		}
	}
	return nil
}

// eventFilterJSON is an event filter as uploaded, checked field by field.
type eventFilterJSON struct {
	Types      []any `json:"types"`
	NotTypes   []any `json:"not_types"`
	Senders    []any `json:"senders"`
	NotSenders []any `json:"not_senders"`
	Rooms      []any `json:"rooms"`
	NotRooms   []any `json:"not_rooms"`
}

func (f *eventFilterJSON) check() error {
	if f == nil {
		return nil
	}
	bad := func(what string) error { return badJSON("Filter " + what + " is invalid.") }
	for _, list := range [][]any{f.Types, f.NotTypes} {
		for _, v := range list {
			if _, ok := v.(string); !ok {
				return bad("types")
			}
		}
	}
	for _, list := range [][]any{f.Senders, f.NotSenders} {
		for _, v := range list {
			if s, ok := v.(string); !ok || !strings.HasPrefix(s, "@") || !strings.Contains(s, ":") {
				return bad("senders")
			}
		}
	}
	for _, list := range [][]any{f.Rooms, f.NotRooms} {
		for _, v := range list {
			if s, ok := v.(string); !ok || !strings.HasPrefix(s, "!") || !strings.Contains(s, ":") {
				return bad("rooms")
			}
		}
	}
	return nil
}

func (s *Server) getFilter(r *http.Request, sess *session) (any, error) {
	if err := ownUser(r, sess); err != nil {
		return nil, err
	}
	reply, err := askAs[*wire.FilterReply](r.Context(), s, actors.KindUser, string(sess.user),
		&wire.GetFilter{UserId: string(sess.user), FilterId: r.PathValue("filterId")})
	if err != nil {
		return nil, err
	}
	return json.RawMessage(reply.FilterJson), nil
}

// loadFilter resolves a filter parameter: inline JSON, or the id of a
// stored filter.
func (s *Server) loadFilter(r *http.Request, sess *session, f string) ([]byte, error) {
	if f == "" || f[0] == '{' {
		return []byte(f), nil
	}
	reply, err := askAs[*wire.FilterReply](r.Context(), s, actors.KindUser, string(sess.user), &wire.GetFilter{UserId: string(sess.user), FilterId: f})
	if err != nil {
		return nil, invalidParam("Unknown filter id.")
	}
	return reply.FilterJson, nil
}
