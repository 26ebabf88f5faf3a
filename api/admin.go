package api

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"persona/actors"
	"persona/wire"
)

// SecretHeader carries the registration shared secret to admin endpoints, so
// that the persona CLI on the node's machine needs no access token.
const SecretHeader = "X-Persona-Shared-Secret"

func (s *Server) adminRoutes() {
	s.route("GET /_persona/admin/v1/users/{userId}/pending", s.admin(s.pending))
	s.route("GET /_persona/admin/v1/federation/destinations", s.admin(s.destinations))
	s.route("GET /_persona/admin/v1/cluster/members", s.admin(s.clusterMembers))
}

// Outbox is what the admin API reads of the federation outbox; a node
// without federation has none.
type Outbox interface {
	// Destinations returns the state of every destination server the
	// outbox holds anything of.
	Destinations(ctx context.Context) ([]*wire.DestinationState, error)
}

// destinations shows each destination of the federation outbox: what is
// queued for it and since when, the transaction in flight, the failures in
// a row and when the next attempt is due, what it took and what was
// dropped. Times are unix milliseconds, ages and waits milliseconds from
// now as this server sees it (0 when there is none).
func (s *Server) destinations(r *http.Request) (any, error) {
	if s.outbox == nil {
		return nil, notFound("This node does not federate: it has no outbox.")
	}
	dests, err := s.outbox.Destinations(r.Context())
	if err != nil {
		s.log.Error("read the outbox's destinations", "err", err)
		return nil, errInternal
	}
	now := time.Now().UnixMilli()
	since := func(ms int64) int64 { // how long ago ms was; 0 for none
		if ms == 0 {
			return 0
		}
		return max(0, now-ms)
	}
	until := func(ms int64) int64 { // how long until ms; 0 for none or past
		if ms == 0 {
			return 0
		}
		return max(0, ms-now)
	}
	out := make([]map[string]any, 0, len(dests))
	for _, d := range dests {
		out = append(out, map[string]any{
			"destination":        d.Destination,
			"queued":             d.Queued,
			"oldest_queued_ts":   d.OldestQueuedMs,
			"oldest_age_ms":      since(d.OldestQueuedMs),
			"txn_in_flight":      d.TxnInFlight,
			"failures":           d.Failures,
			"next_attempt_ts":    d.NextAttemptMs,
			"next_attempt_in_ms": until(d.NextAttemptMs),
			"delivered_txns":     d.DeliveredTxns,
			"dropped_pdus":       d.DroppedPdus,
		})
	}
	return map[string]any{"now_ts": now, "destinations": out}, nil
}

// admin wraps a handler for server admins: an admin's access token, or the
// shared secret in SecretHeader.
func (s *Server) admin(h handler) handler {
	return func(r *http.Request) (any, error) {
		if sec := r.Header.Get(SecretHeader); sec != "" {
			if s.secret == "" || subtle.ConstantTimeCompare([]byte(sec), []byte(s.secret)) != 1 {
				return nil, forbidden("Wrong shared secret.")
			}
			return h(r)
		}
		sess, err := s.authenticate(r)
		if err != nil {
			return nil, err
		}
		if !sess.admin {
			return nil, forbidden("You are not a server admin.")
		}
		return h(r)
	}
}

// pending shows the rooms that have not yet acknowledged a user's latest
// profile version: its propagation in progress (how many, and the first
// ?limit= of them, default 100). The user must be a local
// user that exists: anyone else has no propagation to show, and answering
// "0 rooms behind" for them would hide a typo.
func (s *Server) pending(r *http.Request) (any, error) {
	user, err := s.localUserParam(r)
	if err != nil {
		return nil, err
	}
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 || n > 10000 {
			return nil, invalidParam("limit must be a number from 0 to 10000.")
		}
		limit = n
	}
	p, err := askAs[*wire.PendingReply](r.Context(), s, actors.KindUser, user, &wire.GetPending{UserId: user, Limit: uint32(limit)})
	if err != nil {
		return nil, err
	}
	rooms := make([]map[string]any, 0, len(p.Rooms))
	for _, room := range p.Rooms {
		rooms = append(rooms, map[string]any{"room_id": room.RoomId, "acked_version": room.Acked, "in_flight": room.InFlight})
	}
	return map[string]any{"user_id": user, "version": p.Version, "pending": p.Behind, "rooms": rooms}, nil
}

// localUserParam is the {userId} of an admin request: a user of this server
// that exists.
func (s *Server) localUserParam(r *http.Request) (string, error) {
	user, err := userIDParam(r)
	if err != nil {
		return "", err
	}
	if _, server, _ := parseUserID(user); server != s.cfg.ServerName {
		return "", invalidParam(fmt.Sprintf("%s is not a user of this server (%s).", user, s.cfg.ServerName))
	}
	acct, err := askAs[*wire.Account](r.Context(), s, actors.KindUser, user, &wire.GetAccount{UserId: user})
	if err != nil {
		return "", err
	}
	if !acct.Exists {
		return "", notFound(fmt.Sprintf("User %s does not exist.", user))
	}
	return user, nil
}
