package storage

import "encoding/binary"

// sep separates key parts. Matrix identifiers may hold '/', never NUL.
const sep = 0

// Key joins parts into a key. Keys that share leading parts share a prefix.
func Key(parts ...string) []byte {
	n := len(parts)
	for _, p := range parts {
		n += len(p)
	}
	k := make([]byte, 0, n)
	for i, p := range parts {
		if i > 0 {
			k = append(k, sep)
		}
		k = append(k, p...)
	}
	return k
}

// Prefix returns Key(parts...) followed by the separator: every key made
// by Key(append(parts, more...)...) starts with it.
func Prefix(parts ...string) []byte { return append(Key(parts...), sep) }

// Uint64 encodes n so that byte order equals numeric order.
func Uint64(n uint64) string {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], n)
	return string(b[:])
}

// ParseUint64 decodes the last 8 bytes of key, as written by Uint64.
func ParseUint64(key []byte) uint64 {
	if len(key) < 8 {
		return 0
	}
	return binary.BigEndian.Uint64(key[len(key)-8:])
}

// NodeRange is the key range of every key under no partition: what the
// node's own owners write (the key ring, remote profiles, media,
// the stream's reservation) and storage's own keys.
const NodeRange = -1

// rangeOf returns the key range key belongs to: partition p for a key
// under Key("p", name) with name p in hex (host.PartitionKey), else
// NodeRange.
func rangeOf(key []byte) int {
	if len(key) < 4 || key[0] != 'p' || key[1] != sep {
		return NodeRange
	}
	p := 0
	for i, c := range key[2:] {
		switch {
		case c == sep && i > 0:
			return p
		case c >= '0' && c <= '9':
			p = p<<4 | int(c-'0')
		case c >= 'a' && c <= 'f':
			p = p<<4 | int(c-'a'+10)
		default:
			return NodeRange
		}
		if i >= 7 {
			return NodeRange
		}
	}
	return p // Key("p", name) itself
}
