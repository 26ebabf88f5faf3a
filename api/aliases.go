package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strings"

	"persona/actors"
	"persona/wire"
)

// roomAliases is GET /rooms/{roomId}/aliases: the local aliases of a room,
// for its joined members, or anyone when its history is world_readable. An
// unknown room is forbidden too, as for the room's other reads.
func (s *Server) roomAliases(r *http.Request, sess *session) (any, error) {
	room, err := roomParam(r)
	if err == nil && strings.ContainsRune(room, 0) {
		err = invalidParam("Invalid room ID.")
	}
	var sum *wire.RoomSummaryReply
	if err == nil {
		sum, err = s.roomSummary(r.Context(), room, string(sess.user))
	}
	forbidden := forbidden("You may not list this room's aliases.")
	if isKind(err, wire.Error_NOT_FOUND) {
		err = forbidden
	}
	if err == nil && !sum.Joined && sum.HistoryVisibility != "world_readable" {
		err = forbidden
	}
	var list *wire.RoomAliasList
	if err == nil {
		list, err = s.host.RoomAliases(r.Context(), room)
		if errors.Is(err, actors.ErrTimeout) {
			err = errUnavailable
		}
	}
	if err == nil && list.Error != nil {
		err = list.Error
	}
	if err != nil {
		return nil, err
	}
	return map[string][]string{"aliases": list.Aliases}, nil
}

// canonicalAliases is the content of an m.room.canonical_alias event.
type canonicalAliases struct {
	Alias      *string  `json:"alias"`
	AltAliases []string `json:"alt_aliases"`
}

// parseCanonicalAlias reads the aliases of an m.room.canonical_alias content.
// Each must be a valid room alias (M_INVALID_PARAM); an empty or null alias
// means none.
func parseCanonicalAlias(content []byte) (*canonicalAliases, error) {
	var c canonicalAliases
	if err := json.Unmarshal(content, &c); err != nil {
		return nil, invalidParam("Field alias must be a string and alt_aliases a list of strings.")
	}
	all := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		all = append([]string{*c.Alias}, all...)
	}
	for _, a := range all {
		if _, err := parseAlias(a); err != nil {
			return nil, err
		}
	}
	return &c, nil
}

// checkCanonicalAlias checks an m.room.canonical_alias content for room. As
// in Synapse, only aliases that old (the current content, nil: none) lacks
// are looked up: each local one must exist and point to room (else
// M_BAD_ALIAS). Remote aliases need federation and are taken as they are.
func (s *Server) checkCanonicalAlias(ctx context.Context, room string, content, old []byte) error {
	c, err := parseCanonicalAlias(content)
	if err != nil {
		return err
	}
	var prev canonicalAliases
	if old != nil {
		_ = json.Unmarshal(old, &prev) // an unreadable old content: every alias is new
	}
	var added []string
	if c.Alias != nil && *c.Alias != "" && (prev.Alias == nil || *prev.Alias != *c.Alias) {
		added = append(added, *c.Alias)
	}
	for _, a := range c.AltAliases {
		if !slices.Contains(prev.AltAliases, a) {
			added = append(added, a)
		}
	}
	for _, a := range added {
		if server, _ := parseAlias(a); server != s.cfg.ServerName {
			continue
		}
		reply, err := askAs[*wire.AliasReply](ctx, s, actors.KindAlias, a, &wire.GetAlias{Alias: a})
		switch {
		case isKind(err, wire.Error_NOT_FOUND) || (err == nil && reply.RoomId != room):
			return errorf(400, "M_BAD_ALIAS", "Room alias "+a+" does not point to this room.")
		case err != nil:
			return err
		}
	}
	return nil
}

// checkNewCanonicalAlias checks the content of a canonical alias user sends
// to room under key against the current one.
func (s *Server) checkNewCanonicalAlias(ctx context.Context, room, user, key string, content []byte) error {
	if _, err := parseCanonicalAlias(content); err != nil {
		return err
	}
	old, err := s.currentCanonicalAlias(ctx, room, user, key)
	if err != nil {
		return err
	}
	return s.checkCanonicalAlias(ctx, room, content, old)
}

// currentCanonicalAlias is the content of the room's current
// m.room.canonical_alias event under key as user sees it (nil: none).
func (s *Server) currentCanonicalAlias(ctx context.Context, room, user, key string) ([]byte, error) {
	msg := &wire.GetState{RoomId: room, UserId: user, Type: "m.room.canonical_alias", StateKey: key}
	reply, err := askAs[*wire.StateReply](ctx, s, actors.KindRoom, room, msg)
	if isKind(err, wire.Error_NOT_FOUND) {
		return nil, nil
	}
	if err != nil || len(reply.EventsJson) == 0 {
		return nil, err
	}
	var ev struct {
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(reply.EventsJson[0], &ev)
	return ev.Content, nil
}

// checkInitialCanonicalAlias checks the m.room.canonical_alias events of a
// /createRoom body's initial_state (checked by checkInitialState) for room.
func (s *Server) checkInitialCanonicalAlias(ctx context.Context, body map[string]json.RawMessage, room string) error {
	var state []struct {
		Type    string          `json:"type"`
		Content json.RawMessage `json:"content"`
	}
	_ = json.Unmarshal(body["initial_state"], &state)
	for _, ev := range state {
		if ev.Type != "m.room.canonical_alias" {
			continue
		}
		if ev.Content == nil {
			ev.Content = json.RawMessage("{}")
		}
		if err := s.checkCanonicalAlias(ctx, room, ev.Content, nil); err != nil {
			return err
		}
	}
	return nil
}
