package pdu

import (
	"errors"
	"strings"
)

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
