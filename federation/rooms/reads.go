package rooms

import (
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/internal/mxid"
	"persona/storage"
	"persona/wire"
)

// What peers read to fill gaps, and the queries.

// event is GET /event/{eventId}: one event, as a transaction of one PDU.
func (s *Service) event(r *http.Request, origin spec.ServerName) (any, error) {
	id := r.PathValue("eventID")
	room, err := s.actors.RoomOfEvent(id)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "Event not found.")
	} else if err != nil {
		return nil, err
	}
	reply, err := ask[*wire.FederationReadReply](r.Context(), s, actors.KindRoom, room, &wire.FederationRead{RoomId: room, Origin: string(origin), What: "event", EventId: id})
	if err != nil {
		return nil, err
	}
	return map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": rawList(reply.Pdus)}, nil
}

// read answers state, state_ids, event_auth, backfill and
// get_missing_events from the room.
func (s *Service) read(what string) func(*http.Request, spec.ServerName) (any, error) {
	return func(r *http.Request, origin spec.ServerName) (any, error) {
		room := r.PathValue("roomID")
		q := r.URL.Query()
		msg := &wire.FederationRead{RoomId: room, Origin: string(origin), What: what, EventId: q.Get("event_id")}
		switch what {
		case "event_auth":
			msg.EventId = r.PathValue("eventID")
		case "state", "state_ids":
			if msg.EventId == "" {
				return nil, errorf(http.StatusBadRequest, "M_MISSING_PARAM", "Missing event_id.")
			}
		case "backfill":
			msg.From = q["v"]
			n, err := strconv.ParseUint(q.Get("limit"), 10, 32)
			if err != nil || len(msg.From) == 0 {
				return nil, errorf(http.StatusBadRequest, "M_INVALID_PARAM", "backfill needs v and a numeric limit.")
			}
			msg.Limit = uint32(n)
		case "missing":
			var body struct {
				Earliest []string `json:"earliest_events"`
				Latest   []string `json:"latest_events"`
				Limit    *int     `json:"limit"`
				MinDepth int64    `json:"min_depth"`
			}
			raw, err := io.ReadAll(r.Body)
			if err != nil || json.Unmarshal(raw, &body) != nil {
				return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "Bad get_missing_events body.")
			}
			msg.Earliest, msg.From, msg.MinDepth, msg.Limit = body.Earliest, body.Latest, body.MinDepth, 10
			if body.Limit != nil && *body.Limit > 0 {
				msg.Limit = uint32(*body.Limit)
			}
		}
		reply, err := ask[*wire.FederationReadReply](r.Context(), s, actors.KindRoom, room, msg)
		if err != nil {
			return nil, err
		}
		switch what {
		case "state":
			return map[string]any{"pdus": rawList(reply.Pdus), "auth_chain": rawList(reply.AuthChain)}, nil
		case "state_ids":
			return map[string]any{"pdu_ids": nonNil(reply.PduIds), "auth_chain_ids": nonNil(reply.AuthChainIds)}, nil
		case "event_auth":
			return map[string]any{"auth_chain": rawList(reply.AuthChain)}, nil
		case "missing":
			return map[string]any{"events": rawList(reply.Pdus)}, nil
		}
		return map[string]any{"origin": s.cfg.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": rawList(reply.Pdus)}, nil
	}
}

func nonNil(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	return ids
}

// queryProfile is GET /query/profile: every field of a local user's
// profile, custom ones included, or the one field asked for, to a server
// that may read it (mayReadProfile).
func (s *Service) queryProfile(r *http.Request, origin spec.ServerName) (any, error) {
	user, field := r.URL.Query().Get("user_id"), r.URL.Query().Get("field")
	if _, server, err := mxid.ParseUserID(user); err != nil {
		return nil, errorf(http.StatusBadRequest, "M_INVALID_PARAM", "Invalid user_id.")
	} else if server != s.cfg.ServerName {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "The user is not of this server.")
	}
	if err := s.mayReadProfile(r.Context(), user, origin); err != nil {
		return nil, err
	}
	reply, err := s.actors.Request(r.Context(), actors.KindUser, user, &wire.GetProfile{UserId: user})
	if err != nil {
		return nil, err
	}
	p, ok := reply.(*wire.ProfileReply)
	if !ok || !p.Exists {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "Profile not found.")
	}
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(p.FieldsJson, &fields); err != nil {
		return nil, err
	}
	if field == "" {
		return fields, nil
	}
	v, ok := fields[field]
	if !ok {
		return nil, errorf(http.StatusNotFound, "M_NOT_FOUND", "The user has no %s.", field)
	}
	return map[string]json.RawMessage{field: v}, nil
}

// queryDirectory is GET /query/directory: a local alias's room and the
// servers to join it through.
func (s *Service) queryDirectory(r *http.Request, _ spec.ServerName) (any, error) {
	alias := r.URL.Query().Get("room_alias")
	reply, err := ask[*wire.AliasReply](r.Context(), s, actors.KindAlias, alias, &wire.GetAlias{Alias: alias})
	if err != nil {
		return nil, err
	}
	return map[string]any{"room_id": reply.RoomId, "servers": []string{s.cfg.ServerName}}, nil
}
