package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// DirectoryPublic is the id of the public room directory's actor.
const DirectoryPublic = "public"

// durableActor is what the alias and directory actors share: a commit helper
// that answers a write once its batch is durable, and passivation when idle.
type durableActor struct {
	h          *Service
	idle       *host.IdleWatch
	commitSeq  uint64
	waiting    []waiter
	stopIdle   bool
	loadFailed error
	reload     func() error
	// part and fence stamp every batch (storage.Batch.Fence): the actor's
	// partition and the host's fence of it when the actor last loaded.
	part  int
	fence uint64
}

// load reads the partition's fence, then the actor's state.
func (d *durableActor) load(id string) error {
	d.part = d.h.Partition(id)
	d.fence = d.h.rt.Fence(d.part)
	return d.reload()
}

// receive handles the lifecycle messages; it reports whether msg is a
// request for the actor itself (handle it, then call after).
func (d *durableActor) receive(ctx actor.Context, kind, id string) (proto.Message, bool) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		d.loadFailed = d.load(id)
		d.idle.Set(d.h.cfg.Actors.PassivateAfter)
	case *host.IdleTimeout:
		d.h.idle(ctx, d.idle, len(d.waiting) > 0)
	case *host.StopWhenIdle:
		d.stopIdle = true
		d.after(ctx)
	case *committed:
		d.onCommitted(ctx, m, kind, id)
		d.after(ctx)
	case proto.Message:
		if d.loadFailed != nil {
			d.h.log.Error("actor cannot load its state", "kind", kind, "id", id, "err", d.loadFailed)
			ctx.Respond(internalError(m))
			d.after(ctx)
			return nil, false
		}
		return m, true
	}
	return nil, false
}

// after stops the actor once the partition routes nothing more to it and
// no answer waits.
func (d *durableActor) after(ctx actor.Context) {
	if d.stopIdle && len(d.waiting) == 0 {
		ctx.Stop(ctx.Self())
	}
}

// commit hands b to the store and holds reply until b is durable; applied
// runs first. Every write of these actors has a client waiting: one lane
// (urgent) keeps them in order.
func (d *durableActor) commit(ctx actor.Context, b *storage.Batch, reply proto.Message, applied func()) {
	d.commitSeq++
	seq, self, rt := d.commitSeq, ctx.Self(), d.h.rt
	d.waiting = append(d.waiting, waiter{seq: seq, to: ctx.Sender(), reply: reply, applied: applied})
	b.Fence(d.part, d.fence)
	d.h.store.CommitUrgent(b, func(err error) { rt.Post(self, &committed{seq: seq, err: err}) })
}

func (d *durableActor) onCommitted(ctx actor.Context, m *committed, kind, id string) {
	i := slices.IndexFunc(d.waiting, func(w waiter) bool { return w.seq == m.seq })
	if i < 0 {
		return
	}
	w := d.waiting[i]
	d.waiting = slices.Delete(d.waiting, i, i+1)
	reply := w.reply
	if m.err != nil {
		d.h.log.Error("write failed", "kind", kind, "id", id, "err", m.err)
		reply = storageError(reply, m.err)
	} else if w.applied != nil {
		w.applied()
	}
	if w.to != nil && reply != nil {
		ctx.Send(w.to, reply)
	}
	if m.err != nil && len(d.waiting) == 0 {
		d.loadFailed = d.load(id) // memory may hold writes that never reached disk
	}
}

// storageError is the answer of the right type for a write that failed
// with err (Reroute for one another node takes: failedWrite).
func storageError(m proto.Message, err error) proto.Message {
	if errors.Is(err, storage.ErrNotApplied) {
		return &wire.Reroute{}
	}
	e := internal("internal storage error")
	switch m.(type) {
	case *wire.AliasReply:
		return &wire.AliasReply{Error: e}
	default:
		return &wire.Done{Error: e}
	}
}

// alias is the actor of one room alias: it owns the alias's record. Reads
// see what is durable; writes check against the latest state.
type alias struct {
	durableActor
	id      string
	latest  *aliasRecord // nil: no alias
	durable *aliasRecord
}

type aliasRecord struct {
	RoomID  string `json:"room"`
	Creator string `json:"creator"`
	Created int64  `json:"created"`
}

func newAlias(h *Service, id string) *alias {
	a := &alias{id: id}
	a.h, a.reload = h, a.load
	return a
}

func (a *alias) key() []byte {
	return storage.Key("p", partitionName(a.h.Partition(a.id)), "a", a.id)
}

// indexKey is the alias's entry in its partition's index of aliases by room,
// written with the record (see roomAliasesIn).
func (a *alias) indexKey(room string) []byte {
	return aliasIndexKey(a.h.Partition(a.id), room, a.id)
}

func (a *alias) load() error {
	a.latest, a.durable = nil, nil
	raw, err := a.h.store.Get(a.key())
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	var rec aliasRecord
	if err := json.Unmarshal(raw, &rec); err != nil {
		return fmt.Errorf("decode alias: %w", err)
	}
	a.latest, a.durable = &rec, &rec
	return nil
}

func (a *alias) Receive(ctx actor.Context) {
	msg, ok := a.receive(ctx, KindAlias, a.id)
	if !ok {
		return
	}
	switch m := msg.(type) {
	case *wire.GetAlias:
		if a.durable == nil {
			ctx.Respond(&wire.AliasReply{Error: aliasNotFound()})
		} else {
			ctx.Respond(&wire.AliasReply{RoomId: a.durable.RoomID, Creator: a.durable.Creator})
		}
	case *wire.PutAlias:
		a.put(ctx, m)
	case *wire.DeleteAlias:
		a.delete(ctx, m)
	default:
		ctx.Respond(&wire.Done{Error: unsupported()})
	}
	a.after(ctx)
}

func aliasNotFound() *wire.Error {
	return notFound(wire.Error_ALIAS, "Room alias not found.")
}

func (a *alias) put(ctx actor.Context, m *wire.PutAlias) {
	if m.Alias != a.id || m.RoomId == "" || strings.ContainsRune(m.RoomId, 0) || m.UserId == "" {
		ctx.Respond(&wire.AliasReply{Error: badValue(wire.Error_ALIAS, "Bad alias request.")})
		return
	}
	if a.latest != nil {
		ctx.Respond(&wire.AliasReply{Error: conflict(wire.Error_ALIAS, "Room alias "+a.id+" already exists.")})
		return
	}
	rec := &aliasRecord{RoomID: m.RoomId, Creator: m.UserId, Created: now()}
	a.latest = rec
	var b storage.Batch
	b.Set(a.key(), mustJSON(rec))
	b.Set(a.indexKey(rec.RoomID), []byte{})
	a.commit(ctx, &b, &wire.AliasReply{RoomId: rec.RoomID, Creator: rec.Creator}, func() { a.durable = rec })
}

func (a *alias) delete(ctx actor.Context, m *wire.DeleteAlias) {
	rec := a.latest
	if rec == nil || (m.RoomId != "" && rec.RoomID != m.RoomId) {
		ctx.Respond(&wire.AliasReply{Error: aliasNotFound()})
		return
	}
	if !m.Admin && m.UserId != rec.Creator && !(m.MayChange && m.RoomId == rec.RoomID) {
		ctx.Respond(&wire.AliasReply{Error: forbidden("You may not delete this alias.")})
		return
	}
	a.latest = nil
	var b storage.Batch
	b.Delete(a.key())
	b.Delete(a.indexKey(rec.RoomID))
	// Batches commit in order: a later put's applied sets durable again.
	a.commit(ctx, &b, &wire.AliasReply{RoomId: rec.RoomID, Creator: rec.Creator}, func() { a.durable = nil })
}

// directory is the actor of the public room directory: the set of
// published rooms, one key each. Writes are unconditional; reads see what is
// durable.
type directory struct {
	durableActor
	id    string
	rooms map[string]bool
}

func newDirectory(h *Service, id string) *directory {
	d := &directory{id: id}
	d.h, d.reload = h, d.load
	return d
}

func (d *directory) key(room string) []byte {
	return storage.Key("p", partitionName(d.h.Partition(d.id)), "d", d.id, room)
}

func (d *directory) load() error {
	d.rooms = map[string]bool{}
	prefix := storage.Prefix("p", partitionName(d.h.Partition(d.id)), "d", d.id)
	return d.h.store.Scan(prefix, nil, func(k, _ []byte) error {
		d.rooms[string(k[len(prefix):])] = true
		return nil
	})
}

func (d *directory) Receive(ctx actor.Context) {
	msg, ok := d.receive(ctx, KindDirectory, d.id)
	if !ok {
		return
	}
	switch m := msg.(type) {
	case *wire.Publish:
		if m.RoomId == "" || strings.ContainsRune(m.RoomId, 0) {
			ctx.Respond(&wire.Done{Error: badValue(wire.Error_ROOM, "Bad room ID.")})
			break
		}
		var b storage.Batch
		if m.Visible {
			b.Set(d.key(m.RoomId), []byte{})
		} else {
			b.Delete(d.key(m.RoomId))
		}
		d.commit(ctx, &b, &wire.Done{}, func() {
			if m.Visible {
				d.rooms[m.RoomId] = true
			} else {
				delete(d.rooms, m.RoomId)
			}
		})
	case *wire.ListPublic:
		out := &wire.PublicList{RoomIds: make([]string, 0, len(d.rooms))}
		for r := range d.rooms {
			out.RoomIds = append(out.RoomIds, r)
		}
		slices.Sort(out.RoomIds)
		ctx.Respond(out)
	default:
		ctx.Respond(&wire.Done{Error: unsupported()})
	}
	d.after(ctx)
}
