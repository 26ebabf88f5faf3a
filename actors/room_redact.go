package actors

import (
	"encoding/json"
	"errors"
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib"

	"persona/internal/mxid"
	"persona/internal/pdu"
	"persona/storage"
	"persona/wire"
)

// Redactions. An m.room.redaction names an event of the room (redacts: at
// the top level before room version 11, in the content from 11 on). Once
// it applies, the room holds that event as the room version's redaction
// algorithm leaves it, in the batch that appends the redaction, and every
// read serves that form: clients get it with unsigned.redacted_because,
// other servers its PDU redacted with its hashes and signatures, so its id
// stays. A local event keeps its fields with the content kept and the
// content hash it was built with (Hash), from which pdu.Redacted rebuilds
// it; a remote one keeps its PDU redacted. A redacted state event stays in
// the state with its redacted content, and the event that replaced it
// shows that content as its prev_content.
//
// A redaction applies when its sender's server is the redacted event's
// sender's, or its sender has the power level "redact"; a client's was
// checked already (mayRedact). One of an event the room does not hold yet
// is kept under dr/<event id>, and applied when the event comes.

// awaited is a redaction kept until the event it redacts comes: its id and
// sender.
type awaited struct {
	ID     string `json:"id"`
	Sender string `json:"u"`
}

// redactEvent appends a client's redaction of m.EventId. A repeated
// transaction gets the first redaction's id.
func (r *room) redactEvent(ctx actor.Context, m *wire.RedactEvent) {
	if m.TxnId != "" {
		if id, err := r.h.store.Get(r.txnKey(true, m.Sender, m.DeviceId, m.TxnId)); err == nil {
			ctx.Respond(&wire.SendReply{EventId: string(id)})
			return
		}
	}
	if r.membership(m.Sender) != "join" {
		ctx.Respond(&wire.SendReply{Error: forbidden("You are not joined to this room.")})
		return
	}
	if e := r.mayRedact(m.Sender, m.EventId); e != nil {
		ctx.Respond(&wire.SendReply{Error: e})
		return
	}
	ev := &evRecord{Type: "m.room.redaction", Sender: m.Sender, Content: m.ContentJson, Redacts: m.EventId, Txn: m.TxnId, Device: m.DeviceId}
	var b storage.Batch
	if err := r.append(&b, ev); err != nil {
		ctx.Respond(&wire.SendReply{Error: appendError(err)})
		return
	}
	r.commit(ctx, &b, &wire.SendReply{EventId: ev.ID}, nil)
}

// mayRedact refuses a redaction by sender of the event id unless sender
// may send redactions and the event is its own or sender has the power
// level "redact", which an event the room does not hold needs. A room's
// create event and server ACL are never redacted (as Synapse refuses):
// the first is the room, and redacting the second would open the room to
// every server.
func (r *room) mayRedact(sender, id string) *wire.Error {
	level := r.powerLevel(sender)
	if level < r.required("", "m.room.redaction", false) {
		return forbidden("Your power level is too low to send redactions.")
	}
	mighty := level >= r.required("redact", "", false)
	target := r.redactionTarget(id)
	switch {
	case target == nil && !mighty:
		return notFound(wire.Error_EVENT, "Event not found.")
	case target == nil:
		return nil
	case target.StateKey != nil && *target.StateKey == "" && target.Type == "m.room.create":
		return forbidden("A room's create event cannot be redacted.")
	case target.StateKey != nil && *target.StateKey == "" && target.Type == "m.room.server_acl":
		return forbidden("A room's server ACL cannot be redacted.")
	case target.Sender != sender && !mighty:
		return forbidden("Your power level is too low to redact another user's event.")
	}
	return nil
}

// redactionTarget is the event id of the room, read from storage or, on
// its way there, from memory; nil when the room holds none.
func (r *room) redactionTarget(id string) *evRecord {
	if ev := r.arriving[id]; ev != nil {
		return ev
	}
	ev := r.eventByID(id)
	if ev == nil || ev.Pos >= r.meta.NextPos || ev.Stripped {
		return nil
	}
	return ev
}

// redactionApplies reports whether a redaction sent by sender applies to
// target.
func (r *room) redactionApplies(sender string, target *evRecord) bool {
	return mxid.ServerOf(sender) == mxid.ServerOf(target.Sender) || r.powerLevel(sender) >= r.required("redact", "", false)
}

// applyRedaction redacts in b the event that by, a redaction just
// appended, names, when it applies, or keeps by until that event comes.
func (r *room) applyRedaction(b *storage.Batch, by *evRecord) error {
	id := by.Redacts
	if id == "" || id == by.ID {
		return nil
	}
	target := r.redactionTarget(id)
	if target == nil {
		var list []awaited
		raw, err := r.h.store.Get(r.key("dr", id))
		switch {
		case err == nil:
			if err := json.Unmarshal(raw, &list); err != nil {
				return fmt.Errorf("decode the redactions awaiting %s: %w", id, err)
			}
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
		b.Set(r.key("dr", id), mustJSON(append(list, awaited{by.ID, by.Sender})))
		return nil
	}
	if target.RedactedBy != "" || !r.redactionApplies(by.Sender, target) {
		return nil
	}
	if err := r.redactRecord(target, by.ID); err != nil {
		return err
	}
	b.Set(r.key("ev", storage.Uint64(target.Pos)), r.encodeEvent(target))
	return r.redactInState(b, target)
}

// redactIfAwaited redacts ev, a remote event about to be appended, when a
// redaction kept for it applies, and drops what was kept.
func (r *room) redactIfAwaited(b *storage.Batch, ev *evRecord) error {
	raw, err := r.h.store.Get(r.key("dr", ev.ID))
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	b.Delete(r.key("dr", ev.ID))
	var list []awaited
	if err := json.Unmarshal(raw, &list); err != nil {
		return fmt.Errorf("decode the redactions awaiting %s: %w", ev.ID, err)
	}
	for _, a := range list {
		if r.redactionApplies(a.Sender, ev) {
			return r.redactRecord(ev, a.ID)
		}
	}
	return nil
}

// redactRecord turns ev into its redacted form: the content the room
// version keeps, and for a remote event its PDU redacted, for a local one
// the content hash it was built with.
func (r *room) redactRecord(ev *evRecord, by string) error {
	if ev.PDU != nil {
		verImpl, err := gomatrixserverlib.GetRoomVersion(gomatrixserverlib.RoomVersion(r.meta.Version))
		if err != nil {
			return err
		}
		raw, err := verImpl.RedactEventJSON(ev.PDU)
		if err != nil {
			return fmt.Errorf("redact %s: %w", ev.ID, err)
		}
		if raw, err = gomatrixserverlib.CanonicalJSON(raw); err != nil {
			return fmt.Errorf("redact %s: %w", ev.ID, err)
		}
		var kept struct {
			Content json.RawMessage `json:"content"`
		}
		if err := json.Unmarshal(raw, &kept); err != nil {
			return fmt.Errorf("redact %s: %w", ev.ID, err)
		}
		ev.PDU, ev.Content = raw, kept.Content
	} else {
		e, err := r.pduOf(ev)
		if err != nil {
			return err
		}
		h, err := pdu.Hash(e, r.meta.Version)
		if err != nil {
			return err
		}
		if h.EventID != ev.ID {
			return fmt.Errorf("event %s rebuilds as %s", ev.ID, h.EventID)
		}
		kept, err := pdu.RedactContent(r.meta.Version, ev.Type, ev.Content)
		if err != nil {
			return err
		}
		ev.Content, ev.Hash = kept, h.Content[:]
	}
	ev.RedactedBy = by
	delete(r.parsed, ev.ID) // parsed before the redaction
	return nil
}

// redactInState gives the room's memory of ev, a state event redacted
// (redactRecord), its redacted form, and the event that replaced it its
// redacted content as prev_content, in memory and in b.
func (r *room) redactInState(b *storage.Batch, ev *evRecord) error {
	if ev.StateKey == nil {
		return nil
	}
	found := false
	for x := r.state[stateKey{ev.Type, *ev.StateKey}]; x != nil; x = x.prev {
		switch {
		case x == ev:
		case x.ID == ev.ID:
			x.Content, x.PDU, x.Hash, x.Redacts, x.RedactedBy = ev.Content, ev.PDU, ev.Hash, ev.Redacts, ev.RedactedBy
		case x.PrevID == ev.ID:
			x.Prev, found = ev.Content, true
			b.Set(r.key("ev", storage.Uint64(x.Pos)), r.encodeEvent(x))
		}
	}
	if found {
		return nil
	}
	next := uint64(0)
	run := r.stateRun(ev.Type, *ev.StateKey)
	err := r.h.store.Scan(run, r.stateIndexKey(ev.Type, *ev.StateKey, ev.Pos+1), func(k, _ []byte) error {
		next = storage.ParseUint64(k)
		return storage.ErrStopScan
	})
	if err != nil && !errors.Is(err, storage.ErrStopScan) {
		return err
	}
	if next == 0 {
		return nil
	}
	x, err := r.readEvent(next)
	if err != nil {
		return err
	}
	if x.PrevID == ev.ID {
		x.Prev = ev.Content
		b.Set(r.key("ev", storage.Uint64(x.Pos)), r.encodeEvent(x))
	}
	return nil
}

// redactsOf is the event a remote event redacts: for an m.room.redaction
// the top-level redacts before room version 11, the content's from 11 on.
func redactsOf(ev gomatrixserverlib.PDU) string {
	if ev.Type() != "m.room.redaction" {
		return ""
	}
	if !versionAtLeast(string(ev.Version()), 11) {
		return ev.Redacts()
	}
	var c struct {
		Redacts string `json:"redacts"`
	}
	_ = json.Unmarshal(ev.Content(), &c)
	return c.Redacts
}

// txnKey is the key of the event a client's transaction sent: the
// transactions of /redact apart from those of /send, the spec scoping
// them by endpoint.
func (r *room) txnKey(redaction bool, sender, device, txn string) []byte {
	ns := "txn"
	if redaction {
		ns = "txr"
	}
	return r.key(ns, sender+"\x00"+device+"\x00"+txn)
}

// clientRedaction adds to a client event out (of ev) what redactions
// change: a redacted event's redacted_because, and a redaction's redacts
// at the top level and in its content, where clients of every room
// version look for it.
func (r *room) clientRedaction(ev *evRecord, out, unsigned map[string]any, because bool) {
	if ev.RedactedBy != "" && because {
		if by := r.eventByID(ev.RedactedBy); by != nil {
			unsigned["redacted_because"] = r.clientFields(by, "", "", false)
		}
	}
	if ev.Type != "m.room.redaction" || (ev.RedactedBy != "" && !versionAtLeast(r.meta.Version, 11)) {
		return
	}
	id := ev.Redacts
	if id == "" {
		return
	}
	out["redacts"] = id
	var c map[string]json.RawMessage
	if json.Unmarshal(ev.Content, &c) == nil && c != nil && c["redacts"] == nil {
		c["redacts"] = mustJSON(id)
		out["content"] = json.RawMessage(mustJSON(c))
	}
}
