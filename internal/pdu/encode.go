package pdu

import "strconv"

// form is which of an event's three JSON forms appendEvent writes.
type form int

const (
	// formHashed is what the content hash covers: no hashes, no signatures.
	formHashed form = iota
	// formRedacted is what the event ID hashes and a signature signs: the
	// redacted event with its hashes.
	formRedacted
	// formFull is the PDU.
	formFull
)

// signature is a server's signature of an event.
type signature struct {
	keyID string
	sig   []byte
}

// appendEvent appends the form f of the event in canonical JSON, with
// hashes (formRedacted, formFull) and sig (formFull, when not nil); it
// returns an error if the content is not a canonical JSON object.
func (b *builder) appendEvent(dst []byte, f form, hashes *[32]byte, sig *signature) ([]byte, error) {
	e := b.e
	redacted := f == formRedacted
	// Keys in canonical order: auth_events, content, depth, hashes, origin,
	// origin_server_ts, prev_events, prev_state, redacts, room_id, sender,
	// signatures, state_key, type.
	dst = append(dst, `{"auth_events":`...)
	dst = appendIDs(dst, e.AuthEvents)
	dst = append(dst, `,"content":`...)
	if redacted {
		var err error
		if dst, err = appendRedacted(dst, b.content, b.r.keptContent(e.Type)); err != nil {
			return nil, err
		}
	} else {
		dst = append(dst, b.content...)
	}
	dst = append(dst, `,"depth":`...)
	dst = strconv.AppendInt(dst, e.Depth, 10)
	if f != formHashed {
		dst = append(dst, `,"hashes":{"sha256":"`...)
		dst = hashEncoding.AppendEncode(dst, hashes[:])
		dst = append(dst, `"}`...)
	}
	keepOrigin := !redacted || b.r.redactionKeepsOrigin
	if keepOrigin {
		dst = append(dst, `,"origin":`...)
		dst = appendString(dst, e.Origin)
	}
	dst = append(dst, `,"origin_server_ts":`...)
	dst = strconv.AppendInt(dst, e.OriginServerTS, 10)
	dst = append(dst, `,"prev_events":`...)
	dst = appendIDs(dst, e.PrevEvents)
	if e.StateKey != nil && keepOrigin {
		dst = append(dst, `,"prev_state":[]`...)
	}
	if e.Redacts != "" && !b.r.redactsInContent && !redacted {
		dst = append(dst, `,"redacts":`...)
		dst = appendString(dst, e.Redacts)
	}
	if e.RoomID != "" {
		dst = append(dst, `,"room_id":`...)
		dst = appendString(dst, e.RoomID)
	}
	dst = append(dst, `,"sender":`...)
	dst = appendString(dst, e.Sender)
	if sig != nil {
		dst = append(dst, `,"signatures":{`...)
		dst = appendString(dst, e.Origin)
		dst = append(dst, `:{`...)
		dst = appendString(dst, sig.keyID)
		dst = append(dst, `:"`...)
		dst = hashEncoding.AppendEncode(dst, sig.sig)
		dst = append(dst, `"}}`...)
	}
	if e.StateKey != nil {
		dst = append(dst, `,"state_key":`...)
		dst = appendString(dst, *e.StateKey)
	}
	dst = append(dst, `,"type":`...)
	dst = appendString(dst, e.Type)
	return append(dst, '}'), nil
}

// appendIDs appends ids as a JSON array of strings.
func appendIDs(dst []byte, ids []string) []byte {
	dst = append(dst, '[')
	for i, id := range ids {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendString(dst, id)
	}
	return append(dst, ']')
}

// appendString appends the UTF-8 string s as a canonical JSON string:
// '"' and '\' escaped, control characters escaped in their shortest form,
// everything else as it is.
func appendString(dst []byte, s string) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		dst = appendEscape(dst, rune(c))
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// appendEscape appends the canonical escape of '"', '\' or a control
// character c.
func appendEscape(dst []byte, c rune) []byte {
	const hex = "0123456789abcdef"
	switch c {
	case '"', '\\':
		return append(dst, '\\', byte(c))
	case '\b':
		return append(dst, '\\', 'b')
	case '\t':
		return append(dst, '\\', 't')
	case '\n':
		return append(dst, '\\', 'n')
	case '\f':
		return append(dst, '\\', 'f')
	case '\r':
		return append(dst, '\\', 'r')
	}
	return append(dst, '\\', 'u', '0', '0', hex[c>>4], hex[c&0xf])
}
