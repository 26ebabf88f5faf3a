package actors

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// user is the actor of one local user: it owns the account, the devices and
// their tokens, and the profile, all under one storage prefix. It is the only
// writer of that prefix, answers a write only after it is durable, and
// passivates when idle.
type user struct {
	h    *Service
	id   string
	idle *host.IdleWatch
	// fence stamps every batch of the user's (storage.Batch.Fence): the
	// host's fence of its partition when the user last loaded.
	fence uint64

	exists  bool
	account accountRecord
	devices map[string]deviceRecord // by device id
	tokens  map[string]string       // token hash -> device id

	profile   profileRecord // latest, including writes not yet durable
	committed profileRecord // what reads see: durable
	// committedJSON caches committed.Fields encoded; nil until a read needs it.
	committedJSON []byte
	commitSeq     uint64   // batches handed to the store
	waiting       []waiter // answers held until their batch is durable
	afterReply    []func() // work of the last committed batch that waits for its answer to go
	failed        error    // a commit failed: reload before the next write
	stopIdle      bool     // the partition routes nothing more here
	loadFailed    error

	rooms       map[string]*roomCursor // the user's rooms, by id; read on first need
	roomsLoaded bool
	d           deliveries    // propagation in progress
	ctx         actor.Context // the context of the message being handled
}

// profileRecord is the stored profile: its version and its fields, each value
// in canonical JSON. Records are never changed in place, only replaced.
type profileRecord struct {
	Version uint64                     `json:"v"`
	Fields  map[string]json.RawMessage `json:"f"`
	// Unlisted is the last version that changed displayname or avatar_url
	// and went to no room (propagate_to=none): it is in no history, and a
	// join that carried an older profile gets a snapshot (joinSnapshot).
	Unlisted uint64 `json:"u,omitempty"`
}

type accountRecord struct {
	PasswordHash []byte `json:"pw,omitempty"`
	Admin        bool   `json:"admin,omitempty"`
	Created      int64  `json:"created"`
}

type deviceRecord struct {
	TokenHash   []byte `json:"token"`
	DisplayName string `json:"name,omitempty"`
	Created     int64  `json:"created"`
}

// waiter is an answer sent once commit seq is durable.
type waiter struct {
	seq     uint64
	to      *actor.PID
	reply   proto.Message
	applied func() // runs when durable (e.g. publish the profile to reads)
	urgent  bool   // committed in the urgent lane
	// A room's: the batch's outcome came (done), err is its error; the
	// room settles its writes in order once every one before is done.
	done bool
	err  error
}

// committed reports that the batch seq is durable (err nil) or failed.
type committed struct {
	seq    uint64
	err    error
	client bool // a client waits for it: a room runs it in the fast lane
}

func newUser(h *Service, id string) *user { return &user{h: h, id: id} }

func (u *user) key(parts ...string) []byte {
	return storage.Key(append([]string{"p", partitionName(u.h.Partition(u.id)), "u", u.id}, parts...)...)
}

func (u *user) Receive(ctx actor.Context) {
	u.ctx = ctx
	switch m := ctx.Message().(type) {
	case *actor.Started:
		u.loadFailed = u.load()
		u.idle.Set(u.h.cfg.Actors.PassivateAfter)
		if u.loadFailed == nil && len(u.d.history) > 0 { // resume after a restart
			u.loadFailed = u.ensureRooms()
			if u.loadFailed == nil {
				u.deliver()
			}
		}
		if u.loadFailed == nil {
			u.publishEntry()
		}
		return
	case *host.IdleTimeout:
		u.h.idle(ctx, u.idle, u.busy())
		return
	case *actor.Stopping, *actor.Stopped, *actor.Restarting:
		return // stopping already: asking again would reach a dead actor
	case *host.StopWhenIdle:
		if u.busy() { // busy since it asked: acks may be held for it
			u.h.stayActive(ctx, u.idle)
			return
		}
		u.stopIdle = true
	case *resendTick:
		u.resend()
	case *host.Moved:
		u.resendMoved(m)
	case *committed:
		u.onCommitted(ctx, m)
	case proto.Message:
		if u.loadFailed != nil {
			u.h.log.Error("user actor cannot load its state", "user", u.id, "err", u.loadFailed)
			ctx.Respond(internalError(m))
			return
		}
		if needsRooms(m) {
			if err := u.ensureRooms(); err != nil {
				u.h.log.Error("user actor cannot read its rooms", "user", u.id, "err", err)
				ctx.Respond(internalError(m))
				return
			}
		}
		u.handle(ctx, m)
	}
	if u.stopIdle && !u.busy() {
		ctx.Stop(ctx.Self())
	}
}

// needsRooms tells the messages whose handling reads the room cursors.
func needsRooms(m proto.Message) bool {
	switch m.(type) {
	case *wire.UpdateAcks, *wire.MembershipChanged, *wire.ForgetRoom, *wire.GetRooms, *wire.GetPending, *wire.Wake:
		return true
	}
	return false
}

func (u *user) handle(ctx actor.Context, msg proto.Message) {
	switch m := msg.(type) {
	case *wire.Register:
		u.register(ctx, m)
	case *wire.GetAccount:
		ctx.Respond(&wire.Account{Exists: u.exists, PasswordHash: u.account.PasswordHash, Admin: u.account.Admin})
	case *wire.AddDevice:
		u.addDevice(ctx, m)
	case *wire.Authenticate:
		u.authenticate(ctx, m)
	case *wire.RemoveDevices:
		u.removeDevices(ctx, m)
	case *wire.GetProfile:
		ctx.Respond(u.readProfile())
	case *wire.SetProfileField:
		u.setField(ctx, m)
	case *wire.DeleteProfileField:
		u.deleteField(ctx, m)
	case *wire.ReplaceProfile:
		u.replaceProfile(ctx, m)
	case *wire.UpdateAcks:
		u.onAcks(m)
	case *wire.MembershipChanged:
		u.onMembership(m)
	case *wire.ForgetRoom:
		if c, ok := u.rooms[m.RoomId]; ok && c.Membership != "join" {
			c.Forgotten = true
			var b storage.Batch
			b.Set(u.key("room", m.RoomId), mustJSON(c))
			u.commitIn(ctx, &b, &wire.Done{}, nil, false) // after the cursor's other writes
		} else {
			ctx.Respond(&wire.Done{})
		}
	case *wire.GetRooms:
		ctx.Respond(u.rooms2reply())
	case *wire.GetPending:
		ctx.Respond(u.pending(int(m.Limit)))
	case *wire.PutFilter:
		u.putFilter(ctx, m)
	case *wire.GetFilter:
		u.getFilter(ctx, m)
	case *wire.GetDevices:
		ctx.Respond(u.getDevices())
	case *wire.RenameDevice:
		u.renameDevice(ctx, m)
	case *wire.Wake: // a restart: what was owed to the rooms is in their cursors and the history
		u.d.marked = true
		u.deliver()
	default:
		u.h.log.Warn("user actor got an unknown message", "type", fmt.Sprintf("%T", msg))
	}
}

// load reads the user's state from storage.
func (u *user) load() error {
	u.fence = u.h.rt.Fence(u.h.Partition(u.id)) // before the state: what follows was written under it
	u.devices, u.tokens = map[string]deviceRecord{}, map[string]string{}
	u.profile = profileRecord{Fields: map[string]json.RawMessage{}}
	raw, err := u.h.store.Get(u.key("account"))
	if err := u.loadDeliveries(); err != nil {
		return err
	}
	if errors.Is(err, storage.ErrNotFound) {
		u.exists = false
		u.committed, u.committedJSON = u.profile, nil
		return nil
	}
	if err != nil {
		return err
	}
	if err := json.Unmarshal(raw, &u.account); err != nil {
		return fmt.Errorf("decode account: %w", err)
	}
	u.exists = true
	if raw, err = u.h.store.Get(u.key("profile")); err == nil {
		if err := json.Unmarshal(raw, &u.profile); err != nil {
			return fmt.Errorf("decode profile: %w", err)
		}
		if u.profile.Fields == nil {
			u.profile.Fields = map[string]json.RawMessage{}
		}
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	u.committed, u.committedJSON = u.profile, nil
	return u.h.store.Scan(storage.Prefix(string(u.key("dev"))), nil, func(k, v []byte) error {
		var d deviceRecord
		if err := json.Unmarshal(v, &d); err != nil {
			return fmt.Errorf("decode device: %w", err)
		}
		id := string(k[len(u.key("dev"))+1:])
		u.devices[id] = d
		u.tokens[string(d.TokenHash)] = id
		return nil
	})
}

// commit hands b to the store and holds reply until b is durable. The
// store's committer then sends the reply itself, right after telling the
// actor, whose mailbox takes that news ahead of any request: a client's
// answer does not wait for the actor to finish what it is doing (a batch
// of rooms' acks, say), and its next request still finds applied run. A
// batch with a reply goes in the urgent lane, ahead of background batches.
func (u *user) commit(ctx actor.Context, b *storage.Batch, reply proto.Message, applied func()) {
	u.commitIn(ctx, b, reply, applied, reply != nil)
}

// commitIn is commit in the lane chosen. A write that must land after
// background batches queued before it (a room's cursor: the others are
// written there) goes in the background lane, reply or not.
func (u *user) commitIn(ctx actor.Context, b *storage.Batch, reply proto.Message, applied func(), urgent bool) {
	u.commitSeq++
	seq, self, rt, to := u.commitSeq, ctx.Self(), u.h.rt, ctx.Sender()
	u.waiting = append(u.waiting, waiter{seq: seq, to: to, reply: reply, applied: applied})
	done := func(err error) {
		rt.Post(self, &committed{seq: seq, err: err})
		if to != nil && reply != nil {
			if err != nil {
				rt.Post(to, failedWrite(reply, err))
			} else {
				rt.Post(to, reply)
			}
		}
	}
	b.Fence(u.h.Partition(u.id), u.fence)
	if urgent {
		u.h.store.CommitUrgent(b, done)
	} else {
		u.h.store.Commit(b, done)
	}
}

// onCommitted answers the write of batch m.seq. Batches of the urgent and
// the background lane may finish in either order; each lane keeps its own.
func (u *user) onCommitted(ctx actor.Context, m *committed) {
	i := slices.IndexFunc(u.waiting, func(w waiter) bool { return w.seq == m.seq })
	if i < 0 {
		return
	}
	w := u.waiting[i]
	u.waiting = slices.Delete(u.waiting, i, i+1)
	if m.err != nil {
		u.h.log.Error("user write failed", "user", u.id, "err", m.err)
		u.failed = m.err
	} else if w.applied != nil {
		w.applied()
	}
	for _, f := range u.afterReply {
		f()
	}
	u.afterReply = nil
	if u.failed != nil && len(u.waiting) == 0 {
		// Memory may hold writes that never reached disk: start again from disk.
		u.failed = nil
		u.loadFailed = u.load()
	}
}

// failedWrite is the answer to a write that failed with err: Reroute when
// the partition's log refused it for another node's (the requester's host
// sends it there), else internalError.
func failedWrite(reply proto.Message, err error) proto.Message {
	if errors.Is(err, storage.ErrNotApplied) {
		return &wire.Reroute{}
	}
	return internalError(reply)
}

// internalError is the answer of the right type for a write that failed.
func internalError(m proto.Message) proto.Message {
	e := internal("internal storage error")
	switch m.(type) {
	case *wire.WriteReply, *wire.SetProfileField, *wire.DeleteProfileField, *wire.ReplaceProfile:
		return &wire.WriteReply{Error: e}
	case *wire.AuthReply, *wire.Authenticate:
		return &wire.AuthReply{}
	default:
		return &wire.Done{Error: e}
	}
}

func now() int64 { return time.Now().UnixMilli() }

// mustJSON encodes a record of this package. It leaves <, >, & and
// U+2028/9 as they are: an event's content must keep the bytes its hashes
// cover.
func mustJSON(v any) []byte {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		panic(err) // only records of this package: cannot fail
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
}
