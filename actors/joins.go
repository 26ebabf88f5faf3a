package actors

import (
	"cmp"
	"slices"
	"sort"

	"google.golang.org/protobuf/proto"

	"persona/storage"
	"persona/wire"
)

// Joins, user side. A room tells the user's actor of each membership
// change; a join starts the room's cursor at the profile version its event
// carried, and the room is owed what came after: each version in order
// while they are known, else the current profile as a snapshot. The last
// max_backlog versions to leave the history are kept, durably, for a join
// whose notice comes late.

// onMembership records a room's word on the user's membership there.
func (u *user) onMembership(m *wire.MembershipChanged) {
	ack := func() {
		u.h.Send(KindRoom, m.RoomId, &wire.MembershipAck{RoomId: m.RoomId, UserId: u.id, Stream: m.Stream})
	}
	c := u.rooms[m.RoomId]
	if !u.exists || (c != nil && m.Stream <= c.Stream) {
		ack()
		return
	}
	if c == nil {
		c = &roomCursor{}
		u.rooms[m.RoomId] = c
	}
	// A first join: the room never applied a version of the user's (it
	// applies none to an invitee, and a join's cursor starts at the
	// version its event carried, which is not 0 once the user has a
	// profile).
	first := c.Acked == 0
	acked, snap := c.Acked, c.Snapshot
	var restored []*wire.MemberUpdate
	switch {
	case m.Membership != "join":
		snap = nil
	case c.Membership != "join": // a join
		acked = max(c.Acked, m.ProfileVersion)
		snap, restored = u.joinSnapshot(m.ProfileVersion, first)
	}
	c.Forgotten = false
	u.setCursor(m.RoomId, c, m.Membership, acked, snap)
	c.Stream = m.Stream
	if m.Membership != "join" {
		if _, ok := u.d.inFlight[m.RoomId]; ok {
			delete(u.d.inFlight, m.RoomId)
			if u.h.metrics != nil {
				u.h.metrics.PendingDeliveries(-1)
			}
		}
	}
	var b storage.Batch
	b.Set(u.key("room", m.RoomId), mustJSON(c))
	for _, upd := range restored { // back in the history, so owed across a restart too
		raw, _ := proto.Marshal(upd)
		b.Set(u.key("hist", storage.Uint64(upd.Version)), raw)
		b.Delete(u.key("kept", storage.Uint64(upd.Version)))
	}
	if snap != nil || len(restored) > 0 { // owed across a restart too
		b.Set(u.wakeKey(), nil)
		u.d.marked = true
	}
	u.commit(u.ctx, &b, nil, func() {
		ack()
		u.h.stream.wakeUser(u.id) // a /sync that found the room missing from the list builds again
		if c.behind(u.latest()) {
			u.d.queue = append(u.d.queue, m.RoomId)
		}
		u.deliver()
	})
}

// joinSnapshot is what a room is owed whose join event carries profile
// version carried: the user's durable profile, in the default mode at its
// version, or nil when that is the one carried. The server reads the
// profile before it asks the room to join; a write landing in between may
// have finished its fan-out before this actor knew the room (or the room's
// notice of the join was lost and came again later), and a join gets the
// current profile. Keys the user set in the join's own content stay (the
// default mode).
//
// A first join (the room never applied a version of the user's: a join after
// an invite is one too) needs no snapshot while the versions after carried
// are still known and all in the default mode: the cursor starts at carried
// and the room gets each version in order, as every room does. Those in the
// history are known; those that left it are kept (the last max_backlog of
// them, durably) and go back into the history, returned as restored for the
// caller to write. A version kept out of rooms, or meant for all of them,
// may have come before the join, which would then have carried it whatever
// its mode: such a join gets the snapshot. So does a rejoin, since the room
// may hold versions applied before the leave that the join's older content
// undid.
func (u *user) joinSnapshot(carried uint64, first bool) (snap *wire.MemberUpdate, restored []*wire.MemberUpdate) {
	reason := "rejoin"
	switch {
	case carried >= u.committed.Version:
		return nil, nil
	case first && carried >= u.d.keptFrom && u.defaultAfter(carried):
		if carried < u.d.trimmed {
			restored = u.restore(carried)
		}
		return nil, restored
	case first && carried >= u.d.keptFrom:
		reason = "mode"
	case first:
		reason = "unknown"
	}
	if u.h.metrics != nil {
		u.h.metrics.JoinSnapshot(reason)
	}
	var dn, av string
	_ = jsonString(u.committed.Fields["displayname"], &dn)
	_ = jsonString(u.committed.Fields["avatar_url"], &av)
	return &wire.MemberUpdate{Version: u.committed.Version, Mode: wire.Propagate_PROPAGATE_DEFAULT, WrittenMs: now(),
		SetsDisplayname: true, Displayname: dn, SetsAvatarUrl: true, AvatarUrl: av}, nil
}

// defaultAfter reports whether every version after carried is known, kept
// or in the history, and in the default mode.
func (u *user) defaultAfter(carried uint64) bool {
	if u.committed.Unlisted > carried {
		return false
	}
	for _, upds := range [][]*wire.MemberUpdate{u.d.kept, u.d.history} {
		for _, upd := range upds {
			if upd.Version > carried && upd.Mode != wire.Propagate_PROPAGATE_DEFAULT {
				return false
			}
		}
	}
	return true
}

// keep adds versions leaving the history to the kept ones, dropping the
// oldest beyond max_backlog (from storage too, in the next flush): a room
// that lags further gets the latest alone anyway (updatesAfter).
func (u *user) keep(left []*wire.MemberUpdate) {
	stored := len(u.d.kept)
	kept := append(u.d.kept, left...)
	n := max(0, len(kept)-u.h.cfg.Propagation.MaxBacklog)
	for i, upd := range kept {
		if (i < n) == (i < stored) { // a stored one dropped, or a new one kept
			u.d.dirty["\x00kept"+storage.Uint64(upd.Version)] = true
		}
	}
	if n > 0 {
		u.d.keptFrom = kept[n-1].Version
		kept = slices.Clone(kept[n:])
	}
	u.d.kept = kept
}

// versionIn is version v of ups (in version order), or nil.
func versionIn(ups []*wire.MemberUpdate, v uint64) *wire.MemberUpdate {
	i, ok := slices.BinarySearchFunc(ups, v, func(u *wire.MemberUpdate, v uint64) int { return cmp.Compare(u.Version, v) })
	if !ok {
		return nil
	}
	return ups[i]
}

// restore puts the kept versions after carried back in front of the
// history and returns them. Every room but the one joining has
// acknowledged them, so only that room's cursor is behind them.
func (u *user) restore(carried uint64) []*wire.MemberUpdate {
	i := sort.Search(len(u.d.kept), func(i int) bool { return u.d.kept[i].Version > carried })
	restored := u.d.kept[i:]
	u.d.kept = slices.Clone(u.d.kept[:i])
	u.d.history = append(slices.Clone(restored), u.d.history...)
	u.d.trimmed = carried
	return restored
}
