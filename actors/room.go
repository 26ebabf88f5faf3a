package actors

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// room is the actor of one room: it owns the room's state and timeline and
// the propagation record of each member, under one storage prefix. Every
// event gets a position in the room and a node-wide stream position; nothing
// is answered before it is durable. Idle rooms passivate.
type room struct {
	h    *Service
	id   string
	part int // the room's partition
	// fence stamps every batch of the room's (storage.Batch.Fence): the
	// host's fence of part when the room last loaded.
	fence uint64
	idle  *host.IdleWatch

	exists bool
	meta   roomMeta
	tip    tip                    // the room's last event
	state  map[stateKey]*evRecord // current state, read so far
	// unread holds the positions of state events load left in storage, and
	// unreadMembers what the state index says of members whose events it
	// left there: a room that only applies propagation needs neither.
	unread        unreadState
	unreadMembers map[string]memberIndex
	metaUnread    bool                  // meta's creator and version are still in storage
	members       map[string]*memberRec // per user: propagation record
	// applying holds, per user, the profile versions writes under way
	// apply: those writes acknowledge them once durable.
	applying map[string]underWay

	durable   uint64 // position after the last durable event: clients read below it
	commitSeq uint64
	waiting   []waiter
	// held are the messages that may append, kept while the partition's
	// stream has no positions at hand; awaiting: the stream is to call
	// back (room_hold.go).
	held       []heldMessage
	awaiting   bool
	onReady    func(error) // the stream's call back, made once: posts streamReady
	inFlight   []uint64    // stream positions of uncommitted events
	unsynced   []*evRecord // uncommitted state events
	background int         // commits in flight in the background lane
	wakeUsers  []string    // users to wake when they commit
	failed     error
	// stale: an aborted batch left events in memory that storage never
	// held, and writes were in flight; the room reads itself again once
	// they settle (abort).
	stale      bool
	stopIdle   bool
	clientSeen bool        // asked by a client since activation: it releases its state when idle, and passivates after passivate_after
	renotify   *time.Timer // sends a Wake to resend notices not acknowledged (armRenotify)
	released   bool        // its state went back to storage since the last client request (release)
	loadFailed error
	past       *stateHistory // the state history the message being handled read (pastState)
	out        outboundState // per other server, the last position its outbox acknowledged (room_outbound.go)
	outgoing   []outgoing    // local events to send other servers once durable
	remote     *[]string     // servers with joined members, once worked out (servers)

	// arriving holds the remote events appended since the last durable
	// one, by id (known, redactionTarget).
	arriving map[string]*evRecord
	// rejected holds the refused remote events read or recorded so far,
	// with their prev events (room_rejected.go).
	rejected map[string][]string
	// refused is the event checkRemote last refused by the auth rules, for
	// receive to record.
	refused *refusal
	// parsed holds events parsed for the auth rules (parsePDU), by id: the
	// next remote event mostly cites the same auth events.
	parsed map[string]parsedEvent
	// gaps holds the states after events that filled gaps, read or
	// recorded so far (room_gap.go).
	gaps map[string]map[string]string
}

type stateKey struct{ typ, key string }

// tip is the id and depth of a room's last event.
type tip struct {
	id    string
	depth int64
}

// roomMeta is the room's stored header, rewritten when the state every
// event's auth names changes or the room's DAG forks.
type roomMeta struct {
	Creator string `json:"creator"`
	Version string `json:"version"`
	NextPos uint64 `json:"next,omitempty"` // position of the next event (in memory only)
	// Create, Power and JoinRules are the ids of the current create,
	// power levels and join rules events.
	Create    string `json:"create,omitempty"`
	Power     string `json:"pl,omitempty"`
	JoinRules string `json:"jr,omitempty"`
	// Extremities are the room's forward extremities when they are not
	// its last event alone, and Depth the greatest depth among them.
	Extremities []string `json:"fx,omitempty"`
	Depth       int64    `json:"depth,omitempty"`
	// InvitedOnly marks a room held here only as a remote server's invite
	// of a local user (room_invite.go).
	InvitedOnly bool `json:"invited,omitempty"`
}

// evRecord is a stored event: the PDU's fields (content canonical), what
// clients see of the state it replaced, and what persona needs
// (positions, the sender's txn id). A local event's PDU is rebuilt from
// these fields (pduOf); a remote one is kept as it came.
type evRecord struct {
	ID         string          `json:"id"`
	Type       string          `json:"t"`
	StateKey   *string         `json:"k,omitempty"`
	Sender     string          `json:"u"`
	TS         int64           `json:"ts"`
	Content    json.RawMessage `json:"c"`
	PrevEvents []string        `json:"pe,omitempty"`
	AuthEvents []string        `json:"ae,omitempty"`
	Depth      int64           `json:"dp"`
	Redacts    string          `json:"rd,omitempty"`
	RedactedBy string          `json:"rb,omitempty"`  // the redaction that applied to it (room_redact.go)
	Hash       []byte          `json:"h,omitempty"`   // a redacted local event's content hash as built, which its PDU keeps
	PDU        json.RawMessage `json:"pdu,omitempty"` // a remote event as it came, signatures included
	Outlier    bool            `json:"o,omitempty"`   // held for state and auth, outside the timeline
	Stripped   bool            `json:"sp,omitempty"`  // stripped state that came with a remote invite: no PDU
	Prev       json.RawMessage `json:"pc,omitempty"`
	PrevSender string          `json:"ps,omitempty"`
	PrevID     string          `json:"pid,omitempty"`
	Pos        uint64          `json:"p"`
	Stream     uint64          `json:"s"`
	Txn        string          `json:"x,omitempty"`
	Device     string          `json:"d,omitempty"`
	Relay      bool            `json:"rl,omitempty"` // a remote event this room sends on to the other servers (appendRemote)

	prev        *evRecord // the state event it replaced, until it is durable: storage may not hold that one yet
	followsLast bool      // a local event whose prev_events are the room's last event alone (seal)
	membership  uint8     // of a member event, once read from Content: its index in memberships
}

// memberRec is what the room keeps of each user's profile propagation: the
// last profile version applied, the keys the user set to a value of their
// own here, and how far the user's actor has heard of its membership.
type memberRec struct {
	Version   uint64          `json:"v"`
	Own       map[string]bool `json:"own,omitempty"`
	Notified  uint64          `json:"n,omitempty"`
	Forgotten bool            `json:"f,omitempty"` // left and forgotten: no more reads
}

// underWay is what a room's profile writes under way do for one user:
// they take its version from from (durable) to to.
type underWay struct{ from, to uint64 }

// memberIndex is the state index's entry for a member event: its position,
// stream position and membership (an index in memberships), and the
// member's profile version applied as of the event.
type memberIndex struct {
	pos, stream uint64
	membership  uint8
	version     uint64
}

// encode is the entry's value: 8 bytes of stream position, 1 of
// membership, 8 of profile version, and last the 8 bytes of position that
// other state events and older data hold alone (so that
// storage.ParseUint64 reads any entry's position, older versions of
// persona included). The version makes a rename's event and its index
// entry enough: the member record is not rewritten (applyUpdates).
func (m memberIndex) encode() []byte {
	return []byte(storage.Uint64(m.stream) + string(m.membership) + storage.Uint64(m.version) + storage.Uint64(m.pos))
}

// parseMemberIndex reads an entry; ok is false for one that names the
// position alone, whose event must be read. Entries written before the
// version was (17 bytes) have version 0.
func parseMemberIndex(v []byte) (m memberIndex, ok bool) {
	if (len(v) != 17 && len(v) != 25) || v[8] == 0 || int(v[8]) >= len(memberships) {
		return memberIndex{}, false
	}
	m = memberIndex{pos: storage.ParseUint64(v), stream: binary.BigEndian.Uint64(v), membership: v[8]}
	if len(v) == 25 {
		m.version = binary.BigEndian.Uint64(v[9:])
	}
	return m, true
}

func newRoom(h *Service, id string) *room { return &room{h: h, id: id, part: h.Partition(id)} }

func (r *room) key(parts ...string) []byte {
	return storage.Key(append([]string{"p", partitionName(r.part), "r", r.id}, parts...)...)
}

func (r *room) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		r.loadFailed = r.load()
		if r.loadFailed == nil {
			r.renotifyMembers()
			r.resendOutbound()
		}
		// Until a client asks something of it, a room only applies
		// propagation and passivates soon: a fan-out to 100,000 rooms then
		// keeps the rooms of its last seconds in memory, not all of them.
		r.idle.Set(min(r.h.cfg.Actors.PassivateAfter, r.h.opts.PropagationIdle))
		return
	case *host.IdleTimeout:
		if !r.release() {
			r.h.idle(ctx, r.idle, len(r.waiting) > 0 || len(r.held) > 0)
		}
		return
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return // stopping already: asking again would reach a dead actor
	case *host.StopWhenIdle:
		r.stopIdle = true
	case *committed:
		r.onCommitted(ctx, m)
	case *streamReady:
		r.onStreamReady(ctx, m)
	case proto.Message:
		if !r.hold(ctx, m) {
			r.receiveMessage(ctx, m)
		}
	}
	if r.stopIdle && len(r.waiting) == 0 && len(r.held) == 0 {
		ctx.Stop(ctx.Self())
	}
}

// receiveMessage handles a message from outside the room, now or once
// held (room_hold.go).
func (r *room) receiveMessage(ctx actor.Context, m proto.Message) {
	if r.loadFailed != nil {
		r.h.log.Error("room actor cannot load its state", "room", r.id, "err", r.loadFailed)
		ctx.Respond(internalError(m))
		return
	}
	switch m.(type) {
	case *wire.ProfileUpdates, *wire.MembershipAck, *wire.Wake, *wire.OutboundAck:
	case *wire.ReceivePDU:
		// Another server's event needs the room's header and the few
		// members its auth names (read one by one), never every member.
		if err := r.readUnreadHeader(); err != nil {
			r.h.log.Error("room actor cannot read its state", "room", r.id, "err", err)
			ctx.Respond(internalError(m))
			return
		}
	default:
		r.clientSeen = true
		if r.released {
			r.released = false
			r.idle.Set(min(r.h.cfg.Actors.PassivateAfter, r.h.opts.PropagationIdle))
		}
		if err := r.readUnread(); err != nil {
			r.h.log.Error("room actor cannot read its state", "room", r.id, "err", err)
			ctx.Respond(internalError(m))
			return
		}
	}
	r.handle(ctx, m)
	r.endRequest()
}

func (r *room) handle(ctx actor.Context, msg proto.Message) {
	switch m := msg.(type) {
	case *wire.CreateRoom:
		r.create(ctx, m)
		return
	case *wire.JoinedRemote:
		r.joinedRemote(ctx, m)
		return
	case *wire.InvitedRemote:
		r.invitedRemote(ctx, m)
		return
	}
	if !r.exists {
		switch m := msg.(type) {
		case *wire.ProfileUpdates:
			r.ackUpdates(m.UserId, lastVersion(m), true, 0)
		case *wire.MembershipAck, *wire.Wake, *wire.OutboundAck:
		default:
			ctx.Respond(notFoundReply(msg))
		}
		return
	}
	switch m := msg.(type) {
	case *wire.SendEvent:
		r.send(ctx, m)
	case *wire.RedactEvent:
		r.redactEvent(ctx, m)
	case *wire.ChangeMembership:
		r.changeMembership(ctx, m)
	case *wire.GetState:
		ctx.Respond(r.getState(m))
	case *wire.RoomSummary:
		ctx.Respond(r.summary(m))
	case *wire.SearchMembers:
		ctx.Respond(r.searchMembers(m))
	case *wire.GetMessages:
		ctx.Respond(r.getMessages(m))
	case *wire.GetEvent:
		ctx.Respond(r.getEvent(m))
	case *wire.GetPDUs:
		ctx.Respond(r.getPDUs(m))
	case *wire.ReceivePDU:
		r.receive(ctx, m)
	case *wire.GetLacking:
		ctx.Respond(r.lacking(m))
	case *wire.ReceiveState:
		r.receiveState(ctx, m)
	case *wire.MakeMembership:
		if m.Membership == "invite" {
			ctx.Respond(r.makeInvite(m))
		} else {
			ctx.Respond(r.makeMembership(m))
		}
	case *wire.SendMembership:
		r.sendMembership(ctx, m)
	case *wire.GetRoomVersion:
		ctx.Respond(r.versionReply())
	case *wire.FederationRead:
		ctx.Respond(r.federationRead(m))
	case *wire.GetServers:
		ctx.Respond(&wire.ServersReply{Servers: slices.Clone(r.servers())})
	case *wire.GetContext:
		ctx.Respond(r.getContext(m))
	case *wire.RoomSync:
		ctx.Respond(r.sync(m))
	case *wire.ProfileUpdates:
		r.applyUpdates(ctx, m)
	case *wire.MembershipAck:
		r.membershipAcked(ctx, m)
	case *wire.Wake:
		r.renotifyMembers()
	case *wire.OutboundAck:
		r.outboundAcked(m)
	default:
		r.h.log.Warn("room actor got an unknown message", "type", fmt.Sprintf("%T", msg))
	}
}

// versionReply answers GetRoomVersion: a room held only as an invite
// names the inviting server to join through.
func (r *room) versionReply() *wire.RoomVersionReply {
	out := &wire.RoomVersionReply{RoomVersion: r.meta.Version, Extremities: r.extremities(), InvitedOnly: r.meta.InvitedOnly}
	if r.meta.InvitedOnly {
		out.Servers = r.inviteServers()
	}
	return out
}

// notFoundReply is the answer of the right type for a room that does not exist.
func notFoundReply(m proto.Message) proto.Message {
	e := notFound(wire.Error_ROOM, "Unknown room.")
	switch m.(type) {
	case *wire.GetState:
		return &wire.StateReply{Error: forbidden("You are not a member of this room.")} // as for a room you cannot see
	case *wire.GetMessages:
		return &wire.MessagesReply{Error: forbidden("You are not a member of this room.")}
	case *wire.RedactEvent:
		return &wire.SendReply{Error: forbidden("You are not a member of this room.")}
	case *wire.GetEvent:
		return &wire.EventReply{Error: e}
	case *wire.GetPDUs:
		return &wire.PDUsReply{Error: e}
	case *wire.ReceivePDU, *wire.ReceiveState:
		return &wire.ReceiveReply{Error: e}
	case *wire.GetLacking:
		return &wire.LackingReply{Error: e}
	case *wire.MakeMembership:
		return &wire.MakeMembershipReply{Error: e}
	case *wire.SendMembership:
		return &wire.SendMembershipReply{Error: e}
	case *wire.GetRoomVersion:
		return &wire.RoomVersionReply{}
	case *wire.FederationRead:
		return &wire.FederationReadReply{Error: e}
	case *wire.GetServers:
		return &wire.ServersReply{Error: e}
	case *wire.RoomSync:
		return &wire.RoomSyncReply{Error: e}
	case *wire.GetContext:
		return &wire.ContextReply{Error: e}
	default:
		return &wire.SendReply{Error: e}
	}
}

// commit hands b to the store; the events appended into it become visible
// to /sync and their users are woken once it is durable. A write a client
// waits on takes the urgent lane unless a background write of the room is
// still in flight: an urgent batch may overtake background ones, and the
// room's batches must land in order. A SendReply carries the highest
// stream position of the batch, so that a node that asked through another
// knows what its /sync must cover (stream.wrote).
func (r *room) commit(ctx actor.Context, b *storage.Batch, reply proto.Message, applied func()) {
	r.commitSeq++
	seq, self, rt := r.commitSeq, ctx.Self(), r.h.rt
	inFlight, wake, next, unsynced, out := r.inFlight, r.wakeUsers, r.meta.NextPos, r.unsynced, r.outgoing
	r.inFlight, r.wakeUsers, r.unsynced, r.outgoing = nil, nil, nil, nil
	if sr, ok := reply.(*wire.SendReply); ok && len(inFlight) > 0 {
		sr.Stream = slices.Max(inFlight)
	}
	urgent := reply != nil && r.background == 0
	if !urgent {
		r.background++
	}
	r.waiting = append(r.waiting, waiter{seq: seq, to: ctx.Sender(), reply: reply, urgent: urgent, applied: func() {
		// Tell users' actors first, then wake their syncs: a sync woken by a
		// join finds the room in the user's list.
		for _, ev := range unsynced {
			ev.prev = nil
		}
		if r.failed == nil {
			r.durable = next
			r.forgetArrived()
			if r.h.metrics != nil && len(inFlight) > 0 {
				r.h.metrics.RoomEvents(len(inFlight))
			}
			if applied != nil {
				applied()
			}
			if len(out) > 0 {
				r.sendOutgoing(out, reply == nil)
			}
		}
		if len(inFlight) > 0 {
			r.h.stream.touched(r.id, slices.Max(inFlight))
		}
		r.h.stream.done(r.part, inFlight, wake)
	}})
	done := func(err error) { rt.Post(self, &committed{seq: seq, err: err, client: reply != nil}) }
	b.Fence(r.part, r.fence)
	if urgent {
		r.h.store.CommitUrgent(b, done)
	} else {
		r.h.store.Commit(b, done)
	}
}

// onCommitted records the outcome of write m.seq, and answers the writes
// whose outcomes came, in order, up to the first still under way. The
// urgent and background lanes may finish out of order (on the raft commit
// path an urgent batch may be applied before a background one proposed
// earlier, which then fails): a write is settled with its own outcome,
// never with a later one's.
func (r *room) onCommitted(ctx actor.Context, m *committed) {
	i := slices.IndexFunc(r.waiting, func(w waiter) bool { return w.seq == m.seq })
	if i < 0 {
		return
	}
	r.waiting[i].done, r.waiting[i].err = true, m.err
	for len(r.waiting) > 0 && r.waiting[0].done {
		w := r.waiting[0]
		r.waiting = r.waiting[1:]
		if !w.urgent {
			r.background--
		}
		reply := w.reply
		if w.err != nil {
			r.h.log.Error("room write failed", "room", r.id, "err", w.err)
			r.failed = w.err
			reply = failedWrite(reply, w.err)
		}
		w.applied() // releases the stream positions either way
		if w.to != nil && reply != nil {
			ctx.Send(w.to, reply)
		}
	}
	if r.reloadDue() && len(r.waiting) == 0 {
		r.failed, r.stale = nil, false
		r.loadFailed = r.load()
		r.handleHeld(ctx)
	}
}

// reloadDue reports whether the room's memory may show events storage
// will never hold (a write failed, or a batch aborted while others were
// in flight): the room reads itself again once its writes in flight
// settle, and holds every message until then (room_hold.go).
func (r *room) reloadDue() bool { return r.failed != nil || r.stale }

// abort drops what memory holds beyond the last commit, after a failed
// append: it releases the batch's stream positions and lists, and reads
// the room again from storage. With writes in flight, which that read
// would miss (the next event would take the position of one of theirs),
// it reads once they settle (onCommitted); they finish as usual.
func (r *room) abort() {
	r.h.stream.done(r.part, r.inFlight, nil)
	r.inFlight, r.wakeUsers, r.unsynced, r.outgoing = nil, nil, nil, nil
	if len(r.waiting) > 0 {
		r.stale = true
		return
	}
	r.loadFailed = r.load()
}
