// Package pdu builds the PDUs of local room events, byte for byte as
// gomatrixserverlib's EventBuilder builds them, at the cost of canonical
// JSON and two sha256: Hash gives the content hash and the event ID (a
// reference hash), JSON the full event, signed only when asked, since an
// ed25519 signature is deterministic and needed only when an event leaves
// the server. It builds room versions 3 to 12; versions 1 and 2, whose
// event IDs the server makes up, are not built here. It imports no persona
// package and owns no state.
package pdu

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"unicode/utf8"
)

// Event holds the fields of a PDU persona builds.
type Event struct {
	// RoomID is the room's ID. A v12 create event has none: its room's ID
	// is RoomIDFor(its event ID).
	RoomID string
	// Sender is the user ID of the sender.
	Sender string
	// Type is the event type.
	Type string
	// StateKey is the state key of a state event, nil for other events.
	StateKey *string
	// Content is the content, a JSON object in canonical form (Canonical).
	Content []byte
	// Redacts is the event an m.room.redaction redacts: a top-level key
	// before room version 11, a key of the content from 11 on (the
	// content must not have one then).
	Redacts string
	// PrevEvents are the IDs of the events before this one.
	PrevEvents []string
	// AuthEvents are the IDs of the events that authorise this one; from
	// room version 12 without the create event.
	AuthEvents []string
	// Depth is the event's depth in the room's DAG.
	Depth int64
	// OriginServerTS is when the event was built, in Unix milliseconds.
	OriginServerTS int64
	// Origin is the name of the server that builds the event: every
	// version's PDU carries it, the event ID covers it before version 11,
	// and JSON signs in its name.
	Origin string
}

// Hashes are the hashes of an event: Hash computes them, JSON writes them.
type Hashes struct {
	// Content is the sha256 of the event without signatures, unsigned
	// and hashes: the PDU's hashes.sha256.
	Content [32]byte
	// EventID is the event's ID: "$" and the unpadded base64 (URL-safe
	// from version 4) of the sha256 of the redacted event with its
	// hashes, without signatures and unsigned.
	EventID string
}

// ErrUnsupportedVersion is returned for a room version this package does
// not build.
var ErrUnsupportedVersion = errors.New("pdu: unsupported room version")

// maxInt is the largest integer canonical JSON allows, 2^53-1.
const maxInt = 1<<53 - 1

// maxPDUBytes is the size of the largest PDU, signatures included.
const maxPDUBytes = 65536

// Versions returns the room versions this package builds.
func Versions() []string {
	return []string{"3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}
}

// RoomIDFor returns the ID of the room (version 12 on) whose create event
// has the ID createEventID: the same hash behind the sigil '!'. It returns
// "" for a string that is not an event ID.
func RoomIDFor(createEventID string) string {
	if len(createEventID) < 2 || createEventID[0] != '$' {
		return ""
	}
	return "!" + createEventID[1:]
}

// Hash computes the content hash and the event ID of e in room version v.
// e.Content must be canonical (Canonical). It returns an error for an
// unsupported version, for strings that are not UTF-8, for integers
// outside canonical JSON's range, and for a room ID that the event's kind
// must or must not have.
func Hash(e *Event, v string) (Hashes, error) {
	var h Hashes
	b, err := prepare(e, v)
	if err != nil {
		return h, err
	}
	buf := make([]byte, 0, 1024)
	buf, err = b.appendEvent(buf, formHashed, nil, nil)
	if err != nil {
		return h, err
	}
	h.Content = sha256.Sum256(buf)
	if buf, err = b.appendEvent(buf[:0], formRedacted, &h.Content, nil); err != nil {
		return h, err
	}
	sum := sha256.Sum256(buf)
	h.EventID = b.r.eventID(sum[:])
	return h, nil
}

// JSON returns the PDU of e in room version v with the hashes h (Hash's
// for the same event), signed in the name of e.Origin with key under keyID
// when key is not nil: the bytes gomatrixserverlib's EventBuilder.Build
// writes for the same fields. It returns an error where Hash does, for a
// key of the wrong size, and for a PDU larger than 65,536 bytes.
func JSON(e *Event, v string, h Hashes, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	b, err := prepare(e, v)
	if err != nil {
		return nil, err
	}
	var sig *signature
	if key != nil {
		redacted, err := b.appendEvent(make([]byte, 0, 1024), formRedacted, &h.Content, nil)
		if err != nil {
			return nil, err
		}
		if sig, err = sign(keyID, key, redacted); err != nil {
			return nil, err
		}
	}
	out, err := b.appendEvent(make([]byte, 0, len(b.content)+1024), formFull, &h.Content, sig)
	if err != nil {
		return nil, err
	}
	if len(out) > maxPDUBytes {
		return nil, fmt.Errorf("pdu: event of %d bytes, more than %d", len(out), maxPDUBytes)
	}
	return out, nil
}

// sign signs the redacted form of an event with key under keyID; it
// returns an error for a key of the wrong size or a key ID that is not
// UTF-8.
func sign(keyID string, key ed25519.PrivateKey, redacted []byte) (*signature, error) {
	if len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("pdu: signing key of %d bytes", len(key))
	}
	if !utf8.ValidString(keyID) {
		return nil, errors.New("pdu: key ID is not UTF-8")
	}
	return &signature{keyID: keyID, sig: ed25519.Sign(key, redacted)}, nil
}

// builder is an event checked for a room version, with the content the
// version puts in its PDU.
type builder struct {
	e       *Event
	r       *rules
	content []byte // e.Content, with redacts from version 11
}

// prepare checks e for room version v and works out its contents.
func prepare(e *Event, v string) (builder, error) {
	r := rulesFor(v)
	if r == nil {
		return builder{}, fmt.Errorf("%w %q", ErrUnsupportedVersion, v)
	}
	create := e.Type == "m.room.create" && e.StateKey != nil && *e.StateKey == ""
	switch {
	case create && r.createHasNoRoomID && e.RoomID != "":
		return builder{}, fmt.Errorf("pdu: a version %s create event has no room ID, got %q", v, e.RoomID)
	case e.RoomID == "" && !(create && r.createHasNoRoomID):
		return builder{}, errors.New("pdu: no room ID")
	}
	if err := checkStrings(e); err != nil {
		return builder{}, err
	}
	if e.Depth < -maxInt || e.Depth > maxInt {
		return builder{}, fmt.Errorf("pdu: depth %d outside canonical JSON's integers", e.Depth)
	}
	if e.OriginServerTS < -maxInt || e.OriginServerTS > maxInt {
		return builder{}, fmt.Errorf("pdu: origin_server_ts %d outside canonical JSON's integers", e.OriginServerTS)
	}
	if len(e.Content) < 2 || e.Content[0] != '{' || e.Content[len(e.Content)-1] != '}' {
		return builder{}, errNotCanonical
	}
	b := builder{e: e, r: r, content: e.Content}
	if e.Redacts != "" && r.redactsInContent {
		c, err := withRedacts(e.Content, e.Redacts)
		if err != nil {
			return builder{}, err
		}
		b.content = c
	}
	return b, nil
}

// checkStrings returns an error naming the first string field of e that
// is not UTF-8.
func checkStrings(e *Event) error {
	fields := [...]struct{ name, s string }{
		{"room_id", e.RoomID}, {"sender", e.Sender}, {"type", e.Type},
		{"redacts", e.Redacts}, {"origin", e.Origin},
	}
	for _, f := range fields {
		if !utf8.ValidString(f.s) {
			return fmt.Errorf("pdu: %s is not UTF-8", f.name)
		}
	}
	if e.StateKey != nil && !utf8.ValidString(*e.StateKey) {
		return errors.New("pdu: state_key is not UTF-8")
	}
	for _, ids := range [...][]string{e.PrevEvents, e.AuthEvents} {
		for _, id := range ids {
			if !utf8.ValidString(id) {
				return fmt.Errorf("pdu: event ID %q is not UTF-8", id)
			}
		}
	}
	return nil
}

// eventID returns the event ID of the reference hash sum.
func (r *rules) eventID(sum []byte) string {
	var buf [64]byte
	id := append(buf[:0], '$')
	return string(r.idEncoding.AppendEncode(id, sum))
}

// hashEncoding encodes content hashes and signatures.
var hashEncoding = base64.RawStdEncoding
