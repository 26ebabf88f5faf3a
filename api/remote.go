package api

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"

	"persona/wire"
)

// Remote is what the client API asks of other servers; the federation
// layer implements it, and a node without federation has none.
type Remote interface {
	// Join joins a local user to a room that lives on other servers,
	// through the first of servers that answers, with content as the
	// member event's content; it returns once the room is here.
	Join(ctx context.Context, room, user string, servers []string, content map[string]any, profileVersion uint64) error
	// ResolveAlias asks an alias's server for its room and the servers to
	// join it through.
	ResolveAlias(ctx context.Context, alias string) (room string, servers []string, err error)
	// Invite has a local user invite a user of another server, whose
	// server signs the invite before the room holds it; isDirect marks
	// the invite as a direct chat's (is_direct in its content).
	Invite(ctx context.Context, room, sender, target, reason string, isDirect bool) error
	// RejectInvite rejects another server's invite of a local user
	// through the first of the room's servers that takes it (make_leave,
	// send_leave); it fails when none does.
	RejectInvite(ctx context.Context, room, user string) error
	// Profile returns every field of the profile of user, a user of
	// another server, as a JSON object. It fails with a *wire.Error when
	// the user's server refuses (NOT_FOUND, FORBIDDEN) or this server
	// fails (INTERNAL, UNAVAILABLE); any other error means the user's
	// server gave no usable answer, and wraps context.DeadlineExceeded
	// when it did not answer in time.
	Profile(ctx context.Context, user string) (json.RawMessage, error)
	// ProfileChanged tells the servers that share a room with user, a
	// local user, that fields of its profile changed (a null value: the
	// field was removed). It returns at once; the telling is best effort.
	ProfileChanged(user string, fields map[string]json.RawMessage)
}

// announceProfile tells other servers that fields of user's profile
// changed, when this node federates.
func (s *Server) announceProfile(user string, fields map[string]json.RawMessage) {
	if s.remote != nil && len(fields) > 0 {
		s.remote.ProfileChanged(user, fields)
	}
}

// remoteProfile is the profile of another server's user, through Remote:
// the user's server's 404 and 403 as they are. When that server gives no
// usable answer the answer is 502, or 504 when it did not answer in time:
// the spec names no status for it, and a gateway's say what happened
// without blaming this server (500).
func (s *Server) remoteProfile(ctx context.Context, user string) (json.RawMessage, error) {
	if s.remote == nil {
		return nil, notFound("Profile was not found.")
	}
	fields, err := s.remote.Profile(ctx, user)
	var refused *wire.Error
	switch {
	case err == nil:
		return fields, nil
	case errors.As(err, &refused):
		return nil, err
	case errors.Is(err, context.DeadlineExceeded), isTimeout(err):
		return nil, errorf(http.StatusGatewayTimeout, "M_UNKNOWN", "The user's server did not answer in time.")
	}
	s.log.Info("remote profile lookup failed", "user", user, "err", err)
	return nil, errorf(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the profile from the user's server.")
}

// joinRemote joins a room this server does not hold, for the user of
// msg, through servers: the join's member content is the user's profile,
// then the request body's keys.
func (s *Server) joinRemote(ctx context.Context, msg *wire.ChangeMembership, servers []string) error {
	content := map[string]any{}
	_ = json.Unmarshal(msg.ProfileJson, &content)
	if len(msg.ContentJson) > 0 {
		var extra map[string]any
		_ = json.Unmarshal(msg.ContentJson, &extra)
		for k, v := range extra {
			if k != "membership" {
				content[k] = v
			}
		}
	}
	if msg.Reason != "" {
		content["reason"] = msg.Reason
	}
	content["membership"] = "join"
	if err := s.remote.Join(ctx, msg.RoomId, msg.Target, servers, content, msg.ProfileVersion); err != nil {
		return errorf(http.StatusNotFound, "M_UNKNOWN", "Could not join the room through another server: "+err.Error())
	}
	return nil
}

// joinServers are the servers a join may go through: the request's
// server_name (and via) values, then the room id's own server.
func joinServers(r *http.Request, room string, more []string) []string {
	out := append(r.URL.Query()["server_name"], r.URL.Query()["via"]...)
	out = append(out, more...)
	if _, server, ok := strings.Cut(room, ":"); ok {
		out = append(out, server)
	}
	return out
}

// remoteError is the client's answer for a failed call to another server:
// an actor's error keeps its meaning (a room's refusal is 403), anything
// else is the other server's failure.
func remoteError(err error) error {
	var we *wire.Error
	if errors.As(err, &we) {
		return err
	}
	return errorf(http.StatusBadGateway, "M_UNKNOWN", "Another server refused or could not be reached: "+err.Error())
}

// isTimeout reports whether err is a network timeout (a connection or a
// TLS handshake that took too long).
func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}
