package outbox

import (
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/matrix-org/gomatrixserverlib"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/host"
	"persona/storage"
)

// A destination's keys lie under p/<partition>/fo/<destination>/ (parts
// joined by NUL), in the key range of the partition the destination maps
// to: a cluster replicates its queue with the partition, and its outbox
// resumes on the partition's next leader.
//
//	q/<seq>    a queued entry: a PDU (room, pos, JSON) or an EDU (type,
//	           content), with the time it was queued; seq (8 bytes,
//	           big-endian) numbers entries in queue order and is never reused
//	r/<room>   the highest pos of the room queued: a room's resend of a pos
//	           at or below it is a duplicate
//	txn        the transaction in flight (its id, timestamp and the last seq
//	           it carries), written before it is sent and kept once it is
//	           delivered, so that seq never goes back
type keys struct{ part, dest string }

// keysOf returns the keys of destination dest on h's partitions.
func keysOf(h *host.Host, dest string) keys {
	return keys{part: host.PartitionKey(h.Partition(dest)), dest: dest}
}

func (k keys) queuePrefix() []byte { return storage.Prefix("p", k.part, "fo", k.dest, "q") }

func (k keys) queue(seq uint64) []byte {
	return storage.Key("p", k.part, "fo", k.dest, "q", storage.Uint64(seq))
}

func (k keys) room(room string) []byte { return storage.Key("p", k.part, "fo", k.dest, "r", room) }

func (k keys) txn() []byte { return storage.Key("p", k.part, "fo", k.dest, "txn") }

// past returns the first key after every key of the destination.
func (k keys) past() []byte { return append(storage.Key("p", k.part, "fo", k.dest), 1) }

// partitionRoot is the prefix of the keys of every destination of
// partition p.
func partitionRoot(p int) []byte { return storage.Prefix("p", host.PartitionKey(p), "fo") }

// Kinds of queued entries: their value's first byte.
const (
	pduEntry byte = 1
	eduEntry byte = 2
)

// entry is one queued PDU or EDU.
type entry struct {
	kind byte
	at   time.Time // when it was queued
	name string    // a PDU's room, an EDU's type
	pos  uint64    // a PDU's position in its room
	body []byte    // a PDU's JSON, an EDU's content
}

// encode returns the entry's value: its kind, the time it was queued
// (unix nanoseconds, 8 bytes), its name (length-prefixed), a PDU's pos (8
// bytes) and last the body.
func (e entry) encode() []byte {
	v := make([]byte, 0, 1+8+binary.MaxVarintLen64+len(e.name)+8+len(e.body))
	v = append(v, e.kind)
	v = binary.BigEndian.AppendUint64(v, uint64(e.at.UnixNano()))
	v = binary.AppendUvarint(v, uint64(len(e.name)))
	v = append(v, e.name...)
	if e.kind == pduEntry {
		v = binary.BigEndian.AppendUint64(v, e.pos)
	}
	return append(v, e.body...)
}

var errBadEntry = errors.New("outbox: malformed queue entry")

// decodeEntry reads a value written by encode. The body aliases v.
func decodeEntry(v []byte) (entry, error) {
	if len(v) < 9 || (v[0] != pduEntry && v[0] != eduEntry) {
		return entry{}, errBadEntry
	}
	e := entry{kind: v[0], at: time.Unix(0, int64(binary.BigEndian.Uint64(v[1:])))}
	n, k := binary.Uvarint(v[9:])
	if k <= 0 || uint64(len(v)-9-k) < n {
		return entry{}, errBadEntry
	}
	rest := v[9+k:]
	e.name, rest = string(rest[:n]), rest[n:]
	if e.kind == pduEntry {
		if len(rest) < 8 {
			return entry{}, errBadEntry
		}
		e.pos, rest = binary.BigEndian.Uint64(rest), rest[8:]
	}
	e.body = rest
	return e, nil
}

// record is what the txn key holds: a transaction in flight, or the last
// one delivered.
type record struct {
	id        gomatrixserverlib.TransactionID
	ts        spec.Timestamp
	last      uint64 // the last seq it carries
	delivered bool
}

// encode returns the record's value: 1 byte (1 in flight, 2 delivered), the
// last seq and the timestamp (8 bytes each), then the id.
func (r record) encode() []byte {
	v := make([]byte, 0, 17+len(r.id))
	state := byte(1)
	if r.delivered {
		state = 2
	}
	v = append(v, state)
	v = binary.BigEndian.AppendUint64(v, r.last)
	v = binary.BigEndian.AppendUint64(v, uint64(r.ts))
	return append(v, r.id...)
}

// decodeRecord reads a value written by record.encode.
func decodeRecord(v []byte) (record, error) {
	if len(v) < 17 || v[0] < 1 || v[0] > 2 {
		return record{}, fmt.Errorf("outbox: malformed transaction record (%d bytes)", len(v))
	}
	return record{
		delivered: v[0] == 2,
		last:      binary.BigEndian.Uint64(v[1:]),
		ts:        spec.Timestamp(binary.BigEndian.Uint64(v[9:])),
		id:        gomatrixserverlib.TransactionID(v[17:]),
	}, nil
}

// txnID names the transaction of timestamp ts whose last entry is seq:
// unique per destination since seq never goes back, and across a data
// directory started afresh since the clock goes on.
func txnID(ts spec.Timestamp, last uint64) gomatrixserverlib.TransactionID {
	return gomatrixserverlib.TransactionID(fmt.Sprintf("%d-%d", ts, last))
}
