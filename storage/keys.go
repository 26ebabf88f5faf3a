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
