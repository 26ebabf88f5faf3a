package actors

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// The delivery rule, user side. Every profile write that changes displayname
// or avatar_url (and may reach rooms) is a MemberUpdate kept in the user's
// history until every joined room has acknowledged it. Per room the user
// keeps one cursor: the last version that room acknowledged. Pending rooms
// are those whose cursor is behind the latest version; they are sent what
// they lack (at most max_in_flight rooms at once), resent after
// resend_after without an ack, and again after a restart (the partition's
// wake mark). Rooms apply each version once, in order, and acknowledge
// cumulatively; cursors are written in batches, lazily: a lost cursor only
// causes a resend the room ignores.

// roomCursor is one of the user's rooms: membership (as the room told it)
// and the last profile version the room acknowledged.
type roomCursor struct {
	Membership string `json:"m"`
	Stream     uint64 `json:"s"`
	Acked      uint64 `json:"a"`
	Forgotten  bool   `json:"f,omitempty"` // left and forgotten: out of initial syncs
	// Snapshot is owed to the room before any version when its join event
	// carries a profile older than the user's durable one (joinSnapshot).
	// It travels like a version, in order and resent until acknowledged,
	// and stays here until then: a restart or a lost message cannot let a
	// later version overtake it.
	Snapshot *wire.MemberUpdate `json:"snap,omitempty"`
}

// behind reports whether a joined room lacks something: a version after its
// cursor, or its join's snapshot.
func (c *roomCursor) behind(latest uint64) bool {
	return c.Membership == "join" && (c.Acked < latest || c.Snapshot != nil)
}

// deliveries is the user actor's in-memory delivery state.
type deliveries struct {
	history  []*wire.MemberUpdate // oldest first
	queue    []string             // rooms to send to, in order
	inFlight map[string]time.Time // room -> when sent
	dirty    map[string]bool      // cursors not yet written
	behind   int                  // joined rooms whose cursor is behind the latest version
	current  map[string]struct{}  // joined rooms whose cursor is at the latest version
	marked   bool                 // the user's wake mark may be set: history or a snapshot is owed
	writing  int                  // profile writes recording a version, not durable yet: they set the wake mark
	trimmed  uint64               // every version up to this one may have left the history (joinSnapshot)
	kept     []*wire.MemberUpdate // the last versions to leave the history, at most max_backlog, oldest first; durable under "kept"
	keptFrom uint64               // kept holds every version after this one, up to trimmed
	fold     fold                 // the last folded run of history
	flushing bool
	timer    bool
}

// resendTick asks the user actor to resend what is overdue.
type resendTick struct{}

func (u *user) latest() uint64 {
	if len(u.d.history) == 0 {
		return 0
	}
	return u.d.history[len(u.d.history)-1].Version
}

// busy reports unfinished delivery work (no passivation meanwhile).
func (u *user) busy() bool {
	return len(u.waiting) > 0 || len(u.d.history) > 0 || len(u.d.inFlight) > 0 || u.d.flushing || len(u.d.dirty) > 0
}

// memberUpdate is the rooms' view of a profile change, or nil when neither
// displayname nor avatar_url changed.
func memberUpdate(before, after map[string]json.RawMessage, version uint64, mode wire.Propagate) *wire.MemberUpdate {
	str := func(m map[string]json.RawMessage, k string) string {
		var s string
		_ = json.Unmarshal(m[k], &s)
		return s
	}
	u := &wire.MemberUpdate{Version: version, Mode: mode, WrittenMs: time.Now().UnixMilli()}
	u.OldDisplayname, u.Displayname = str(before, "displayname"), str(after, "displayname")
	u.OldAvatarUrl, u.AvatarUrl = str(before, "avatar_url"), str(after, "avatar_url")
	u.SetsDisplayname = u.OldDisplayname != u.Displayname
	u.SetsAvatarUrl = u.OldAvatarUrl != u.AvatarUrl
	if !u.SetsDisplayname && !u.SetsAvatarUrl {
		return nil
	}
	return u
}

func (u *user) wakeKey() []byte {
	return storage.Key("p", partitionName(u.h.Partition(u.id)), "wake", KindUser, u.id)
}

// recordUpdate adds a new version to the batch of its profile write.
func (u *user) recordUpdate(b *storage.Batch, upd *wire.MemberUpdate) {
	raw, _ := proto.Marshal(upd)
	b.Set(u.key("hist", storage.Uint64(upd.Version)), raw)
	b.Set(u.wakeKey(), nil)
	u.d.writing++
}

// updateDurable starts delivering a version once its write is durable.
// Every room that had caught up is now one version behind; the others are
// queued or in flight already. So a burst of writes costs a pass over the
// rooms that caught up between two writes, not over every joined room.
func (u *user) updateDurable(upd *wire.MemberUpdate) {
	u.d.writing--
	if err := u.ensureRooms(); err != nil {
		// The version is durable with the user's wake mark: a restart
		// delivers it.
		u.h.log.Error("user actor cannot read its rooms", "user", u.id, "err", err)
	}
	if len(u.d.history) == 0 { // every version before it has left the history, or never changed a room
		u.d.trimmed = upd.Version - 1
		if len(u.d.kept) == 0 {
			u.d.keptFrom = u.d.trimmed
		}
	}
	u.d.history, u.d.marked = append(u.d.history, upd), true
	for id := range u.d.current {
		u.d.queue = append(u.d.queue, id)
	}
	u.d.behind += len(u.d.current)
	clear(u.d.current)
	u.deliver()
}

// recount rebuilds, in one pass over the rooms, the joined rooms behind the
// latest version (counted and queued) and those that are not. It runs when
// the cursors are read (ensureRooms), before anything is queued or in flight.
func (u *user) recount() {
	latest := u.latest()
	u.d.behind, u.d.current = 0, map[string]struct{}{}
	for id, c := range u.rooms {
		switch {
		case c.Membership != "join":
		case c.behind(latest):
			u.d.behind++
			u.d.queue = append(u.d.queue, id)
		default:
			u.d.current[id] = struct{}{}
		}
	}
}

// setCursor changes a room's membership, acknowledged version or owed
// snapshot, keeping the count of rooms behind and the set of those that
// are not.
func (u *user) setCursor(id string, c *roomCursor, membership string, acked uint64, snap *wire.MemberUpdate) {
	latest := u.latest()
	was := c.behind(latest)
	c.Membership, c.Acked, c.Snapshot = membership, acked, snap
	is := c.behind(latest)
	switch {
	case was && !is:
		u.d.behind--
	case !was && is:
		u.d.behind++
	}
	if c.Membership == "join" && !is {
		u.d.current[id] = struct{}{}
	} else {
		delete(u.d.current, id)
	}
}

// deliver sends queued rooms what they lack, keeping at most max_in_flight
// rooms unacknowledged.
func (u *user) deliver() {
	latest, limit := u.latest(), u.h.cfg.Propagation.MaxInFlight
	for len(u.d.inFlight) < limit && len(u.d.queue) > 0 {
		id := u.d.queue[0]
		u.d.queue = u.d.queue[1:]
		c := u.rooms[id]
		if _, busy := u.d.inFlight[id]; busy || c == nil || !c.behind(latest) {
			continue
		}
		u.sendTo(id, c)
		if u.h.metrics != nil {
			u.h.metrics.PendingDeliveries(1)
		}
	}
	u.armTimer()
	u.maybeDone()
}

// sendTo sends a room its join's snapshot, or else the versions after its
// cursor.
func (u *user) sendTo(id string, c *roomCursor) {
	msg := &wire.ProfileUpdates{RoomId: id, UserId: u.id}
	if c.Snapshot != nil {
		msg.Updates = []*wire.MemberUpdate{c.Snapshot}
	} else {
		msg.Updates, msg.Snapshot, msg.Skipped = u.updatesAfter(c.Acked)
		msg.After = proto.Uint64(c.Acked)
	}
	u.d.inFlight[id] = time.Now()
	u.h.Send(KindRoom, id, msg)
}

// updatesAfter is what a room that acknowledged acked lacks: every later
// version in order or, beyond max_backlog, the latest alone with every key
// folded in (a snapshot that skipped the others).
func (u *user) updatesAfter(acked uint64) (ups []*wire.MemberUpdate, snapshot bool, skipped uint64) {
	h := u.d.history
	i := sort.Search(len(h), func(i int) bool { return h[i].Version > acked })
	if n := len(h) - i; n > u.h.cfg.Propagation.MaxBacklog {
		return []*wire.MemberUpdate{u.folded(i)}, true, uint64(n - 1)
	}
	return slices.Clone(h[i:]), false, 0
}

// folded is coalesce of the history from index i on. Rooms that lag alike
// share one (messages are not changed once sent), so a burst of writes
// costs one fold per cursor, not one per room.
func (u *user) folded(i int) *wire.MemberUpdate {
	h := u.d.history
	from, to := h[i].Version, h[len(h)-1].Version
	if f := u.d.fold; f.upd != nil && f.from == from && f.to == to {
		return f.upd
	}
	upd := coalesce(h[i:])
	u.d.fold = fold{from, to, upd}
	return upd
}

// fold is the last coalesced run of history: versions from..to.
type fold struct {
	from, to uint64
	upd      *wire.MemberUpdate
}

// coalesce folds versions into one: per key, the last value written, with
// that write's mode, and the global value before the first of them.
func coalesce(ups []*wire.MemberUpdate) *wire.MemberUpdate {
	last := ups[len(ups)-1]
	out := &wire.MemberUpdate{Version: last.Version, Mode: last.Mode, WrittenMs: last.WrittenMs}
	for _, x := range ups {
		if x.SetsDisplayname {
			if !out.SetsDisplayname {
				out.OldDisplayname = x.OldDisplayname
			}
			out.SetsDisplayname, out.Displayname = true, x.Displayname
		}
		if x.SetsAvatarUrl {
			if !out.SetsAvatarUrl {
				out.OldAvatarUrl = x.OldAvatarUrl
			}
			out.SetsAvatarUrl, out.AvatarUrl = true, x.AvatarUrl
		}
	}
	return out
}

// onAcks takes a batch of rooms' acks, then sends and writes once.
func (u *user) onAcks(m *wire.UpdateAcks) {
	for _, a := range m.Acks {
		u.onAck(a)
	}
	u.deliver()
	u.flush()
}

// onAck advances one room's cursor.
func (u *user) onAck(m *wire.UpdateAck) {
	c := u.rooms[m.RoomId]
	if c == nil {
		return
	}
	if _, ok := u.d.inFlight[m.RoomId]; ok {
		delete(u.d.inFlight, m.RoomId)
		if u.h.metrics != nil {
			u.h.metrics.PendingDeliveries(-1)
		}
	}
	if m.NotMember {
		// The room applied nothing. It knows best, unless this actor has
		// heard of a newer membership since: acks travel in batches, apart
		// from the room's notices. A later join notice corrects it.
		if m.Stream >= c.Stream {
			u.setCursor(m.RoomId, c, "leave", c.Acked, nil)
			u.d.dirty[m.RoomId] = true
		}
	} else {
		acked, snap := max(c.Acked, m.Version), c.Snapshot
		if snap != nil && m.Version >= snap.Version {
			snap = nil // the room has it
		}
		if acked != c.Acked || snap != c.Snapshot {
			u.setCursor(m.RoomId, c, c.Membership, acked, snap)
			u.d.dirty[m.RoomId] = true
		}
	}
	if c.behind(u.latest()) {
		u.d.queue = append(u.d.queue, m.RoomId)
	}
}

// maybeDone ends a round of propagation once every joined room has the
// latest version and its snapshot: the history and the wake mark go, in the
// next flush.
func (u *user) maybeDone() {
	if !u.d.marked || len(u.d.inFlight) > 0 || u.d.behind > 0 {
		return
	}
	if n := len(u.d.history); n > 0 && u.h.metrics != nil {
		u.h.metrics.Propagated(time.Since(time.UnixMilli(u.d.history[n-1].WrittenMs)))
	}
	for _, h := range u.d.history {
		u.d.dirty["\x00hist"+storage.Uint64(h.Version)] = true
	}
	u.d.dirty["\x00wake"] = true
	if len(u.d.history) > 0 {
		u.d.trimmed = u.latest()
		u.keep(u.d.history)
	}
	u.d.history, u.d.marked = nil, false
	u.flush()
}

// flush writes the dirty cursors, the versions that left the history and
// the kept ones in one batch; acks arriving meanwhile wait for the next.
func (u *user) flush() {
	if u.d.flushing || len(u.d.dirty) == 0 {
		return
	}
	b, unmark := u.flushBatch()
	u.d.dirty = map[string]bool{}
	if unmark {
		// In the urgent lane, where profile writes set the mark: in the
		// background lane the deletion could land after the next write's
		// mark and leave that write's fan-out without one. Landing before
		// the history deletions is harmless: every room has those versions.
		// Fenced: a user actor of a leadership that ended must not drop
		// the next one's mark.
		var w storage.Batch
		w.Delete(u.wakeKey())
		w.Fence(u.h.Partition(u.id), u.fence)
		u.h.store.CommitUrgent(&w, func(error) {}) // failed, the mark stays: one needless wake
	}
	if b.Len() == 0 {
		return
	}
	u.d.flushing = true
	u.commit(u.ctx, b, nil, func() {
		u.d.flushing = false
		u.flush()
	})
}

// flushBatch is the batch of what is dirty, as it is now (a dirty key
// names what changed, not what to write), and whether the wake mark goes.
// A version leaves the history and becomes kept in the same batch, so
// after a crash it is in one or the other. A version that left the
// history while a flush was under way, and went back into it for a late
// join before the next flush (restore, whose own batch wrote it back), is
// not deleted: the join's room still lacks it.
func (u *user) flushBatch() (b *storage.Batch, unmark bool) {
	b = &storage.Batch{}
	for k := range u.d.dirty {
		switch {
		case k == "\x00wake": // not if a version or a join's snapshot is owed again, or one is being written
			unmark = !u.d.marked && u.d.writing == 0
		case len(k) > 5 && k[:5] == "\x00hist":
			if versionIn(u.d.history, storage.ParseUint64([]byte(k[5:]))) == nil {
				b.Delete(u.key("hist", k[5:]))
			}
		case len(k) > 5 && k[:5] == "\x00kept": // kept, or dropped or restored
			if upd := versionIn(u.d.kept, storage.ParseUint64([]byte(k[5:]))); upd != nil {
				raw, _ := proto.Marshal(upd)
				b.Set(u.key("kept", k[5:]), raw)
			} else {
				b.Delete(u.key("kept", k[5:]))
			}
		default:
			if c := u.rooms[k]; c != nil {
				b.Set(u.key("room", k), mustJSON(c))
			}
		}
	}
	return b, unmark
}

// armTimer schedules a resend check while deliveries are in flight.
func (u *user) armTimer() {
	if u.d.timer || len(u.d.inFlight) == 0 {
		return
	}
	u.d.timer = true
	self, rt := u.ctx.Self(), u.h.rt
	time.AfterFunc(u.h.cfg.Propagation.ResendAfter, func() { rt.Post(self, &resendTick{}) })
}

// resend sends again what was not acknowledged in time.
func (u *user) resend() {
	u.d.timer = false
	overdue := time.Now().Add(-u.h.cfg.Propagation.ResendAfter)
	n := 0
	for id, at := range u.d.inFlight {
		if at.Before(overdue) {
			if c := u.rooms[id]; c != nil && c.Membership == "join" {
				u.sendTo(id, c)
				n++
			}
		}
	}
	if n > 0 && u.h.metrics != nil {
		u.h.metrics.Retried(n)
	}
	u.armTimer()
}

// resendMoved sends again, without waiting for resend_after, what the
// rooms of partitions that changed owners have not acknowledged: across
// nodes a message is delivered at most once, and one in flight when its
// room's owner changed is lost. Rooms ignore what they already applied.
func (u *user) resendMoved(m *host.Moved) {
	n := 0
	for id := range u.d.inFlight {
		if c := u.rooms[id]; c != nil && c.Membership == "join" && m.Has(u.h.Partition(id)) {
			u.sendTo(id, c)
			n++
		}
	}
	if n > 0 && u.h.metrics != nil {
		u.h.metrics.Retried(n)
	}
	u.armTimer()
}

// loadDeliveries reads the versions not yet acknowledged by every joined
// room, and the kept ones. The room cursors wait in storage for the first
// message that needs them (ensureRooms): a user in many rooms then answers
// its first request after waking without reading them all first.
func (u *user) loadDeliveries() error {
	u.rooms, u.roomsLoaded = nil, false
	u.d = deliveries{inFlight: map[string]time.Time{}, dirty: map[string]bool{}, current: map[string]struct{}{}}
	var err error
	if u.d.history, err = u.loadVersions("hist"); err != nil {
		return err
	}
	if u.d.kept, err = u.loadVersions("kept"); err != nil {
		return err
	}
	u.d.marked = len(u.d.history) > 0
	u.keep(nil) // max_backlog may be lower than when they were kept
	// Every version that left the history was kept, and only the oldest
	// are dropped: those after the last kept are in the history. Versions
	// before the first kept are not known (they were dropped, or left the
	// history before versions were kept): as far as joinSnapshot knows,
	// every one of them left it.
	switch {
	case len(u.d.history) > 0:
		u.d.trimmed = u.d.history[0].Version - 1
	case len(u.d.kept) > 0:
		u.d.trimmed = u.d.kept[len(u.d.kept)-1].Version
	default:
		u.d.trimmed = math.MaxUint64
	}
	u.d.keptFrom = u.d.trimmed
	if len(u.d.kept) > 0 {
		u.d.keptFrom = u.d.kept[0].Version - 1
	}
	return nil
}

// loadVersions reads the profile versions stored under the user's key
// part, oldest first.
func (u *user) loadVersions(part string) ([]*wire.MemberUpdate, error) {
	var out []*wire.MemberUpdate
	err := u.h.store.Scan(storage.Prefix(string(u.key(part))), nil, func(k, v []byte) error {
		upd := &wire.MemberUpdate{}
		if err := proto.Unmarshal(v, upd); err != nil {
			return fmt.Errorf("decode profile version: %w", err)
		}
		out = append(out, upd)
		return nil
	})
	return out, err
}

// ensureRooms reads the room cursors, unless they are in memory, and
// counts the rooms behind the latest version.
func (u *user) ensureRooms() error {
	if u.roomsLoaded {
		return nil
	}
	rooms := map[string]*roomCursor{}
	roomPrefix := storage.Prefix(string(u.key("room")))
	if err := u.h.store.Scan(roomPrefix, nil, func(k, v []byte) error {
		var c roomCursor
		if err := json.Unmarshal(v, &c); err != nil {
			return fmt.Errorf("decode room cursor: %w", err)
		}
		rooms[string(k[len(roomPrefix):])] = &c
		return nil
	}); err != nil {
		return err
	}
	u.rooms, u.roomsLoaded = rooms, true
	u.recount()
	return nil
}

func (u *user) rooms2reply() *wire.RoomsReply {
	out := &wire.RoomsReply{}
	for id, c := range u.rooms {
		out.Rooms = append(out.Rooms, &wire.RoomMembership{RoomId: id, Membership: c.Membership, Stream: c.Stream, Forgotten: c.Forgotten})
	}
	return out
}

func (u *user) pending(limit int) *wire.PendingReply {
	out := &wire.PendingReply{Version: u.latest(), Behind: uint64(max(0, u.d.behind))}
	listed := map[string]bool{}
	list := func(id string) {
		c := u.rooms[id]
		if len(out.Rooms) == limit || listed[id] || c == nil || !c.behind(out.Version) {
			return
		}
		listed[id] = true
		_, sent := u.d.inFlight[id]
		out.Rooms = append(out.Rooms, &wire.PendingRoom{RoomId: id, Acked: c.Acked, InFlight: sent})
	}
	// Every room behind is in flight or queued: no pass over all the rooms.
	for id := range u.d.inFlight {
		list(id)
	}
	for _, id := range u.d.queue {
		if len(out.Rooms) == limit {
			break
		}
		list(id)
	}
	return out
}

var _ actor.Actor = (*user)(nil)
