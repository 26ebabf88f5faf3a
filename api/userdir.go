package api

import (
	"context"
	"net/http"

	"persona/actors"
)

func (s *Server) userDirRoutes() {
	s.handle("POST", "/user_directory/search", s.authed(s.searchUsers))
}

type searchResult struct {
	UserID      string  `json:"user_id"`
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// searchUsers answers /user_directory/search with the users whose global
// displayname or ID matches and whom the searcher may see: users sharing a
// room with the searcher, or joined to a public room (as Synapse by
// default). Names are global: a room-specific name is never searched.
func (s *Server) searchUsers(w http.ResponseWriter, r *http.Request, sess *session) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := s.decode(w, r, &body, false); err != nil {
		writeError(w, err)
		return
	}
	if body.SearchTerm == nil {
		writeError(w, errorf(400, "M_MISSING_PARAM", "Missing search_term."))
		return
	}
	limit := 10
	if body.Limit != nil {
		if *body.Limit < 0 {
			writeError(w, errorf(400, "M_INVALID_PARAM", "limit must not be negative."))
			return
		}
		limit = min(*body.Limit, 100)
	}
	found, err := askAs[*actors.SearchReply](r.Context(), s, actors.KindUserDir, "local", &actors.SearchUsers{Term: *body.SearchTerm, Limit: 200})
	if err != nil {
		writeError(w, err)
		return
	}
	mine, err := s.joinedRoomSet(r.Context(), string(sess.user))
	if err != nil {
		writeError(w, err)
		return
	}
	results, limited := []searchResult{}, found.Limited
	for _, e := range found.Entries {
		if len(results) == limit {
			limited = true
			break
		}
		if ok, err := s.visibleTo(r.Context(), string(sess.user), mine, e.UserId); err != nil || !ok {
			continue
		}
		res := searchResult{UserID: e.UserId}
		if e.Displayname != "" {
			res.DisplayName = &e.Displayname
		}
		if e.AvatarUrl != "" {
			res.AvatarURL = &e.AvatarUrl
		}
		results = append(results, res)
	}
	writeJSON(w, 200, map[string]any{"limited": limited, "results": results})
}

// joinedRoomSet is the set of rooms a user has joined.
func (s *Server) joinedRoomSet(ctx context.Context, user string) (map[string]bool, error) {
	reply, err := askAs[*actors.RoomsReply](ctx, s, actors.KindUser, user, &actors.GetRooms{UserId: user})
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for _, m := range reply.Rooms {
		if m.Membership == "join" {
			out[m.RoomId] = true
		}
	}
	return out, nil
}

// visibleTo reports whether the searcher may find user: another user sharing
// a joined room, or a user joined to a public room (the searcher itself only
// on those terms, as in Synapse).
func (s *Server) visibleTo(ctx context.Context, searcher string, searcherRooms map[string]bool, user string) (bool, error) {
	theirs, err := s.joinedRoomSet(ctx, user)
	if err != nil {
		return false, err
	}
	checked := 0
	for room := range theirs {
		if searcherRooms[room] && user != searcher {
			return true, nil
		}
	}
	for room := range theirs {
		if checked == 20 { // enough to decide for anyone but a user in very many private rooms
			break
		}
		checked++
		sum, err := askAs[*actors.RoomSummaryReply](ctx, s, actors.KindRoom, room, &actors.RoomSummary{RoomId: room})
		if err == nil && sum.JoinRule == "public" {
			return true, nil
		}
	}
	return false, nil
}
