package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"

	"persona/internal/mxid"
	"persona/storage"
	"persona/wire"
)

// Every local event of a room goes to every other server with joined
// members, through that server's outbox actor, by the delivery rule of
// profile updates: the room sends a destination the events after what it
// acknowledged (OutboundPDUs, signed), the outbox queues them durably and
// acknowledges cumulatively by position, and the room resends what is not
// acknowledged when it is activated again (the room's wake mark brings it
// back after a restart). The room keeps per destination the last position
// acknowledged (its "ob" record): a server that joins starts after its
// join, one that leaves gets the events up to its leave.

// KindOutbox is the kind of the federation outbox actors, one per
// destination server.
const KindOutbox = "outbox"

// outboundState is the room's "ob" record: per destination, the last
// position its outbox acknowledged.
type outboundState map[string]uint64

// servers are the servers other than this one with joined members,
// worked out again after a member event (remote is nil until then).
func (r *room) servers() []string {
	if r.remote != nil {
		return *r.remote
	}
	seen := map[string]bool{}
	add := func(user string) {
		if s := mxid.ServerOf(user); s != "" && s != r.h.cfg.ServerName {
			seen[s] = true
		}
	}
	for sk, ev := range r.state {
		if sk.typ == "m.room.member" && membershipOf(ev) == "join" {
			add(sk.key)
		}
	}
	for user, m := range r.unreadMembers {
		if m.membership == joined {
			add(user)
		}
	}
	list := slices.Sorted(maps.Keys(seen))
	r.remote = &list
	return list
}

// noteOutbound records in b, for an event just appended, which servers
// are owed it, and keeps it to send once durable: every server with joined
// members, and for a member event the target's server (a remote user who
// leaves or is kicked learns it). A server new to the room starts at this
// event; a remote user's join starts its server after the join.
func (r *room) noteOutbound(b *storage.Batch, ev *evRecord) {
	if ev.Stripped || r.meta.InvitedOnly {
		return
	}
	if ev.PDU != nil {
		b.Set(eventRoomKey(r.part, ev.ID), []byte(r.id))
	}
	if ev.PDU != nil && !ev.Relay { // another server's event: its origin sends it
		if ev.Type == "m.room.member" && ev.StateKey != nil && membershipOf(ev) == "join" {
			if s := mxid.ServerOf(*ev.StateKey); s != r.h.cfg.ServerName {
				if r.out == nil {
					r.out = outboundState{}
				}
				if _, ok := r.out[s]; !ok {
					r.out[s] = ev.Pos
					b.Set(r.key("ob"), mustJSON(r.out))
				}
			}
		}
		return
	}
	dests := r.servers()
	if ev.Type == "m.room.member" && ev.StateKey != nil {
		if s := mxid.ServerOf(*ev.StateKey); s != r.h.cfg.ServerName && !slices.Contains(dests, s) {
			dests = append(dests, s)
		}
	}
	if ev.Relay { // not back to where it came from
		dests = slices.DeleteFunc(slices.Clone(dests), func(d string) bool { return d == mxid.ServerOf(ev.Sender) })
	}
	if len(dests) == 0 {
		return
	}
	if r.out == nil {
		r.out = outboundState{}
	}
	for _, d := range dests {
		if _, ok := r.out[d]; !ok {
			r.out[d] = ev.Pos - 1
			b.Set(r.key("ob"), mustJSON(r.out))
		}
	}
	b.Set(r.wakeKey(), nil)
	if ev.PDU == nil {
		b.Set(eventRoomKey(r.part, ev.ID), []byte(r.id))
	}
	r.outgoing = append(r.outgoing, outgoing{ev, dests})
}

// eventRoomKey indexes the room of an event other servers know of (one
// that came from or went to another server), in the room's partition, so
// that the room's batch that appends the event writes it too: a peer
// asks for it by id alone.
func eventRoomKey(partition int, id string) []byte {
	return storage.Key("p", partitionName(partition), "fe", id)
}

// legacyEventRoomKey is where the index was kept before it moved into
// the rooms' partitions; stores written then still hold it.
func legacyEventRoomKey(id string) []byte { return storage.Key("fe", id) }

// RoomOfEvent is the room of an event other servers know of, or
// storage.ErrNotFound. It looks in every partition, the event's room
// being unknown.
func (h *Service) RoomOfEvent(id string) (string, error) {
	for p := range h.rt.Partitions() {
		v, err := h.store.Get(eventRoomKey(p, id))
		if !errors.Is(err, storage.ErrNotFound) {
			return string(v), err
		}
	}
	v, err := h.store.Get(legacyEventRoomKey(id))
	return string(v), err
}

// outgoing is a local event on its way to other servers.
type outgoing struct {
	ev    *evRecord
	dests []string
}

// sendOutgoing hands durable events to their destinations' outboxes;
// background says no client waits on them (a profile's fan-out).
func (r *room) sendOutgoing(evs []outgoing, background bool) {
	msgs := map[string]*wire.OutboundPDUs{}
	for _, o := range evs {
		j, err := r.signedPDU(o.ev)
		if err != nil {
			r.h.log.Error("room cannot sign an event", "room", r.id, "event", o.ev.ID, "err", err)
			continue // sent again from storage at the room's next activation
		}
		for _, d := range o.dests {
			m := msgs[d]
			if m == nil {
				m = &wire.OutboundPDUs{Destination: d, RoomId: r.id, Background: background}
				msgs[d] = m
			}
			m.Pdus = append(m.Pdus, &wire.OutboundPDU{Pos: o.ev.Pos, Json: j})
		}
	}
	for d, m := range msgs {
		r.h.rt.Send(KindOutbox, d, m)
	}
}

// resendOutbound hands each destination's outbox, at activation, the local
// and relayed events after what it acknowledged; a destination owed
// nothing is caught up to the room's last event.
func (r *room) resendOutbound() {
	defer r.endRequest() // rebuilding events read the state history
	for dest, acked := range r.out {
		if acked+1 >= r.durable {
			continue
		}
		owed, err := r.sendAfter(dest, acked)
		if err != nil {
			r.h.log.Error("room cannot read events for a destination", "room", r.id, "destination", dest, "err", err)
			continue
		}
		if !owed {
			r.out[dest] = r.durable - 1
			var b storage.Batch
			b.Set(r.key("ob"), mustJSON(r.out))
			r.settle(&b)
			b.Fence(r.part, r.fence)
			r.h.store.Commit(&b, func(error) {}) // lost: the next activation finds the same
		}
	}
}

// outboundBatch is the most events one OutboundPDUs carries.
const outboundBatch = 200

// sendAfter sends dest the room's local and relayed events after position
// acked that it is owed, as background, and reports whether there were
// any.
func (r *room) sendAfter(dest string, acked uint64) (owed bool, err error) {
	msg := &wire.OutboundPDUs{Destination: dest, RoomId: r.id, Background: true}
	flush := func() {
		if len(msg.Pdus) > 0 {
			r.h.rt.Send(KindOutbox, dest, msg)
			msg = &wire.OutboundPDUs{Destination: dest, RoomId: r.id, Background: true}
		}
	}
	err = r.h.store.Scan(r.key("ev", ""), r.key("ev", storage.Uint64(acked+1)), func(k, v []byte) error {
		pos := storage.ParseUint64(k)
		if pos >= r.durable {
			return storage.ErrStopScan
		}
		ev := new(evRecord)
		if err := json.Unmarshal(v, ev); err != nil {
			return fmt.Errorf("decode event %d: %w", pos, err)
		}
		if ev.PDU != nil && (!ev.Relay || mxid.ServerOf(ev.Sender) == dest) || !r.owed(dest, ev) {
			return nil
		}
		j, err := r.signedPDU(ev)
		if err != nil {
			return err
		}
		owed = true
		msg.Pdus = append(msg.Pdus, &wire.OutboundPDU{Pos: pos, Json: j})
		if len(msg.Pdus) == outboundBatch {
			flush()
		}
		return nil
	})
	flush()
	return owed, err
}

// owed reports whether dest was owed a past local event: it was when one
// of its users was joined after it, or the event is about one of them.
func (r *room) owed(dest string, ev *evRecord) bool {
	if ev.Type == "m.room.member" && ev.StateKey != nil && mxid.ServerOf(*ev.StateKey) == dest {
		return true
	}
	users := slices.Collect(maps.Keys(r.unreadMembers))
	for sk := range r.state {
		if sk.typ == "m.room.member" {
			users = append(users, sk.key)
		}
	}
	for _, u := range users {
		if mxid.ServerOf(u) != dest {
			continue
		}
		if _, err := r.readMember(u); err != nil { // a member load left unread is not in r.state yet
			r.h.log.Error("room cannot read a member", "room", r.id, "user", u, "err", err)
			continue
		}
		if r.membershipAt(u, ev.Pos) == "join" {
			return true
		}
	}
	return false
}

// outboundAcked records a destination's cumulative ack.
func (r *room) outboundAcked(m *wire.OutboundAck) {
	if acked, ok := r.out[m.Destination]; !ok || m.Pos <= acked {
		return
	}
	r.out[m.Destination] = m.Pos
	var b storage.Batch
	b.Set(r.key("ob"), mustJSON(r.out))
	r.settle(&b)
	b.Fence(r.part, r.fence)
	r.h.store.Commit(&b, func(error) {}) // lost: the outbox acknowledges a resend again
}

// outboundPending reports whether a destination may be owed events: its
// acknowledgement is behind the room's last event.
func (r *room) outboundPending() bool {
	for _, acked := range r.out {
		if acked+1 < r.meta.NextPos {
			return true
		}
	}
	return false
}

// decodeOutbound reads the "ob" record.
func decodeOutbound(v []byte) (outboundState, error) {
	out := outboundState{}
	if err := json.NewDecoder(bytes.NewReader(v)).Decode(&out); err != nil {
		return nil, fmt.Errorf("decode outbound record: %w", err)
	}
	return out, nil
}
