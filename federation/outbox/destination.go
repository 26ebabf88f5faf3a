package outbox

import (
	"cmp"
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// destination is the outbox of one destination server: the only code that
// reads or writes its keys. Entries are numbered (seq) as they come and
// written in order, one batch in flight at a time; entries up to durable
// are on disk, and those after sentThrough are not yet delivered. One
// transaction is in flight at a time; see send.go.
type destination struct {
	s    *Service
	name string
	k    keys
	idle *host.IdleWatch
	self *actor.PID

	seq     uint64 // the last seq given to an entry
	durable uint64 // the last seq on disk
	queued  int    // entries on disk not yet delivered or dropped
	oldest  time.Time
	latest  time.Time // when the last entry was queued since activation
	urgent  uint64    // the last seq of an entry a client waits on (not background)
	linger  *time.Timer
	rooms   map[string]*roomMark // the rooms heard from since activation

	writes  []*write // in order; writes[0] is on its way to disk while writing
	writing bool

	txn         *txn   // the transaction being recorded or sent; nil: none
	sentThrough uint64 // the last seq of the last transaction delivered
	compacted   uint64 // durable when the queue was last compacted
	sending     context.CancelFunc
	gen         uint64 // numbers sends and back-offs: the news of an older one is stale
	failures    int    // attempts failed in a row
	retryAt     time.Time
	retry       *time.Timer

	delivered, dropped uint64

	// fence stamps every write (storage.Batch.Fence): the host's fence of
	// the destination's partition when it last loaded.
	fence uint64
}

// roomMark is what the outbox knows of a room: the highest pos it queued,
// and the highest on disk (acked).
type roomMark struct{ queued, durable uint64 }

// write is one batch of the destination's keys: new entries, the deletion
// of delivered or dropped ones, the rooms' marks and the transaction
// record, all durable at once.
type write struct {
	b       storage.Batch
	bytes   int
	entries int       // new entries
	first   time.Time // when its first new entry was queued
	last    uint64    // the last seq of its new entries
	acks    map[string]uint64
	record  []byte // the txn key's new value, or nil
	txn     *txn   // the transaction the record is of, sent once durable
}

// A write holds at most this many entries and bytes, well within one
// badger transaction.
const (
	maxWriteOps   = 512
	maxWriteBytes = 1 << 20
)

// written tells the actor its write is durable, or failed.
type written struct {
	w   *write
	err error
}

func newDestination(s *Service, name string, idle *host.IdleWatch) *destination {
	return &destination{s: s, name: name, k: keysOf(s.rt, name), idle: idle}
}

// Receive handles one message, then writes and sends what it allows.
func (o *destination) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started:
		o.self = ctx.Self()
		o.idle.Set(o.s.rt.PassivateAfter())
		if err := o.load(); err != nil {
			o.s.opts.Log.Error("outbox cannot read its queue", "destination", o.name, "err", err)
			ctx.Stop(ctx.Self())
			return
		}
	case *actor.Stopping:
		o.halt()
		if o.s.opts.Metrics != nil {
			o.s.opts.Metrics.OutboxGone(o.name)
		}
		return
	case *actor.Stopped, *actor.Restarting:
		return
	case *host.IdleTimeout:
		o.s.rt.Idle(ctx, o.idle, o.busy())
		return
	case *host.StopWhenIdle:
		if !o.busy() {
			ctx.Stop(ctx.Self())
			return
		}
		o.s.rt.StayActive(ctx, o.idle)
	case *wire.OutboundPDUs:
		o.queuePDUs(m)
	case *wire.OutboundEDU:
		o.queueEDU(m)
	case *wire.Wake:
		// Started loaded the queue; pump sends it.
	case *wire.GetDestinations:
		ctx.Respond(&wire.DestinationsReply{Destinations: []*wire.DestinationState{o.state()}})
	case *written:
		o.written(m)
	case *sent:
		o.sent(m)
	case *retryTick:
		if m.gen == o.gen {
			o.retryAt, o.retry = time.Time{}, nil
		}
	case *lingerTick:
		o.linger = nil // pump waits again, or sends
	}
	o.pump()
	o.flush()
	if o.s.opts.Metrics != nil {
		o.s.opts.Metrics.OutboxState(o.name, o.queued, o.oldest, o.retryAt)
	}
}

// busy reports whether the destination has anything queued, being written
// or in flight: it must stay in memory.
func (o *destination) busy() bool { return o.queued > 0 || len(o.writes) > 0 || o.txn != nil }

// load reads what the destination needs from the store: the transaction
// record, the last seq and how many entries are queued (keys alone), and
// when the first was queued.
func (o *destination) load() error {
	o.fence = o.s.rt.Fence(o.s.rt.Partition(o.name)) // before the state: what follows was written under it
	o.rooms = map[string]*roomMark{}
	o.seq, o.durable, o.queued, o.oldest, o.sentThrough, o.compacted, o.txn = 0, 0, 0, time.Time{}, 0, 0, nil
	snap := o.s.store.Snapshot()
	defer snap.Close()
	switch v, err := snap.Get(o.k.txn()); {
	case err == nil:
		r, err := decodeRecord(v)
		if err != nil {
			return err
		}
		o.seq = r.last
		if r.delivered {
			o.sentThrough = r.last
		} else {
			o.txn = &txn{id: r.id, ts: r.ts, last: r.last, durable: true}
		}
	case err != storage.ErrNotFound:
		return err
	}
	prefix := o.k.queuePrefix()
	it := snap.Iterator(prefix, false)
	defer it.Close()
	for it.Seek(prefix); it.Valid(); it.Next() {
		if o.queued == 0 {
			if err := it.Value(func(v []byte) error {
				e, err := decodeEntry(v)
				o.oldest = e.at
				return err
			}); err != nil {
				return err
			}
		}
		o.queued++
		o.seq = max(o.seq, storage.ParseUint64(it.Key()))
	}
	o.durable = o.seq
	return nil
}

// room returns the mark of room, read from the store on first use.
func (o *destination) room(room string) (*roomMark, error) {
	if m, ok := o.rooms[room]; ok {
		return m, nil
	}
	m := &roomMark{}
	switch v, err := o.s.store.Get(o.k.room(room)); {
	case err == nil:
		m.queued = storage.ParseUint64(v)
		m.durable = m.queued
	case err != storage.ErrNotFound:
		return nil, err
	}
	o.rooms[room] = m
	return m, nil
}

// queuePDUs queues the PDUs of m above the highest pos queued for its room;
// the room's ack follows once they are on disk. A resend of PDUs all on
// disk is acked at once.
func (o *destination) queuePDUs(m *wire.OutboundPDUs) {
	mark, err := o.room(m.RoomId)
	if err != nil {
		o.s.opts.Log.Error("outbox cannot read a room's mark", "destination", o.name, "room", m.RoomId, "err", err)
		return
	}
	pdus := m.Pdus
	if !slices.IsSortedFunc(pdus, func(a, b *wire.OutboundPDU) int { return cmp.Compare(a.Pos, b.Pos) }) {
		pdus = slices.SortedFunc(slices.Values(pdus), func(a, b *wire.OutboundPDU) int { return cmp.Compare(a.Pos, b.Pos) })
	}
	top, now := mark.queued, o.s.opts.Now()
	var w *write
	for _, p := range pdus {
		if p.Pos <= top {
			continue
		}
		top = p.Pos
		if !json.Valid(p.Json) {
			o.s.opts.Log.Error("outbox drops a PDU that is not JSON", "destination", o.name, "room", m.RoomId, "pos", p.Pos)
			continue
		}
		w = o.add(entry{kind: pduEntry, at: now, name: m.RoomId, pos: p.Pos, body: p.Json}, m.Background)
		w.acks[m.RoomId] = p.Pos
	}
	switch {
	case top > mark.queued:
		if w == nil || w.acks[m.RoomId] != top { // the last ones were dropped
			o.tail(0).acks[m.RoomId] = top
		}
		mark.queued = top
	case len(pdus) > 0 && pdus[len(pdus)-1].Pos <= mark.durable:
		o.ack(m.RoomId, mark.durable)
	}
}

// queueEDU queues an EDU; nothing is acked.
func (o *destination) queueEDU(m *wire.OutboundEDU) {
	if len(m.Content) > 0 && !json.Valid(m.Content) {
		o.s.opts.Log.Error("outbox drops an EDU whose content is not JSON", "destination", o.name, "type", m.Type)
		return
	}
	o.add(entry{kind: eduEntry, at: o.s.opts.Now(), name: m.Type, body: m.Content}, true) // the EDUs sent are profile updates: they ride with a fan-out's PDUs
}

// add gives e the next seq and puts it in a write; background says no
// client waits on it.
func (o *destination) add(e entry, background bool) *write {
	o.seq++
	o.latest = e.at
	if !background {
		o.urgent = o.seq
	}
	v := e.encode()
	w := o.tail(len(v))
	w.b.Set(o.k.queue(o.seq), v)
	w.bytes += len(v)
	w.entries++
	w.last = o.seq
	if w.first.IsZero() {
		w.first = e.at
	}
	return w
}

// tail returns the write that gathers what comes next: the last one, if it
// is not on its way to disk and has room for size more bytes.
func (o *destination) tail(size int) *write {
	if k := len(o.writes); k > 0 && (k > 1 || !o.writing) {
		w := o.writes[k-1]
		if w.b.Len() < maxWriteOps && (w.bytes == 0 || w.bytes+size <= maxWriteBytes) {
			return w
		}
	}
	w := &write{acks: map[string]uint64{}}
	o.writes = append(o.writes, w)
	return w
}

// flush sends the first write to disk unless one is on its way already.
func (o *destination) flush() {
	if o.writing || len(o.writes) == 0 {
		return
	}
	w := o.writes[0]
	for room, pos := range w.acks {
		w.b.Set(o.k.room(room), []byte(storage.Uint64(pos)))
	}
	if w.record != nil {
		w.b.Set(o.k.txn(), w.record)
	}
	o.writing = true
	rt, self := o.s.rt, o.self
	w.b.Fence(rt.Partition(o.name), o.fence)
	o.s.store.Commit(&w.b, func(err error) { rt.Post(self, &written{w: w, err: err}) })
}

// written takes the news of the first write: its entries are queued, its
// rooms acked, its transaction may go.
func (o *destination) written(m *written) {
	if len(o.writes) == 0 || o.writes[0] != m.w {
		return // a write of before a reload
	}
	o.writing, o.writes = false, o.writes[1:]
	if m.err != nil {
		o.s.opts.Log.Error("outbox cannot write its queue; reading it again from storage", "destination", o.name, "err", m.err)
		o.reload()
		return
	}
	w := m.w
	if w.entries > 0 {
		if o.queued == 0 {
			o.oldest = w.first
		}
		o.queued += w.entries
		o.durable = w.last
	}
	for room, pos := range w.acks {
		mark := o.rooms[room]
		mark.durable = max(mark.durable, pos)
		o.ack(room, mark.durable)
	}
	if w.txn != nil && w.txn == o.txn {
		o.txn.durable = true
	}
}

// reload forgets what is not on disk and reads the destination again, after
// a write failed: rooms resend what they have no ack for. The destination
// then backs off, so that a failing disk is not written to in a loop.
func (o *destination) reload() {
	o.halt()
	o.writes, o.writing = nil, false
	if err := o.load(); err != nil {
		o.s.opts.Log.Error("outbox cannot read its queue", "destination", o.name, "err", err)
	}
	o.backOff()
}

// ack tells room that its PDUs up to pos are queued for the destination.
func (o *destination) ack(room string, pos uint64) {
	o.s.rt.Send(roomKind, room, &wire.OutboundAck{Destination: o.name, RoomId: room, Pos: pos})
}

// state is the destination as GetDestinations reports it.
func (o *destination) state() *wire.DestinationState {
	st := &wire.DestinationState{
		Destination:   o.name,
		Queued:        uint64(o.queued),
		Failures:      uint32(o.failures),
		DeliveredTxns: o.delivered,
		DroppedPdus:   o.dropped,
	}
	if !o.oldest.IsZero() {
		st.OldestQueuedMs = o.oldest.UnixMilli()
	}
	if o.txn != nil {
		st.TxnInFlight = string(o.txn.id)
	}
	if !o.retryAt.IsZero() {
		st.NextAttemptMs = o.retryAt.UnixMilli()
	}
	return st
}
