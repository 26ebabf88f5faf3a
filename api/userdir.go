package api

import (
	"context"
	"net/http"
	"sort"
	"strings"
	"sync"

	"persona/actors"
	"persona/wire"
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
// default). Room-specific names are searched too, in the searcher's own
// joined rooms only (see roomMatches): a user found that way shows the name
// of that room, and only to its members. A user found by global name keeps
// the global name.
func (s *Server) searchUsers(r *http.Request, sess *session) (any, error) {
	var body struct {
		SearchTerm *string `json:"search_term"`
		Limit      *int    `json:"limit"`
	}
	if err := s.decode(r, &body, false); err != nil {
		return nil, err
	}
	if body.SearchTerm == nil {
		return nil, missingParam("Missing search_term.")
	}
	limit := 10
	if body.Limit != nil {
		if *body.Limit < 0 {
			return nil, invalidParam("limit must not be negative.")
		}
		limit = min(*body.Limit, 100)
	}
	searcher := string(sess.user)
	found, err := askAs[*wire.SearchReply](r.Context(), s, actors.KindUserDir, "local", &wire.SearchUsers{Term: *body.SearchTerm, Limit: 200})
	if err != nil {
		return nil, err
	}
	rooms, err := s.joinedRoomList(r.Context(), searcher)
	if err != nil {
		return nil, err
	}
	mine := make(map[string]bool, len(rooms))
	for _, room := range rooms {
		mine[room] = true
	}
	inRooms, roomsLimited := s.roomMatches(r.Context(), searcher, rooms, *body.SearchTerm, limit)
	results, limited := []searchResult{}, found.Limited || roomsLimited
	seen := map[string]bool{}
	add := func(e *wire.DirectoryEntry) bool {
		if len(results) == limit {
			limited = true
			return false
		}
		seen[e.UserId] = true
		res := searchResult{UserID: e.UserId}
		if e.Displayname != "" {
			res.DisplayName = &e.Displayname
		}
		if e.AvatarUrl != "" {
			res.AvatarURL = &e.AvatarUrl
		}
		results = append(results, res)
		return true
	}
	for _, e := range found.Entries {
		if len(results) == limit {
			limited = true
			break
		}
		if ok, err := s.visibleTo(r.Context(), searcher, mine, e.UserId); err != nil || !ok {
			continue
		}
		add(e)
	}
	for _, e := range inRooms {
		if seen[e.UserId] || e.UserId == searcher {
			continue
		}
		if !add(e) {
			break
		}
	}
	return map[string]any{"limited": limited, "results": results}, nil
}

// Bounds of the room-specific name search: the searcher's first rooms only,
// asked so many at a time.
const (
	memberSearchRooms    = 50
	memberSearchParallel = 16
)

// roomMatches searches the member displaynames of the searcher's first
// joined rooms (each room answers only a joined searcher) and returns one
// entry per user, with the name of the first room in which they matched,
// names starting with the term first. A room that cannot answer is passed
// over. limited reports that a room had more matches than it returned.
func (s *Server) roomMatches(ctx context.Context, searcher string, rooms []string, term string, limit int) (entries []*wire.DirectoryEntry, limited bool) {
	term = strings.ToLower(strings.TrimSpace(term))
	if term == "" || limit == 0 || len(rooms) == 0 {
		return nil, false
	}
	rooms = rooms[:min(len(rooms), memberSearchRooms)]
	replies := make([]*wire.MemberMatches, len(rooms))
	sem := make(chan struct{}, memberSearchParallel)
	var wg sync.WaitGroup
	for i, room := range rooms {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			reply, err := askAs[*wire.MemberMatches](ctx, s, actors.KindRoom, room,
				&wire.SearchMembers{RoomId: room, UserId: searcher, Term: term, Limit: uint32(limit) + 1})
			if err == nil {
				replies[i] = reply
			}
		}()
	}
	wg.Wait()
	seen := map[string]bool{}
	for _, reply := range replies {
		if reply == nil {
			continue
		}
		limited = limited || reply.Limited
		for _, e := range reply.Entries {
			if !seen[e.UserId] {
				seen[e.UserId] = true
				entries = append(entries, e)
			}
		}
	}
	sort.SliceStable(entries, func(i, j int) bool {
		return strings.HasPrefix(strings.ToLower(entries[i].Displayname), term) &&
			!strings.HasPrefix(strings.ToLower(entries[j].Displayname), term)
	})
	return entries, limited
}

// joinedRoomList lists the rooms a user has joined, earliest join first.
func (s *Server) joinedRoomList(ctx context.Context, user string) ([]string, error) {
	reply, err := askAs[*wire.RoomsReply](ctx, s, actors.KindUser, user, &wire.GetRooms{UserId: user})
	if err != nil {
		return nil, err
	}
	var joined []*wire.RoomMembership
	for _, m := range reply.Rooms {
		if m.Membership == "join" {
			joined = append(joined, m)
		}
	}
	sort.Slice(joined, func(i, j int) bool {
		if joined[i].Stream != joined[j].Stream {
			return joined[i].Stream < joined[j].Stream
		}
		return joined[i].RoomId < joined[j].RoomId
	})
	out := make([]string, len(joined))
	for i, m := range joined {
		out[i] = m.RoomId
	}
	return out, nil
}

// joinedRoomSet is the set of rooms a user has joined.
func (s *Server) joinedRoomSet(ctx context.Context, user string) (map[string]bool, error) {
	rooms, err := s.joinedRoomList(ctx, user)
	if err != nil {
		return nil, err
	}
	out := make(map[string]bool, len(rooms))
	for _, room := range rooms {
		out[room] = true
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
		sum, err := askAs[*wire.RoomSummaryReply](ctx, s, actors.KindRoom, room, &wire.RoomSummary{RoomId: room})
		if err == nil && sum.JoinRule == "public" {
			return true, nil
		}
	}
	return false, nil
}
