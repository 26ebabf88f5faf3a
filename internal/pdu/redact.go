package pdu

import (
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"
)

// RedactContent returns what room version v's redaction algorithm keeps of
// the content of an event of type typ; content is canonical (Canonical),
// and so is what it returns. Like Event.Content, content never holds the
// redacts of an m.room.redaction: from version 11 that key, which the
// algorithm keeps, is Event.Redacts.
func RedactContent(v, typ string, content []byte) ([]byte, error) {
	r := rulesFor(v)
	if r == nil {
		return nil, fmt.Errorf("%w %q", ErrUnsupportedVersion, v)
	}
	return appendRedacted(make([]byte, 0, len(content)), content, r.keptContent(typ))
}

// Redacted returns the event ID of e in room version v and its PDU as the
// version's redaction algorithm leaves it, what a server holds and serves
// once e is redacted: the bytes gomatrixserverlib's RedactEventJSON keeps
// of JSON's, in canonical JSON, signed in the name of e.Origin with key
// under keyID when key is not nil. contentHash is the content hash e was
// built with (Hash's Content): e.Content may be the content it was built
// with or what RedactContent kept of it, redaction keeping the same of
// both. It returns an error where JSON does.
func Redacted(e *Event, v string, contentHash [32]byte, keyID string, key ed25519.PrivateKey) (string, []byte, error) {
	b, err := prepare(e, v)
	if err != nil {
		return "", nil, err
	}
	redacted, err := b.appendEvent(make([]byte, 0, 1024), formRedacted, &contentHash, nil)
	if err != nil {
		return "", nil, err
	}
	sum := sha256.Sum256(redacted)
	id := b.r.eventID(sum[:])
	if key == nil {
		return id, redacted, nil
	}
	sig, err := sign(keyID, key, redacted)
	if err != nil {
		return "", nil, err
	}
	out, err := b.appendEvent(make([]byte, 0, len(redacted)+128), formRedacted, &contentHash, sig)
	return id, out, err
}

// errNotCanonical is returned for content that is not a canonical JSON
// object.
var errNotCanonical = errors.New("pdu: content is not a canonical JSON object")

// appendRedacted appends what redaction keeps of the canonical object
// content: k's keys (in content's order, which is canonical) or all of it.
func appendRedacted(dst, content []byte, k kept) ([]byte, error) {
	if k.all {
		return append(dst, content...), nil
	}
	if len(k.keys) == 0 {
		return append(dst, '{', '}'), nil
	}
	dst = append(dst, '{')
	first := true
	err := eachMember(content, func(key, member []byte) {
		for _, want := range k.keys {
			if string(key) == want {
				if !first {
					dst = append(dst, ',')
				}
				dst = append(dst, member...)
				first = false
				return
			}
		}
	})
	if err != nil {
		return nil, err
	}
	return append(dst, '}'), nil
}

// withRedacts returns the canonical object content with the member
// "redacts": id added, or an error when it has one.
func withRedacts(content []byte, id string) ([]byte, error) {
	const key = "redacts"
	add := appendString([]byte(`"`+key+`":`), id)
	out := make([]byte, 0, len(content)+len(add)+1)
	out = append(out, '{')
	put := func(member []byte) {
		if len(out) > 1 {
			out = append(out, ',')
		}
		out = append(out, member...)
	}
	dup := false
	err := eachMember(content, func(k, member []byte) {
		switch strings.Compare(string(k), key) {
		case 0:
			dup = true
		case 1:
			if add != nil {
				put(add)
				add = nil
			}
		}
		put(member)
	})
	switch {
	case err != nil:
		return nil, err
	case dup:
		return nil, errors.New("pdu: Redacts set and the content has redacts")
	}
	if add != nil {
		put(add)
	}
	return append(out, '}'), nil
}

// eachMember calls f with the key (its bytes between the quotes) and the
// whole member (key, colon and value) of each member of the canonical
// object obj, in order; it returns an error if obj is not one.
func eachMember(obj []byte, f func(key, member []byte)) error {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return errNotCanonical
	}
	if len(obj) == 2 {
		return nil
	}
	for i := 1; ; {
		if obj[i] != '"' {
			return errNotCanonical
		}
		keyEnd := skipString(obj, i)
		if keyEnd < 0 || keyEnd >= len(obj) || obj[keyEnd] != ':' {
			return errNotCanonical
		}
		end := skipValue(obj, keyEnd+1)
		if end < 0 || end >= len(obj) {
			return errNotCanonical
		}
		f(obj[i+1:keyEnd-1], obj[i:end])
		switch {
		case obj[end] == ',' && end+1 < len(obj):
			i = end + 1
		case obj[end] == '}' && end == len(obj)-1:
			return nil
		default:
			return errNotCanonical
		}
	}
}

// skipString returns the index after the string that starts at the quote
// at i, or -1.
func skipString(b []byte, i int) int {
	for i++; i < len(b); i++ {
		switch b[i] {
		case '\\':
			i++
		case '"':
			return i + 1
		}
	}
	return -1
}

// skipValue returns the index after the canonical JSON value that starts
// at i, or -1.
func skipValue(b []byte, i int) int {
	if i >= len(b) {
		return -1
	}
	switch b[i] {
	case '"':
		return skipString(b, i)
	case '{', '[':
		depth := 0
		for i < len(b) {
			switch b[i] {
			case '"':
				if i = skipString(b, i); i < 0 {
					return -1
				}
				continue
			case '{', '[':
				depth++
			case '}', ']':
				if depth--; depth == 0 {
					return i + 1
				}
			}
			i++
		}
		return -1
	}
	start := i
	for i < len(b) && b[i] != ',' && b[i] != '}' && b[i] != ']' {
		i++
	}
	if i == start {
		return -1
	}
	return i
}
