package actors

import (
	"context"
	"errors"
	"strconv"
	"strings"
)

// SyncToken is a /sync position: for each partition, the position in its
// stream up to which the user has what happened in its rooms; and the
// node's presence position. The zero token asks for an initial sync.
type SyncToken struct {
	Parts    []uint64
	Presence uint64
}

// ErrBadToken is returned for a sync token that cannot be read.
var ErrBadToken = errors.New("bad sync token")

// ParseSyncToken reads a token String wrote, for a node with partitions
// partitions. "" is the zero token; s<N>, a token of a node with one
// stream for every partition, is position N in every partition's stream
// (which each started above N) and presence position N.
func ParseSyncToken(tok string, partitions int) (SyncToken, error) {
	switch {
	case tok == "":
		return SyncToken{}, nil
	case strings.HasPrefix(tok, "s"):
		n, err := strconv.ParseUint(tok[1:], 10, 64)
		if err != nil {
			return SyncToken{}, ErrBadToken
		}
		t := SyncToken{Parts: make([]uint64, partitions), Presence: n}
		for p := range t.Parts {
			t.Parts[p] = n
		}
		return t, nil
	case !strings.HasPrefix(tok, "t"):
		return SyncToken{}, ErrBadToken
	}
	fields := strings.Split(tok[1:], "_")
	if len(fields) != 3 {
		return SyncToken{}, ErrBadToken
	}
	var t SyncToken
	var base uint64
	var err error
	if t.Presence, err = strconv.ParseUint(fields[0], 36, 64); err != nil {
		return SyncToken{}, ErrBadToken
	}
	if base, err = strconv.ParseUint(fields[1], 36, 64); err != nil {
		return SyncToken{}, ErrBadToken
	}
	deltas := strings.Split(fields[2], ".")
	if len(deltas) != partitions {
		return SyncToken{}, ErrBadToken
	}
	t.Parts = make([]uint64, partitions)
	for p, d := range deltas {
		var n uint64
		if d != "" {
			if n, err = strconv.ParseUint(d, 36, 64); err != nil || base+n < base {
				return SyncToken{}, ErrBadToken
			}
		}
		t.Parts[p] = base + n
	}
	return t, nil
}

// String encodes t compactly: t<presence>_<base>_<d0>.<d1>..., each
// partition's position less the lowest (base), in base 36, empty for 0.
func (t SyncToken) String() string {
	if t.IsZero() {
		return ""
	}
	base := t.Parts[0]
	for _, p := range t.Parts {
		base = min(base, p)
	}
	var b strings.Builder
	b.WriteByte('t')
	b.WriteString(strconv.FormatUint(t.Presence, 36))
	b.WriteByte('_')
	b.WriteString(strconv.FormatUint(base, 36))
	b.WriteByte('_')
	for i, p := range t.Parts {
		if i > 0 {
			b.WriteByte('.')
		}
		if p > base {
			b.WriteString(strconv.FormatUint(p-base, 36))
		}
	}
	return b.String()
}

// IsZero reports whether t asks for an initial sync.
func (t SyncToken) IsZero() bool { return len(t.Parts) == 0 }

// Part is t's position in partition p's stream: 0 for the zero token.
func (t SyncToken) Part(p int) uint64 {
	if p < len(t.Parts) {
		return t.Parts[p]
	}
	return 0
}

// StreamPosition is the node's current /sync position: every event at or
// below it, in each partition's stream, is committed. A partition whose
// owner has told this node nothing yet is at 0. It covers every write this
// node answered before, waiting briefly for the news of those another
// node owns (stream.awaitWritten).
func (h *Service) StreamPosition(ctx context.Context) (SyncToken, error) {
	if n := h.stream.awaitWritten(ctx); n > 0 {
		h.log.Warn("sync token may stop below writes this node answered: their partitions' news did not come",
			"partitions", n, "waited", writtenWait)
	}
	parts, err := h.stream.visible()
	if err != nil {
		return SyncToken{}, err
	}
	return SyncToken{Parts: parts, Presence: h.PresencePosition()}, nil
}

// Subscribe returns a channel closed when the next event that concerns user
// (or any presence change on this node) is committed, on this node or,
// told a few milliseconds later, on another. Subscribe before reading, so
// that nothing is missed in between: wake, cancel := h.Subscribe(u); defer
// cancel(); read; then wait on wake.
func (h *Service) Subscribe(user string) (wake <-chan struct{}, cancel func()) {
	return h.stream.subscribe(user)
}

// RoomChangedSince reports whether room may have events after since, a
// position in its partition's stream; false means it certainly has none.
func (h *Service) RoomChangedSince(room string, since uint64) bool {
	return h.stream.changedSince(room, since)
}
