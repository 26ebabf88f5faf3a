package api

import (
	"cmp"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"unicode"

	"persona/actors"
	"persona/internal/mxid"
	"persona/wire"
)

// directoryRoutes registers room aliases and the public room directory.
func (s *Server) directoryRoutes() {
	s.handle("GET", "/directory/room/{roomAlias}", s.getAlias)
	s.handle("PUT", "/directory/room/{roomAlias}", s.authed(s.putAlias))
	s.handle("DELETE", "/directory/room/{roomAlias}", s.authed(s.deleteAlias))
	s.handle("GET", "/rooms/{roomId}/aliases", s.authed(s.roomAliases))
	s.handle("GET", "/directory/list/room/{roomId}", s.getVisibility)
	s.handle("PUT", "/directory/list/room/{roomId}", s.authed(s.putVisibility))
	s.handle("GET", "/publicRooms", s.publicRoomsGet)
	s.handle("POST", "/publicRooms", s.authed(s.publicRoomsPost))
}

// parseAlias checks the room alias grammar: #localpart:server, at most 255
// bytes, with no control or space characters.
func parseAlias(a string) (server string, err error) {
	local, server, ok := strings.Cut(strings.TrimPrefix(a, "#"), ":")
	badRune := func(r rune) bool { return unicode.IsControl(r) || unicode.IsSpace(r) || r == unicode.ReplacementChar }
	if len(a) > 255 || !strings.HasPrefix(a, "#") || !ok || local == "" || !mxid.ValidServerName(server) ||
		strings.IndexFunc(local, badRune) >= 0 {
		return "", invalidParam(fmt.Sprintf("Invalid room alias %q.", a))
	}
	return server, nil
}

// localAlias checks an alias this server may create or delete.
func (s *Server) localAlias(a string) error {
	server, err := parseAlias(a)
	if err == nil && server != s.cfg.ServerName {
		err = invalidParam("Room alias must be on " + s.cfg.ServerName + ".")
	}
	return err
}

// resolveAliasServers is the room an alias points to, with the servers to
// join it through: an alias of another server is asked of it.
func (s *Server) resolveAliasServers(ctx context.Context, a string) (string, []string, error) {
	server, err := parseAlias(a)
	if err != nil {
		return "", nil, err
	}
	if server != s.cfg.ServerName {
		if s.remote == nil {
			return "", nil, notFound("Room alias " + a + " not found: this server does not federate.")
		}
		room, servers, err := s.remote.ResolveAlias(ctx, a)
		if err != nil {
			return "", nil, notFound("Room alias " + a + " not found: " + err.Error())
		}
		return room, servers, nil
	}
	reply, err := askAs[*wire.AliasReply](ctx, s, actors.KindAlias, a, &wire.GetAlias{Alias: a})
	if err != nil {
		return "", nil, err
	}
	return reply.RoomId, []string{s.cfg.ServerName}, nil
}

func (s *Server) getAlias(r *http.Request) (any, error) {
	room, servers, err := s.resolveAliasServers(r.Context(), r.PathValue("roomAlias"))
	return map[string]any{"room_id": room, "servers": servers}, err
}

// putAlias creates an alias for a room the user can see.
func (s *Server) putAlias(r *http.Request, sess *session) (any, error) {
	alias, user := r.PathValue("roomAlias"), string(sess.user)
	var body struct {
		RoomID *string `json:"room_id"`
	}
	err := s.localAlias(alias)
	if err == nil {
		err = s.decode(r, &body, false)
	}
	if err == nil && body.RoomID == nil {
		err = missingParam("Missing room_id.")
	}
	if err == nil && !validRoomID(*body.RoomID) {
		err = invalidParam(fmt.Sprintf("Invalid room ID %q.", *body.RoomID))
	}
	if err == nil { // the room must exist and the user see it
		_, err = askAs[*wire.StateReply](r.Context(), s, actors.KindRoom, *body.RoomID,
			&wire.GetState{RoomId: *body.RoomID, UserId: user, Type: "m.room.create"})
	}
	if err == nil {
		_, err = askAs[*wire.AliasReply](r.Context(), s, actors.KindAlias, alias,
			&wire.PutAlias{Alias: alias, RoomId: *body.RoomID, UserId: user})
	}
	return map[string]any{}, err
}

// deleteAlias removes an alias: its creator, an admin or a member with the
// power to change the room's canonical alias may.
func (s *Server) deleteAlias(r *http.Request, sess *session) (any, error) {
	alias := r.PathValue("roomAlias")
	msg := &wire.DeleteAlias{Alias: alias, UserId: string(sess.user), Admin: sess.admin}
	var cur *wire.AliasReply
	err := s.localAlias(alias)
	if err == nil {
		cur, err = askAs[*wire.AliasReply](r.Context(), s, actors.KindAlias, alias, &wire.GetAlias{Alias: alias})
	}
	if err == nil && cur.Creator != msg.UserId && !sess.admin {
		if sum, err := s.roomSummary(r.Context(), cur.RoomId, msg.UserId); err == nil && sum.MayChange {
			msg.RoomId, msg.MayChange = cur.RoomId, true
		}
	}
	if err == nil {
		_, err = askAs[*wire.AliasReply](r.Context(), s, actors.KindAlias, alias, msg)
	}
	if err == nil {
		s.dropCanonicalAlias(r.Context(), cur.RoomId, alias, sess)
	}
	return map[string]any{}, err
}

// dropCanonicalAlias takes a deleted alias out of its room's
// m.room.canonical_alias event, sent by the user who deleted it (as Synapse
// does); when that user may not send it, the event stays as it is.
func (s *Server) dropCanonicalAlias(ctx context.Context, room, alias string, sess *session) {
	st, err := askAs[*wire.StateReply](ctx, s, actors.KindRoom, room,
		&wire.GetState{RoomId: room, UserId: string(sess.user), Type: "m.room.canonical_alias"})
	if err != nil || len(st.EventsJson) == 0 {
		return
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	if json.Unmarshal(st.EventsJson[0], &ev) != nil || ev.Content == nil {
		return
	}
	changed := false
	if a, _ := ev.Content["alias"].(string); a == alias {
		delete(ev.Content, "alias")
		changed = true
	}
	if alts, ok := ev.Content["alt_aliases"].([]any); ok {
		kept := slices.DeleteFunc(slices.Clone(alts), func(v any) bool { return v == alias })
		if len(kept) != len(alts) {
			ev.Content["alt_aliases"], changed = kept, true
		}
	}
	if !changed {
		return
	}
	content, _ := json.Marshal(ev.Content)
	if _, err := askAs[*wire.SendReply](ctx, s, actors.KindRoom, room, &wire.SendEvent{RoomId: room, Sender: string(sess.user),
		DeviceId: sess.device, Type: "m.room.canonical_alias", IsState: true, ContentJson: content}); err != nil {
		s.log.Debug("deleted alias left in the canonical alias event", "room", room, "alias", alias, "err", err)
	}
}

func (s *Server) roomSummary(ctx context.Context, room, user string) (*wire.RoomSummaryReply, error) {
	return askAs[*wire.RoomSummaryReply](ctx, s, actors.KindRoom, room, &wire.RoomSummary{RoomId: room, UserId: user})
}

func (s *Server) publicList(ctx context.Context) ([]string, error) {
	list, err := askAs[*wire.PublicList](ctx, s, actors.KindDirectory, actors.DirectoryPublic, &wire.ListPublic{})
	return list.GetRoomIds(), err
}

// getVisibility answers whether a known room is in the public directory.
func (s *Server) getVisibility(r *http.Request) (any, error) {
	room, err := roomParam(r)
	var list []string
	if err == nil {
		_, err = s.roomSummary(r.Context(), room, "")
	}
	if err == nil {
		list, err = s.publicList(r.Context())
	}
	vis := "private"
	if _, found := slices.BinarySearch(list, room); found {
		vis = "public"
	}
	return map[string]string{"visibility": vis}, err
}

// putVisibility publishes or unpublishes a room; like aliases, it needs
// the power to change the canonical alias (or a server admin).
func (s *Server) putVisibility(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	var body struct {
		Visibility *string `json:"visibility"`
	}
	if err == nil {
		err = s.decode(r, &body, true)
	}
	vis := "public"
	if err == nil && body.Visibility != nil {
		if vis = *body.Visibility; vis != "public" && vis != "private" {
			err = invalidParam("Field visibility must be public or private.")
		}
	}
	var sum *wire.RoomSummaryReply
	if err == nil {
		sum, err = s.roomSummary(r.Context(), room, string(sess.user))
	}
	if err == nil && !sum.MayChange && !sess.admin {
		err = forbidden("You may not change this room's visibility in the directory.")
	}
	if err == nil {
		_, err = askAs[*wire.Done](r.Context(), s, actors.KindDirectory, actors.DirectoryPublic, &wire.Publish{RoomId: room, Visible: vis == "public"})
	}
	return map[string]any{}, err
}

// publicRoom is one entry of /publicRooms.
type publicRoom struct {
	RoomID           string `json:"room_id"`
	Name             string `json:"name,omitempty"`
	Topic            string `json:"topic,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	AvatarURL        string `json:"avatar_url,omitempty"`
	JoinRule         string `json:"join_rule,omitempty"`
	RoomType         string `json:"room_type,omitempty"`
	NumJoinedMembers uint64 `json:"num_joined_members"`
	WorldReadable    bool   `json:"world_readable"`
	GuestCanJoin     bool   `json:"guest_can_join"`
}

// publicQuery is a /publicRooms request: query parameters (GET) or a body
// (POST). A since token is an offset into the sorted list.
type publicQuery struct {
	Limit  *int    `json:"limit"`
	Since  *string `json:"since"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term"`
		RoomTypes         []*string `json:"room_types"` // a null entry: rooms without a type
	} `json:"filter"`
}

func (s *Server) publicRoomsGet(r *http.Request) (any, error) {
	q := r.URL.Query()
	pq, err := &publicQuery{Since: new(q.Get("since"))}, error(nil)
	if v := q.Get("limit"); v != "" {
		n, aerr := strconv.Atoi(v)
		pq.Limit = &n
		if aerr != nil {
			err = invalidParam("Bad limit.")
		}
	}
	return s.answerPublic(r, pq, err)
}

func (s *Server) publicRoomsPost(r *http.Request, _ *session) (any, error) {
	var pq publicQuery
	err := s.decode(r, &pq, true)
	return s.answerPublic(r, &pq, err)
}

// answerPublic lists the published rooms that match, most members first.
// Only this server's directory is served (?server names another: 404).
func (s *Server) answerPublic(r *http.Request, pq *publicQuery, err error) (any, error) {
	offset := 0
	if err == nil && pq.Since != nil && *pq.Since != "" {
		if offset, err = strconv.Atoi(*pq.Since); err != nil || offset < 0 {
			err = invalidParam("Bad since token.")
		}
	}
	if server := r.URL.Query().Get("server"); err == nil && server != "" && server != s.cfg.ServerName {
		err = notFound("Remote room directories need federation, which is not available yet.")
	}
	var ids []string
	if err == nil {
		ids, err = s.publicList(r.Context())
	}
	if err != nil {
		return nil, err
	}
	rooms := slices.DeleteFunc(s.summaries(r.Context(), ids), func(p *publicRoom) bool { return p == nil || !pq.matches(p) })
	slices.SortFunc(rooms, func(a, b *publicRoom) int {
		return cmp.Or(cmp.Compare(b.NumJoinedMembers, a.NumJoinedMembers), strings.Compare(a.RoomID, b.RoomID))
	})
	out := map[string]any{"total_room_count_estimate": len(rooms)}
	start, end := min(offset, len(rooms)), len(rooms)
	if pq.Limit != nil && *pq.Limit > 0 && end-start > *pq.Limit {
		end = start + *pq.Limit
		out["next_batch"] = strconv.Itoa(end)
	}
	if start > 0 && pq.Limit != nil && *pq.Limit > 0 {
		out["prev_batch"] = strconv.Itoa(max(0, start-*pq.Limit))
	}
	out["chunk"] = rooms[start:end]
	return out, nil
}

func (pq *publicQuery) matches(p *publicRoom) bool {
	if pq.Filter == nil {
		return true
	}
	types := pq.Filter.RoomTypes
	if len(types) > 0 && !slices.ContainsFunc(types, func(t *string) bool {
		return (t == nil && p.RoomType == "") || (t != nil && *t == p.RoomType)
	}) {
		return false
	}
	term := strings.ToLower(strings.TrimSpace(pq.Filter.GenericSearchTerm))
	return term == "" || slices.ContainsFunc([]string{p.Name, p.Topic, p.CanonicalAlias, p.RoomID}, func(f string) bool {
		return strings.Contains(strings.ToLower(f), term)
	})
}

// summaries asks each room for its summary, a few at a time; a room that
// does not answer is left out (nil).
func (s *Server) summaries(ctx context.Context, ids []string) []*publicRoom {
	out := make([]*publicRoom, len(ids))
	sem := make(chan struct{}, 16)
	var wg sync.WaitGroup
	for i, id := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			sum, err := s.roomSummary(ctx, id, "")
			if err != nil {
				s.log.Warn("public room summary failed", "room", id, "err", err)
				return
			}
			out[i] = &publicRoom{RoomID: id, Name: sum.Name, Topic: sum.Topic, CanonicalAlias: sum.CanonicalAlias,
				AvatarURL: sum.AvatarUrl, JoinRule: sum.JoinRule, RoomType: sum.RoomType,
				NumJoinedMembers: sum.NumJoinedMembers, WorldReadable: sum.HistoryVisibility == "world_readable",
				GuestCanJoin: sum.GuestAccess == "can_join"}
		})
	}
	wg.Wait()
	return out
}

// createAlias claims the /createRoom body's room_alias_name for room, before
// the room is created, and puts its m.room.canonical_alias first in the
// body's initial_state. It answers the alias ("" when none).
func (s *Server) createAlias(ctx context.Context, body map[string]json.RawMessage, room, user string) (string, error) {
	var name string
	if v, ok := body["room_alias_name"]; ok && jsonKind(v) != 'n' && (jsonKind(v) != '"' || json.Unmarshal(v, &name) != nil) {
		return "", badJSON("Field room_alias_name must be a string.")
	}
	if name == "" {
		return "", nil
	}
	alias := "#" + name + ":" + s.cfg.ServerName
	if strings.ContainsRune(name, ':') || s.localAlias(alias) != nil {
		return "", invalidParam(fmt.Sprintf("Invalid room_alias_name %q.", name))
	}
	_, err := askAs[*wire.AliasReply](ctx, s, actors.KindAlias, alias, &wire.PutAlias{Alias: alias, RoomId: room, UserId: user})
	if isKind(err, wire.Error_CONFLICT) {
		return "", errorf(400, "M_ROOM_IN_USE", "Room alias "+alias+" is already in use.")
	}
	if err != nil {
		return "", err
	}
	var state []json.RawMessage
	if raw, ok := body["initial_state"]; ok {
		_ = json.Unmarshal(raw, &state) // checked by checkCreateRoom
	}
	// The spec sends this event before initial_state's, so that a canonical
	// alias of the client's own wins.
	ev, _ := json.Marshal(map[string]any{"type": "m.room.canonical_alias", "state_key": "", "content": map[string]string{"alias": alias}})
	body["initial_state"], _ = json.Marshal(append([]json.RawMessage{ev}, state...))
	return alias, nil
}

// releaseAlias deletes the alias createAlias claimed for a room that could
// not be created.
func (s *Server) releaseAlias(ctx context.Context, alias, room, user string) {
	if alias == "" {
		return
	}
	msg := &wire.DeleteAlias{Alias: alias, UserId: user, RoomId: room}
	if _, err := askAs[*wire.AliasReply](context.WithoutCancel(ctx), s, actors.KindAlias, alias, msg); err != nil {
		s.log.Error("release alias of a room not created", "alias", alias, "err", err)
	}
}

// publishCreated adds a new room to the public directory when the
// /createRoom body asks for visibility public. The room exists already: a
// failure is logged, not answered.
func (s *Server) publishCreated(ctx context.Context, body map[string]json.RawMessage, room string) {
	if !oneOf(body["visibility"], "public") {
		return
	}
	msg := &wire.Publish{RoomId: room, Visible: true}
	if _, err := askAs[*wire.Done](context.WithoutCancel(ctx), s, actors.KindDirectory, actors.DirectoryPublic, msg); err != nil {
		s.log.Error("publish new room", "room", room, "err", err)
	}
}
