package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/federation/profiles"
	"persona/internal/mxid"
	"persona/wire"
)

// Profiles across servers: the client API's lookups of other servers'
// users (Profile, through the cache), the cache's refresh by the member
// events other servers send (memberBefore, memberChanged, called by send),
// and which servers may read a local profile (mayReadProfile, for
// queryProfile).

// Profile returns every field of the profile of user, a user of another
// server, as a JSON object, through the cache: a refusal of the user's
// server or a failure here as a *wire.Error, the server's giving no
// usable answer as the cache's error (api.Remote).
func (s *Service) Profile(ctx context.Context, user string) (json.RawMessage, error) {
	if s.opts.Profiles == nil || mxid.ServerOf(user) == s.cfg.ServerName {
		return nil, &wire.Error{Kind: wire.Error_NOT_FOUND, Subject: wire.Error_USER, Message: "Profile was not found."}
	}
	fields, err := s.opts.Profiles.Lookup(ctx, user)
	switch {
	case err == nil:
		return fields, nil
	case errors.Is(err, profiles.ErrNotFound):
		return nil, &wire.Error{Kind: wire.Error_NOT_FOUND, Subject: wire.Error_USER, Message: "The user's server has no profile for this user."}
	case errors.Is(err, profiles.ErrForbidden):
		return nil, &wire.Error{Kind: wire.Error_FORBIDDEN, Message: "The user's server does not share this profile."}
	case errors.Is(err, profiles.ErrClosed):
		return nil, &wire.Error{Kind: wire.Error_UNAVAILABLE, Message: "The server is stopping."}
	case errors.Is(err, profiles.ErrNoAnswer), errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return nil, err
	}
	return nil, &wire.Error{Kind: wire.Error_INTERNAL, Message: err.Error()}
}

// memberBefore returns the content of the member event ev replaces, when
// ev is a user's own member event that keeps a user of another server
// joined and the profile cache holds that user: what memberChanged
// compares ev with. It returns nil otherwise, having asked nothing of the
// room unless the cache holds the user.
func (s *Service) memberBefore(ctx context.Context, ev gomatrixserverlib.PDU) json.RawMessage {
	if s.opts.Profiles == nil || ev.Type() != spec.MRoomMember || ev.StateKey() == nil {
		return nil
	}
	user := *ev.StateKey()
	if string(ev.SenderID()) != user || mxid.ServerOf(user) == s.cfg.ServerName || membership(ev.Content()) != "join" ||
		!s.opts.Profiles.Cached(user) {
		return nil
	}
	room := ev.RoomID().String()
	st, err := ask[*wire.StateReply](ctx, s, actors.KindRoom, room, &wire.GetState{RoomId: room, UserId: user, Type: spec.MRoomMember, StateKey: user})
	if err != nil || len(st.EventsJson) == 0 {
		return nil
	}
	var prev struct {
		Content json.RawMessage `json:"content"`
	}
	if json.Unmarshal(st.EventsJson[0], &prev) != nil || membership(prev.Content) != "join" {
		return nil
	}
	return prev.Content
}

// memberChanged refreshes the profile cache from ev, a member event its
// room accepted, and prev, what memberBefore returned before the room
// had it.
func (s *Service) memberChanged(ev gomatrixserverlib.PDU, prev json.RawMessage) {
	if prev == nil {
		return
	}
	if _, err := s.opts.Profiles.MemberChanged(*ev.StateKey(), prev, ev.Content()); err != nil {
		s.log.Warn("profile cache not refreshed", "user", *ev.StateKey(), "event", ev.EventID(), "err", err)
	}
}

// membership is a member event content's membership.
func membership(content []byte) string {
	var c struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(content, &c)
	return c.Membership
}

// mayReadProfile checks that origin may read local user's profile:
// federation.allow_profile_lookup, and under
// profile.limit_to_shared_rooms a room where user is joined and so is a
// user of origin. It checks before the profile is read, so a server
// refused learns nothing of whether the user exists.
// profile.require_auth asks nothing more here: every federation request
// is authenticated by its origin's signature.
func (s *Service) mayReadProfile(ctx context.Context, user string, origin spec.ServerName) error {
	if !s.cfg.Federation.AllowProfileLookup {
		return errorf(http.StatusForbidden, "M_FORBIDDEN", "This server does not share profiles.")
	}
	if !s.cfg.Profile.LimitToSharedRooms {
		return nil
	}
	shared, err := s.sharesRoom(ctx, user, origin)
	if err != nil {
		return err
	}
	if !shared {
		return errorf(http.StatusForbidden, "M_FORBIDDEN", "This server shares a profile only with servers that share a room with the user.")
	}
	return nil
}

// sharesRoom reports whether local user is joined to a room where a user
// of server is joined too: the user's joined rooms are asked for their
// other servers, until one names server.
func (s *Service) sharesRoom(ctx context.Context, user string, server spec.ServerName) (bool, error) {
	reply, err := s.actors.Request(ctx, actors.KindUser, user, &wire.GetRooms{UserId: user})
	if err != nil {
		return false, err
	}
	rooms, ok := reply.(*wire.RoomsReply)
	if !ok {
		return false, fmt.Errorf("GetRooms answered %T", reply)
	}
	for _, m := range rooms.Rooms {
		if m.Membership != "join" {
			continue
		}
		st, err := ask[*wire.ServersReply](ctx, s, actors.KindRoom, m.RoomId, &wire.GetServers{RoomId: m.RoomId})
		if err != nil {
			continue // gone meanwhile: shares nothing
		}
		if slices.Contains(st.Servers, string(server)) {
			return true, nil
		}
	}
	return false, nil
}

// Profile update EDUs (MSC4259): the type of the stable name and of the
// unstable prefix.
const (
	eduProfile         = "m.profile"
	eduProfileUnstable = "uk.tcpip.msc4259.profile"
)

// receiveEDU applies a profile update EDU of a transaction from origin to
// the profile cache; EDUs of other types are not persona's concern. An
// update is taken only about a user of origin: a server speaks for its own
// users, and the MSC forbids forwarding another's.
func (s *Service) receiveEDU(origin spec.ServerName, raw json.RawMessage) {
	var edu struct {
		Type    string `json:"edu_type"`
		Content struct {
			UserID string                     `json:"user_id"`
			Fields map[string]json.RawMessage `json:"fields"`
		} `json:"content"`
	}
	if s.opts.Profiles == nil || json.Unmarshal(raw, &edu) != nil || (edu.Type != eduProfile && edu.Type != eduProfileUnstable) {
		return
	}
	user := edu.Content.UserID
	if _, server, err := mxid.ParseUserID(user); err != nil || server != string(origin) || len(edu.Content.Fields) == 0 {
		s.log.Info("profile update refused", "origin", origin, "user", user)
		return
	}
	if _, err := s.opts.Profiles.Updated(user, edu.Content.Fields); err != nil {
		s.log.Warn("profile cache not updated", "user", user, "err", err)
	}
}
