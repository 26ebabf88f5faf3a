package actors

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"persona/internal/pdu"
	"persona/wire"
)

// A room's events are PDUs: each names the events it follows
// (prev_events, the room's forward extremities), the state that allows it
// (auth_events) and its depth, and its id is the reference hash of the
// event, redacted and unsigned. A local event is hashed when the room
// appends it and signed only when it leaves the server (signPDU): a room
// whose members are all local never pays for a signature.

// seal fills a local event's DAG fields (prev_events, auth_events, depth),
// makes its content canonical and gives it its reference-hash id. The
// event must not be in r.state yet, and a member event's previous member
// event must be (readMember): auth_events names it.
func (r *room) seal(ev *evRecord) error {
	content, err := pdu.Canonical(ev.Content)
	if err != nil {
		return fmt.Errorf("%w: %v", errBadContent, err)
	}
	ev.Content = content
	if ev.Type == "m.room.create" && ev.StateKey != nil && *ev.StateKey == "" {
		ev.PrevEvents, ev.AuthEvents, ev.Depth = []string{}, []string{}, 1
	} else {
		ev.PrevEvents, ev.Depth = r.extremities(), max(r.tip.depth, r.meta.Depth)+1
		ev.followsLast = len(r.meta.Extremities) == 0
		ev.AuthEvents = r.authEvents(ev)
	}
	e, err := r.pduOf(ev)
	if err != nil {
		return err
	}
	h, err := pdu.Hash(e, r.meta.Version)
	if err != nil {
		return fmt.Errorf("hash event: %w", err)
	}
	ev.ID = h.EventID
	return nil
}

// errBadContent is seal's error for content that is not canonical JSON
// (floats, integers beyond 2^53, duplicate keys...).
var errBadContent = errors.New("event content cannot be canonical JSON")

// appendError is the answer to a write whose event could not be appended.
func appendError(err error) *wire.Error {
	if errors.Is(err, errBadContent) {
		return malformed(wire.Error_EVENT, err.Error())
	}
	return internal(err.Error())
}

// pduOf is a local event in the PDU builder's terms.
func (r *room) pduOf(ev *evRecord) (*pdu.Event, error) {
	room := r.id
	if ev.Type == "m.room.create" && ev.StateKey != nil && *ev.StateKey == "" && versionAtLeast(r.meta.Version, 12) {
		room = "" // the room id is the create event's hash
	}
	prev, err := r.prevOf(ev)
	if err != nil {
		return nil, err
	}
	auth, err := r.authOf(ev)
	if err != nil {
		return nil, err
	}
	return &pdu.Event{
		RoomID: room, Sender: ev.Sender, Origin: r.h.cfg.ServerName, Type: ev.Type, StateKey: ev.StateKey,
		Content: ev.Content, Redacts: ev.Redacts, PrevEvents: prev, AuthEvents: auth,
		Depth: ev.Depth, OriginServerTS: ev.TS,
	}, nil
}

// A stored event leaves out what it can be rebuilt from (encodeEvent):
// a local event's auth_events are the spec's selection from the state
// before it, which the state index keeps, and its prev_events, when it
// followed the room's last event alone, that event; a remote event's are
// in its PDU. prevOf and authOf give them back. They read what a PDU
// needs (the event rebuilt and signed when it leaves, a peer's read),
// never what the fan-out of a rename needs, and each rebuilt event's id is
// checked against the one it was given (signedPDU), so a rebuild that
// differed would be refused, not sent.

// encodeEvent is ev as stored.
func (r *room) encodeEvent(ev *evRecord) []byte {
	if ev.Stripped {
		return mustJSON(ev)
	}
	stored := *ev
	if ev.PDU != nil || ev.followsLast || ev.Pos == 0 {
		stored.PrevEvents = nil
	}
	stored.AuthEvents = nil
	return mustJSON(&stored)
}

// prevOf is ev's prev_events.
func (r *room) prevOf(ev *evRecord) ([]string, error) {
	switch {
	case ev.PrevEvents != nil || ev.Stripped:
		return ev.PrevEvents, nil
	case ev.PDU != nil:
		dag, err := dagOf(ev.PDU)
		return dag.Prev, err
	case ev.Pos == 0:
		return []string{}, nil
	}
	last, err := r.readEvent(ev.Pos - 1)
	if err != nil {
		return nil, err
	}
	ev.PrevEvents = []string{last.ID}
	return ev.PrevEvents, nil
}

// authOf is ev's auth_events.
func (r *room) authOf(ev *evRecord) ([]string, error) {
	switch {
	case ev.AuthEvents != nil || ev.Stripped:
		return ev.AuthEvents, nil
	case ev.PDU != nil:
		dag, err := dagOf(ev.PDU)
		return dag.Auth, err
	case ev.Type == "m.room.create" && ev.StateKey != nil && *ev.StateKey == "":
		return []string{}, nil
	}
	past := r.pastState()
	id := func(typ, key string) (string, error) {
		e, err := past.event(typ, key, ev.Pos-1)
		if e == nil || err != nil {
			return "", err
		}
		return e.ID, nil
	}
	var want [][2]string
	if !versionAtLeast(r.meta.Version, 12) {
		want = append(want, [2]string{"m.room.create", ""})
	}
	want = append(want, [2]string{"m.room.power_levels", ""}, [2]string{"m.room.member", ev.Sender})
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		want = append(want, [2]string{"m.room.member", *ev.StateKey})
		switch membershipOf(ev) {
		case "join", "invite", "knock":
			want = append(want, [2]string{"m.room.join_rules", ""})
		}
	}
	ids := make([]string, 0, len(want))
	for _, w := range want {
		x, err := id(w[0], w[1])
		if err != nil {
			return nil, err
		}
		if x != "" && !slices.Contains(ids, x) {
			ids = append(ids, x)
		}
	}
	ev.AuthEvents = ids
	return ids, nil
}

// dagOf reads a PDU's prev_events and auth_events.
func dagOf(raw []byte) (d struct {
	Prev []string `json:"prev_events"`
	Auth []string `json:"auth_events"`
}, err error) {
	err = json.Unmarshal(raw, &d)
	return d, err
}

// extremities are the room's forward extremities: the events a new event
// follows. While the room's DAG is a line they are its last event.
func (r *room) extremities() []string {
	if len(r.meta.Extremities) > 0 {
		return r.meta.Extremities
	}
	if r.tip.id == "" {
		return []string{}
	}
	return []string{r.tip.id}
}

// authEvents lists the state events that allow ev (the spec's "auth events
// selection"): the create event, the power levels, the sender's member
// event, and for a member event the target's, and the join rules when the
// target joins, is invited or knocks.
func (r *room) authEvents(ev *evRecord) []string {
	ids := make([]string, 0, 5)
	add := func(id string) {
		if id != "" && !slices.Contains(ids, id) {
			ids = append(ids, id)
		}
	}
	if !versionAtLeast(r.meta.Version, 12) { // from v12 the room id names the create event
		add(r.meta.Create)
	}
	add(r.meta.Power)
	add(r.currentID("m.room.member", ev.Sender))
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		add(r.currentID("m.room.member", *ev.StateKey))
		switch membershipOf(ev) {
		case "join", "invite", "knock":
			add(r.meta.JoinRules)
		}
	}
	return ids
}

// currentID is the id of the current member event of user, or "". The
// caller has read it into r.state (readMember).
func (r *room) currentID(typ, key string) string {
	if ev := r.state[stateKey{typ, key}]; ev != nil {
		return ev.ID
	}
	return ""
}

// noteAuthState keeps the ids of the state events every event's auth
// names in the room's header, so that a room that only applies renames
// never reads them; it reports whether the header changed.
func (r *room) noteAuthState(ev *evRecord) bool {
	if ev.StateKey == nil || *ev.StateKey != "" {
		return false
	}
	switch ev.Type {
	case "m.room.create":
		r.meta.Create = ev.ID
	case "m.room.power_levels":
		r.meta.Power = ev.ID
	case "m.room.join_rules":
		r.meta.JoinRules = ev.ID
	default:
		return false
	}
	return true
}

// signedPDU is ev as other servers get it: a remote event as it came (or
// as its redaction left it), a local one rebuilt from its fields and
// signed with the server's key.
func (r *room) signedPDU(ev *evRecord) ([]byte, error) {
	if ev.PDU != nil {
		return ev.PDU, nil
	}
	s := r.h.opts.Signing
	return r.localPDU(ev, s.KeyID, s.Key)
}

// unsignedPDU is a local event's PDU without signatures, for the room's
// own use.
func (r *room) unsignedPDU(ev *evRecord) ([]byte, error) { return r.localPDU(ev, "", nil) }

// localPDU rebuilds a local event's PDU, redacted when the event was
// (from the content hash it was built with), signed when key is not nil;
// an event that rebuilds with another id is an error.
func (r *room) localPDU(ev *evRecord, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	e, err := r.pduOf(ev)
	if err != nil {
		return nil, err
	}
	if len(ev.Hash) > 0 {
		if len(ev.Hash) != sha256.Size {
			return nil, fmt.Errorf("event %s: content hash of %d bytes", ev.ID, len(ev.Hash))
		}
		id, j, err := pdu.Redacted(e, r.meta.Version, [sha256.Size]byte(ev.Hash), keyID, key)
		if err == nil && id != ev.ID {
			err = fmt.Errorf("event %s rebuilds as %s", ev.ID, id)
		}
		return j, err
	}
	h, err := pdu.Hash(e, r.meta.Version)
	if err != nil {
		return nil, err
	}
	if h.EventID != ev.ID {
		return nil, fmt.Errorf("event %s rebuilds as %s", ev.ID, h.EventID)
	}
	return pdu.JSON(e, r.meta.Version, h, keyID, key)
}

// getPDUs answers the events asked for that the room holds, as PDUs.
func (r *room) getPDUs(m *wire.GetPDUs) *wire.PDUsReply {
	out := &wire.PDUsReply{}
	for _, id := range m.EventIds {
		ev := r.eventByID(id)
		if ev == nil || ev.Pos >= r.durable {
			continue
		}
		j, err := r.signedPDU(ev)
		if err != nil {
			r.h.log.Error("room cannot rebuild an event", "room", r.id, "event", id, "err", err)
			return &wire.PDUsReply{Error: internal("Cannot rebuild an event.")}
		}
		out.Pdus = append(out.Pdus, j)
	}
	return out
}

// authRefs are the events ev's auth chain goes on with: its auth_events,
// and from room version 12, where the room id names the create event
// instead, the create event.
func (r *room) authRefs(ev *evRecord) []string {
	auth, err := r.authOf(ev)
	if err != nil {
		r.h.log.Error("room cannot rebuild an event's auth events", "room", r.id, "event", ev.ID, "err", err)
	}
	if !versionAtLeast(r.meta.Version, 12) || r.meta.Create == "" || ev.ID == r.meta.Create {
		return auth
	}
	return append(slices.Clone(auth), r.meta.Create)
}
