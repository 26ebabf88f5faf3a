package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Fences keep a partition's writers of one leadership from writing over
// another's, on the CommitPath. A node that comes to lead a partition's
// group proposes a fence record (FenceRecord) with a number of its own,
// its term, before its actors load; once the record is applied, that
// number is the partition's fence on every replica. A batch stamped with
// a fence (Batch.Fence) is applied only if its partition's fence is still
// that number when its record is applied: a batch an actor built from
// what it loaded under an earlier leadership, still queued on a node that
// lost the partition and has led it again since, is refused with
// ErrNotApplied, alike on every replica. A batch with no fence is always
// applied, and the store's own commit log, with no CommitPath, keeps no
// fences.

// ErrFenced is the reason, wrapped with ErrNotApplied, that a batch
// stamped with a fence was not applied: its partition's fence had
// changed.
var ErrFenced = errors.New("the partition's fence changed")

// Fence stamps b with fence n of partition p: on the CommitPath b is
// applied only if p's fence is n then. It stamps nothing if n is 0, or if
// b's keys are not partition p's.
func (b *Batch) Fence(p int, n uint64) { b.fence, b.fenceRange = n, p }

// fenceOf returns b's fence, 0 if its keys are not in rng.
func (b *Batch) fenceOf(rng int) uint64 {
	if b.fenceRange != rng {
		return 0
	}
	return b.fence
}

// Record ids: a round record's id with fencedRound set carries a fence
// before each batch (records without it, written before fences, carry
// none); fenceRecordID marks a fence record.
const (
	fencedRound   = 1 << 63
	fenceRecordID = ^uint64(0)
)

// FenceRecord returns the record that makes n its partition's fence once
// applied: the caller proposes it to the partition's log.
func FenceRecord(n uint64) []byte {
	return binary.AppendUvarint(binary.BigEndian.AppendUint64(nil, fenceRecordID), n)
}

// fenceKey holds partition p's fence: in its key range, so that a
// snapshot of the partition carries it.
func fenceKey(p int) []byte { return append(partitionPrefix(p), "fence"...) }

// fences is ApplyCommitted's view of the partitions' fences: badger's,
// with the fence records of the records being applied over it.
type fences struct {
	s   *Store
	now map[int]uint64
}

// of returns partition rng's fence.
func (f *fences) of(rng int) (uint64, error) {
	if n, ok := f.now[rng]; ok {
		return n, nil
	}
	var n uint64
	if rng != NodeRange {
		raw, err := f.s.Get(fenceKey(rng))
		switch {
		case errors.Is(err, ErrNotFound):
		case err != nil:
			return 0, fmt.Errorf("read the fence of partition %d: %w", rng, err)
		default:
			n = ParseUint64(raw)
		}
	}
	if f.now == nil {
		f.now = map[int]uint64{}
	}
	f.now[rng] = n
	return n, nil
}

// set makes n partition rng's fence and returns the batch that records
// it; nil for NodeRange, which has no fence.
func (f *fences) set(rng int, n uint64) *Batch {
	if rng == NodeRange {
		return nil
	}
	if f.now == nil {
		f.now = map[int]uint64{}
	}
	f.now[rng] = n
	var b Batch
	b.Set(fenceKey(rng), []byte(Uint64(n)))
	return &b
}

// parseFenceRecord returns the fence of a fence record's body.
func parseFenceRecord(body []byte) (uint64, bool) {
	n, k := binary.Uvarint(body)
	return n, k > 0 && k == len(body)
}
