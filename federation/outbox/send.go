package outbox

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"time"

	"github.com/matrix-org/gomatrix"
	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/fclient"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/storage"
)

// txn is the destination's transaction: the entries after the last one
// delivered up to last, in queue order. Its record is written before it is
// sent; until the destination answers 200 it is sent again, the same.
type txn struct {
	id      gomatrixserverlib.TransactionID
	ts      spec.Timestamp
	last    uint64
	durable bool     // its record is on disk: it may be sent
	seqs    []uint64 // its entries, once read
	pdus    int
	body    *gomatrixserverlib.Transaction // read from the queue when sent; dropped after a failure
}

// sent is the destination's answer to attempt gen.
type sent struct {
	gen  uint64
	res  fclient.RespSend
	err  error
	took time.Duration
}

// retryTick ends back-off gen.
type retryTick struct{ gen uint64 }

// lingerTick ends a wait for more entries.
type lingerTick struct{}

// pump sends the transaction in flight if it may go, or makes the next one
// of what is queued: one in flight at a time, none while backing off.
func (o *destination) pump() {
	if o.sending != nil || !o.retryAt.IsZero() {
		return
	}
	if o.txn != nil {
		if o.txn.durable {
			o.send(o.txn)
		}
		return
	}
	if o.queued == 0 || o.lingers() {
		return
	}
	now := o.s.opts.Now()
	var latest map[string]uint64
	if now.Sub(o.oldest) > o.s.opts.Horizon && o.durable > o.compacted {
		var err error
		if latest, err = o.compact(); err != nil {
			o.s.opts.Log.Error("outbox cannot compact its queue", "destination", o.name, "err", err)
			o.backOff()
			return
		}
	}
	t := &txn{ts: spec.AsTimestamp(now)}
	if err := o.read(t, true, latest); err != nil {
		o.s.opts.Log.Error("outbox cannot read its queue", "destination", o.name, "err", err)
		o.backOff()
		return
	}
	if len(t.seqs) == 0 { // cannot be: queued counts what is on disk
		o.s.opts.Log.Error("outbox found none of the entries it counted", "destination", o.name, "queued", o.queued)
		o.queued = 0
		return
	}
	t.id = txnID(t.ts, t.last)
	t.body.TransactionID = t.id
	o.txn = t
	w := o.tail(0)
	w.record, w.txn = record{id: t.id, ts: t.ts, last: t.last}.encode(), t
}

// lingers reports whether the next transaction, with room for more,
// waits for more entries: while new ones are on their way to disk (they go
// along) unless an entry a client waits on is on disk already, and, when
// none is queued, until Linger has passed since the last entry came; at
// most MaxLinger since the oldest. It arms the timer that ends the wait.
func (o *destination) lingers() bool {
	now := o.s.opts.Now()
	client := o.urgent > o.sentThrough
	capped := o.oldest.Add(o.s.opts.MaxLinger).Sub(now)
	if o.queued >= o.s.opts.MaxPDUs || client && o.urgent <= o.durable || capped <= 0 {
		o.stopLinger()
		return false
	}
	for _, w := range o.writes {
		if w.entries > 0 {
			return true // its written news pumps again
		}
	}
	wait := min(o.latest.Add(o.s.opts.Linger).Sub(now), capped)
	if client || o.latest.IsZero() || wait <= 0 {
		o.stopLinger()
		return false
	}
	if o.linger == nil {
		rt, self := o.s.rt, o.self
		o.linger = time.AfterFunc(wait, func() { rt.Post(self, &lingerTick{}) })
	}
	return true
}

// stopLinger ends the wait for more entries.
func (o *destination) stopLinger() {
	if o.linger != nil {
		o.linger.Stop()
		o.linger = nil
	}
}

// read fills t with the entries after the last transaction delivered: when
// fresh, up to MaxPDUs PDUs and MaxEDUs EDUs of those on disk, in queue
// order, but the PDUs a compaction still being written drops (those not
// latest of their room); else those up to t.last.
func (o *destination) read(t *txn, fresh bool, latest map[string]uint64) error {
	body := &gomatrixserverlib.Transaction{
		TransactionID:  t.id,
		Origin:         o.s.opts.Origin,
		Destination:    spec.ServerName(o.name),
		OriginServerTS: t.ts,
		PDUs:           []json.RawMessage{},
	}
	upTo := t.last
	if fresh {
		upTo = o.durable
	}
	t.seqs = t.seqs[:0]
	err := o.s.store.Scan(o.k.queuePrefix(), o.k.queue(o.sentThrough+1), func(k, v []byte) error {
		seq := storage.ParseUint64(k)
		if seq > upTo {
			return storage.ErrStopScan
		}
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		switch {
		case fresh && e.kind == pduEntry && len(body.PDUs) == o.s.opts.MaxPDUs,
			fresh && e.kind == eduEntry && len(body.EDUs) == o.s.opts.MaxEDUs:
			return storage.ErrStopScan
		case latest != nil && e.kind == pduEntry && seq <= o.compacted && latest[e.name] != seq:
			return nil
		case e.kind == pduEntry:
			body.PDUs = append(body.PDUs, bytes.Clone(e.body))
		default:
			body.EDUs = append(body.EDUs, gomatrixserverlib.EDU{Type: e.name, Origin: string(o.s.opts.Origin),
				Destination: o.name, Content: bytes.Clone(e.body)})
		}
		t.seqs = append(t.seqs, seq)
		return nil
	})
	if err != nil {
		return err
	}
	if fresh && len(t.seqs) > 0 {
		t.last = t.seqs[len(t.seqs)-1]
	}
	t.pdus, t.body = len(body.PDUs), body
	return nil
}

// send sends t on a goroutine of its own; its answer comes back as sent.
func (o *destination) send(t *txn) {
	if t.body == nil {
		if err := o.read(t, false, nil); err != nil {
			o.s.opts.Log.Error("outbox cannot read its transaction", "destination", o.name, "txn", t.id, "err", err)
			o.backOff()
			return
		}
	}
	o.gen++
	gen, body, client, rt, self := o.gen, *t.body, o.s.opts.Client, o.s.rt, o.self
	ctx, cancel := context.WithTimeout(o.s.ctx, o.s.opts.RequestTimeout)
	start := time.Now()
	if !o.s.goSend(func() {
		res, err := client.SendTransaction(ctx, body)
		cancel()
		rt.Post(self, &sent{gen: gen, res: res, err: err, took: time.Since(start)})
	}) {
		cancel()
		return
	}
	o.sending = cancel
}

// sent takes the destination's answer: a 200 delivers the transaction,
// whatever it says of each PDU (the destination has them); a 4xx that
// refuses the transaction as such (refusedWhole) drops it, since the same
// txnId must carry the same body again; anything else backs off and sends
// it again.
func (o *destination) sent(m *sent) {
	if m.gen != o.gen || o.txn == nil {
		return
	}
	o.sending = nil
	t, met := o.txn, o.s.opts.Metrics
	if m.err != nil && refusedWhole(m.err) {
		o.s.opts.Log.Warn("destination refused a whole transaction: its PDUs are dropped, the destination fetches them from later events when it needs them",
			"destination", o.name, "txn", t.id, "pdus", t.pdus, "err", describe(m.err))
		if met != nil {
			met.OutboxTransactionFailed()
			met.OutboxDropped("refused", t.pdus)
		}
		o.dropped += uint64(t.pdus)
		o.done(t)
		return
	}
	if m.err != nil {
		o.s.opts.Log.Warn("transaction not delivered", "destination", o.name, "txn", t.id,
			"failures", o.failures+1, "err", describe(m.err))
		if met != nil {
			met.OutboxTransactionFailed()
		}
		t.body = nil
		o.backOff()
		return
	}
	refused, example := 0, ""
	for id, r := range m.res.PDUs {
		if r.Error != "" {
			refused++
			example = id + ": " + r.Error
		}
	}
	if refused > 0 {
		o.s.opts.Log.Info("destination refused PDUs of a transaction", "destination", o.name, "txn", t.id,
			"refused", refused, "one", example)
	}
	if met != nil {
		met.OutboxTransaction(t.pdus, refused, m.took)
	}
	o.delivered++
	o.done(t)
}

// done ends t, delivered or dropped: its entries leave the queue and the
// next transaction may go.
func (o *destination) done(t *txn) {
	o.failures = 0
	w := o.tail(0)
	for _, seq := range t.seqs {
		w.b.Delete(o.k.queue(seq))
	}
	w.record = record{id: t.id, ts: t.ts, last: t.last, delivered: true}.encode()
	o.sentThrough, o.txn = t.last, nil
	o.queued -= len(t.seqs)
	o.oldest = time.Time{}
	if o.queued > 0 {
		if err := o.readOldest(); err != nil {
			o.s.opts.Log.Error("outbox cannot read its queue", "destination", o.name, "err", err)
		}
	}
}

// refusedWhole reports whether err is a destination's 4xx answer that
// refuses a transaction as such (a malformed or oversized body, say), so
// that sending it again would be refused again. 401 (the destination could
// not check the signature yet), 408 and 429 are worth another attempt.
func refusedWhole(err error) bool {
	var h gomatrix.HTTPError
	if !errors.As(err, &h) || h.Code < 400 || h.Code >= 500 {
		return false
	}
	return h.Code != http.StatusUnauthorized && h.Code != http.StatusRequestTimeout && h.Code != http.StatusTooManyRequests
}

// describe returns err for a log line: a destination's error answer as its
// status and Matrix error, without the body's bytes.
func describe(err error) string {
	var h gomatrix.HTTPError
	if !errors.As(err, &h) {
		return err.Error()
	}
	if h.WrappedError != nil {
		return fmt.Sprintf("HTTP %d: %v", h.Code, h.WrappedError)
	}
	return fmt.Sprintf("HTTP %d: %.200s", h.Code, h.Contents)
}

// readOldest sets oldest to when the first entry not delivered was queued.
func (o *destination) readOldest() error {
	return o.s.store.Scan(o.k.queuePrefix(), o.k.queue(o.sentThrough+1), func(_, v []byte) error {
		e, err := decodeEntry(v)
		if err != nil {
			return err
		}
		o.oldest = e.at
		return storage.ErrStopScan
	})
}

// backOff waits before the next attempt: after the n-th failure in a row,
// for a time drawn from [BackoffMin, BackoffMin·2^n), at most BackoffMax.
func (o *destination) backOff() {
	o.failures++
	d := backoff(o.failures, o.s.opts.BackoffMin, o.s.opts.BackoffMax)
	o.gen++
	gen, rt, self := o.gen, o.s.rt, o.self
	o.retryAt = time.Now().Add(d)
	o.retry = time.AfterFunc(d, func() { rt.Post(self, &retryTick{gen: gen}) })
}

// backoff returns the wait after the n-th failure in a row (n >= 1): full
// jitter over a window that doubles with each failure, from lo·2 up to hi,
// above a floor of lo.
func backoff(n int, lo, hi time.Duration) time.Duration {
	window := lo
	for i := 0; i < n && window < hi; i++ {
		window *= 2
	}
	window = min(window, hi)
	if window <= lo {
		return lo
	}
	return lo + rand.N(window-lo)
}

// halt ends the send in progress and the back-off: the answers and ticks
// still on their way are stale.
func (o *destination) halt() {
	if o.sending != nil {
		o.sending()
		o.sending = nil
	}
	if o.retry != nil {
		o.retry.Stop()
		o.retry = nil
	}
	o.stopLinger()
	o.gen++
}

// compact drops each queued PDU but the latest of its room, of those after
// the last transaction delivered, and counts them: the destination asks
// for the events in between with get_missing_events. EDUs stay. It returns
// the seq of each room's latest PDU.
func (o *destination) compact() (map[string]uint64, error) {
	from, upTo := o.k.queue(o.sentThrough+1), o.durable
	latest := map[string]uint64{}
	var drop []uint64
	oldest := time.Time{}
	pass := func(fn func(seq uint64, e entry)) error {
		return o.s.store.Scan(o.k.queuePrefix(), from, func(k, v []byte) error {
			seq := storage.ParseUint64(k)
			if seq > upTo {
				return storage.ErrStopScan
			}
			e, err := decodeEntry(v)
			if err != nil {
				return err
			}
			fn(seq, e)
			return nil
		})
	}
	if err := pass(func(seq uint64, e entry) {
		if e.kind == pduEntry {
			latest[e.name] = seq
		}
	}); err != nil {
		return nil, err
	}
	if err := pass(func(seq uint64, e entry) {
		switch {
		case e.kind == pduEntry && latest[e.name] != seq:
			drop = append(drop, seq)
		case oldest.IsZero():
			oldest = e.at
		}
	}); err != nil {
		return nil, err
	}
	for _, seq := range drop {
		o.tail(0).b.Delete(o.k.queue(seq))
	}
	o.compacted, o.oldest = upTo, oldest
	o.queued -= len(drop)
	o.dropped += uint64(len(drop))
	if len(drop) > 0 {
		o.s.opts.Log.Warn("outbox dropped PDUs older than its horizon but each room's latest",
			"destination", o.name, "dropped", len(drop), "rooms", len(latest))
		if o.s.opts.Metrics != nil {
			o.s.opts.Metrics.OutboxDropped("horizon", len(drop))
		}
	}
	return latest, nil
}
