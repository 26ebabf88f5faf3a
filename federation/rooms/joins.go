package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/actors"
	"persona/internal/mxid"
	"persona/wire"
)

// The join and leave handshakes. As the resident server a room hands out
// templates (make_join, make_leave) and takes the signed events back
// (send_join, send_leave). As the joining server Join runs
// gomatrixserverlib's PerformJoin against a resident server and makes the
// room here from the state it answers.

func (s *Service) makeJoin(r *http.Request, origin spec.ServerName) (any, error) {
	return s.makeMembership(r, origin, "join")
}

func (s *Service) makeLeave(r *http.Request, origin spec.ServerName) (any, error) {
	return s.makeMembership(r, origin, "leave")
}

// makeMembership answers a template for a user of origin.
func (s *Service) makeMembership(r *http.Request, origin spec.ServerName, membership string) (any, error) {
	room, user := r.PathValue("roomID"), r.PathValue("userID")
	if mxid.ServerOf(user) != string(origin) {
		return nil, errorf(http.StatusForbidden, "M_FORBIDDEN", "The user is not of the server that asks.")
	}
	reply, err := ask[*wire.MakeMembershipReply](r.Context(), s, actors.KindRoom, room, &wire.MakeMembership{RoomId: room, UserId: user, Membership: membership})
	if err != nil {
		return nil, err
	}
	if membership == "join" {
		supported := r.URL.Query()["ver"]
		if len(supported) == 0 {
			supported = []string{"1"}
		}
		if !slices.Contains(supported, reply.RoomVersion) {
			return nil, &incompatible{reply.RoomVersion}
		}
	}
	return map[string]any{"room_version": reply.RoomVersion, "event": json.RawMessage(reply.Event)}, nil
}

// incompatible is make_join's answer to a server that does not speak the
// room's version.
type incompatible struct{ version string }

func (e *incompatible) Error() string { return "incompatible room version " + e.version }

func (s *Service) sendJoin(r *http.Request, origin spec.ServerName) (any, error) {
	return s.sendMembership(r, origin, "join")
}

func (s *Service) sendLeave(r *http.Request, origin spec.ServerName) (any, error) {
	return s.sendMembership(r, origin, "leave")
}

// sendJoinV1 and sendLeaveV1 answer as v2 does, inside v1's [200, body].
func (s *Service) sendJoinV1(r *http.Request, origin spec.ServerName) (any, error) {
	out, err := s.sendMembership(r, origin, "join")
	return []any{200, out}, err
}

func (s *Service) sendLeaveV1(r *http.Request, origin spec.ServerName) (any, error) {
	out, err := s.sendMembership(r, origin, "leave")
	return []any{200, out}, err
}

// sendMembership checks a signed join or leave and hands it to its room.
func (s *Service) sendMembership(r *http.Request, origin spec.ServerName, membership string) (any, error) {
	room, eventID := r.PathValue("roomID"), r.PathValue("eventID")
	body, err := io.ReadAll(r.Body)
	if err != nil {
		return nil, errorf(http.StatusBadRequest, "M_UNKNOWN", "Could not read the body.")
	}
	verImpl, err := s.roomVersion(r.Context(), room)
	if err != nil {
		return nil, err
	}
	ev, err := s.verify(r.Context(), verImpl, body)
	switch {
	case err != nil:
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "%v", err)
	case ev.EventID() != eventID:
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "The event's id is %s, not %s.", ev.EventID(), eventID)
	case ev.RoomID().String() != room:
		return nil, errorf(http.StatusBadRequest, "M_BAD_JSON", "The event is of another room.")
	}
	reply, err := ask[*wire.SendMembershipReply](r.Context(), s, actors.KindRoom, room, &wire.SendMembership{RoomId: room, Origin: string(origin), Pdu: ev.JSON(), Membership: membership})
	if err != nil {
		return nil, err
	}
	if reply.Rejected != "" {
		return nil, errorf(http.StatusForbidden, "M_FORBIDDEN", "%s", reply.Rejected)
	}
	if membership == "leave" {
		return map[string]any{}, nil
	}
	return map[string]any{
		"origin": s.cfg.ServerName, "state": rawList(reply.State), "auth_chain": rawList(reply.AuthChain),
		"members_omitted": false, "servers_in_room": reply.ServersInRoom,
	}, nil
}

func rawList(items [][]byte) []json.RawMessage {
	out := make([]json.RawMessage, len(items))
	for i, b := range items {
		out[i] = b
	}
	return out
}

// ErrNoServer is Join's error when no server could be joined through.
var ErrNoServer = errors.New("no server could be joined through")

// Join joins a local user to a room that lives on other servers, through
// the first of servers that answers, and makes the room here from the
// state the resident server gives. content is the member event's content
// (displayname, avatar_url...); profileVersion the user's profile version
// it carries.
func (s *Service) Join(ctx context.Context, room, user string, servers []string, content map[string]any, profileVersion uint64) error {
	uid, err := spec.NewUserID(user, true)
	if err != nil {
		return err
	}
	rid, err := spec.NewRoomID(room)
	if err != nil {
		return err
	}
	id := s.fed.Identity()
	var errs []error
	for _, server := range servers {
		if server == "" || server == s.cfg.ServerName {
			continue
		}
		jctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
		resp, ferr := gomatrixserverlib.PerformJoin(jctx, joinClient{s.fed.Client()}, gomatrixserverlib.PerformJoinInput{
			UserID: uid, RoomID: rid, ServerName: spec.ServerName(server), Content: content,
			PrivateKey: id.PrivateKey, KeyID: id.KeyID, KeyRing: s.fed.KeyRing(),
			EventProvider: func(gomatrixserverlib.RoomVersion, []string) ([]gomatrixserverlib.PDU, error) { return nil, nil },
			UserIDQuerier: userIDForSender,
			GetOrCreateSenderID: func(_ context.Context, u spec.UserID, _ spec.RoomID, _ string) (spec.SenderID, ed25519.PrivateKey, error) {
				return spec.SenderIDFromUserID(u), nil, nil
			},
			StoreSenderIDFromPublicID: func(context.Context, spec.SenderID, string, spec.RoomID) error { return nil },
		})
		cancel()
		if ferr != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, ferr.Err))
			continue
		}
		msg := &wire.JoinedRemote{RoomId: room, RoomVersion: string(resp.JoinEvent.Version()), Join: resp.JoinEvent.JSON(),
			UserId: user, ProfileVersion: profileVersion}
		for _, e := range resp.StateSnapshot.GetStateEvents().TrustedEvents(resp.JoinEvent.Version(), false) {
			msg.State = append(msg.State, e.JSON())
		}
		for _, e := range resp.StateSnapshot.GetAuthEvents().TrustedEvents(resp.JoinEvent.Version(), false) {
			msg.AuthChain = append(msg.AuthChain, e.JSON())
		}
		reply, err := ask[*wire.ReceiveReply](ctx, s, actors.KindRoom, room, msg)
		if err != nil {
			return err
		}
		if reply.Rejected != "" {
			return fmt.Errorf("the room refused the join: %s", reply.Rejected)
		}
		return nil
	}
	if len(errs) == 0 {
		return ErrNoServer
	}
	return errors.Join(append([]error{ErrNoServer}, errs...)...)
}

// ServersOf are the servers to try for a room: those given, then the
// room id's own server (room versions before 12 name one).
func ServersOf(room string, given []string) []string {
	out := slices.Clone(given)
	if _, server, ok := strings.Cut(room, ":"); ok && !slices.Contains(out, server) {
		out = append(out, server)
	}
	return out
}

// ResolveAlias asks an alias's server for its room and the servers to
// join it through.
func (s *Service) ResolveAlias(ctx context.Context, alias string) (string, []string, error) {
	_, server, ok := strings.Cut(alias, ":")
	if !ok {
		return "", nil, fmt.Errorf("alias %q has no server", alias)
	}
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	resp, err := s.fed.Client().LookupRoomAlias(ctx, spec.ServerName(s.cfg.ServerName), spec.ServerName(server), alias)
	if err != nil {
		return "", nil, err
	}
	servers := make([]string, len(resp.Servers))
	for i, sv := range resp.Servers {
		servers[i] = string(sv)
	}
	return resp.RoomID, servers, nil
}

// joinClient is the federation client as gomatrixserverlib's PerformJoin
// wants it.
type joinClient struct{ fclient.FederationClient }

func (c joinClient) MakeJoin(ctx context.Context, origin, s spec.ServerName, room, user string) (gomatrixserverlib.MakeJoinResponse, error) {
	r, err := c.FederationClient.MakeJoin(ctx, origin, s, room, user)
	if err != nil {
		return nil, err
	}
	return &r, nil
}

func (c joinClient) SendJoin(ctx context.Context, origin, s spec.ServerName, ev gomatrixserverlib.PDU) (gomatrixserverlib.SendJoinResponse, error) {
	r, err := c.FederationClient.SendJoin(ctx, origin, s, ev)
	if err != nil {
		return nil, err
	}
	return &r, nil
}
