package raft

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	pb "go.etcd.io/raft/v3/raftpb"
	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
)

// The log is a run of append-only files, segments, named by their number
// ("000007.log"), of which the newest is written. A segment starts with a
// checkpoint: every group's durable point (index, term, membership: the
// state machine holds the entries up to it durably, so the log may drop
// them) and its hard state; a group a checkpoint does not list is gone.
// Rounds append to it: each is one frame, one write and, when raft asks
// for durability, one fdatasync. Once the rounds have written
// SegmentBytes the driver writes the next segment's checkpoint. An older
// segment is kept while it holds an entry after its group's durable point
// in the newest checkpoint; then it is done with, and kept as a spare to
// write over or deleted. Entries are written once: a checkpoint copies
// none.
//
// A segment is written under a temporary name and renamed once its
// checkpoint is durable, so every "*.log" starts with a whole checkpoint.
// Recovery reads the segments in order: a snapshot point in a checkpoint
// drops the entries up to it, one in a round (a snapshot installed)
// drops them all. A frame is checked whole, so a round is recovered whole
// or not at all (a group's entries never without the hard state that
// commits them). Every frame carries its segment's number, which tells a
// spare's old frames from new ones. After a crash the last round may be
// torn; recovery stops at the first frame that does not check, and the
// driver starts a new segment at once, so that nothing is ever written
// after a torn frame.
//
// With prewrite set, a segment is written over space written before: one
// with no spare to write over is first filled with zeros (at open), and
// the next one's spare is prepared in the background. fdatasync then
// writes a round's blocks alone; an append would also commit the file's
// new size and extents through the file system's journal, behind every
// other file's writes. Zeros end a segment: no frame is shorter than its
// segment number.

// Record kinds.
const (
	recEntries    = 1 // entries of a group, consecutive; they replace any from their first index on
	recHardState  = 2 // a group's term, vote and commit index
	recSnapshot   = 3 // a group's snapshot point: index, term, membership; the log before it is gone (after it too, in a round)
	recRemove     = 4 // the node no longer holds a replica of the group
	recCheckpoint = 5 // the end of a segment's checkpoint
)

// A frame is: its payload's length (4 bytes), the payload's CRC-32C (4),
// and the payload: the segment's number (8), then records. A record is
// its kind (1), its group (uvarint), its body's length (4) and the body.
const (
	frameHeader  = 8
	recordLength = 4
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// logFile is the segment being written. Only the driver loop uses it.
type logFile struct {
	dir   string
	f     *os.File
	n     uint64 // segment number
	size  int64
	base  int64             // the size of the segment's checkpoint
	buf   []byte            // records not yet written
	dirty bool              // a write not synced yet
	spare string            // a segment done with, to write the next over; "" for none
	last  map[uint64]uint64 // each group's highest entry index in this segment
	kept  []keptSegment     // older segments still needed, oldest first

	prewrite  int64         // bytes of zeros a segment with no spare is written over; 0 for none
	preparing chan string   // the spare being prepared: its path once ready, "" if that failed
	stop      chan struct{} // closed by close: a spare being prepared is given up
}

// keptSegment is an older segment and each group's highest entry index
// in it.
type keptSegment struct {
	n    uint64
	last map[uint64]uint64
}

// groupLog is a group's persistent raft state as the log holds it.
type groupLog struct {
	snap *pb.SnapshotMetadata // nil: no snapshot point (a group waiting to be given one)
	hs   *pb.HardState
	ents []*pb.Entry // after snap, once every segment is read
}

func segmentName(n uint64, ext string) string { return fmt.Sprintf("%06d%s", n, ext) }

// openLog reads the segments of dir, deletes the spares but one, and
// returns the state of every group they hold. The caller must rotate
// before it appends anything. A segment with no spare to write over is
// first filled with prewrite bytes of zeros (0: none).
func openLog(dir string, prewrite int64) (*logFile, map[uint64]*groupLog, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, nil, err
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, err
	}
	byExt := map[string][]uint64{}
	for _, e := range entries {
		name := e.Name()
		ext := filepath.Ext(name)
		if n, err := strconv.ParseUint(strings.TrimSuffix(name, ext), 10, 64); err == nil {
			byExt[ext] = append(byExt[ext], n)
		}
	}
	for _, ns := range byExt {
		slices.Sort(ns)
	}
	l := &logFile{dir: dir, prewrite: prewrite, stop: make(chan struct{})}
	groups := map[uint64]*groupLog{}
	for i, n := range byExt[".log"] {
		data, err := os.ReadFile(filepath.Join(dir, segmentName(n, ".log")))
		if err != nil {
			return nil, nil, err
		}
		last, err := readSegment(n, data, groups)
		if err != nil {
			return nil, nil, fmt.Errorf("raft log %s: %w", segmentName(n, ".log"), err)
		}
		if i > 0 {
			l.kept = append(l.kept, keptSegment{l.n, l.last})
		}
		l.n, l.last = n, last
	}
	for id, g := range groups {
		if len(g.ents) > 0 && g.ents[0].GetIndex() != g.snap.GetIndex()+1 {
			return nil, nil, fmt.Errorf("raft log: group %d: the entries after %d and before %d are lost", id, g.snap.GetIndex(), g.ents[0].GetIndex())
		}
	}
	for _, n := range byExt[".tmp"] { // a checkpoint that was not finished
		if err := os.Remove(filepath.Join(dir, segmentName(n, ".tmp"))); err != nil {
			return nil, nil, err
		}
	}
	for i, n := range byExt[".spare"] {
		path := filepath.Join(dir, segmentName(n, ".spare"))
		if i == 0 {
			l.spare = path
		} else if err := os.Remove(path); err != nil {
			return nil, nil, err
		}
	}
	return l, groups, nil
}

// readSegment reads segment n's data into groups, the state the
// segments before it left, and returns each group's highest entry index
// in it. Its checkpoint must be whole; after it, the first frame that
// does not check ends the segment.
func readSegment(n uint64, data []byte, groups map[uint64]*groupLog) (map[uint64]uint64, error) {
	last := map[uint64]uint64{}
	listed := map[uint64]bool{} // the groups the checkpoint lists
	checkpointed := false
	for len(data) >= frameHeader {
		size := int(binary.BigEndian.Uint32(data))
		if size < 8 || size > len(data)-frameHeader {
			break
		}
		payload := data[frameHeader : frameHeader+size]
		if crc32.Checksum(payload, castagnoli) != binary.BigEndian.Uint32(data[4:]) || binary.BigEndian.Uint64(payload) != n {
			break
		}
		data = data[frameHeader+size:]
		for rec := payload[8:]; len(rec) > 0; {
			kind := rec[0]
			group, k := binary.Uvarint(rec[1:])
			if k <= 0 || len(rec) < 1+k+recordLength {
				return nil, errors.New("a record cut short")
			}
			rec = rec[1+k:]
			bodyLen := int(binary.BigEndian.Uint32(rec))
			if bodyLen > len(rec)-recordLength {
				return nil, errors.New("a record cut short")
			}
			body := rec[recordLength : recordLength+bodyLen]
			rec = rec[recordLength+bodyLen:]
			switch kind {
			case recCheckpoint:
				checkpointed = true
				for id := range groups {
					if !listed[id] {
						delete(groups, id) // removed before the checkpoint
					}
				}
			case recRemove:
				delete(groups, group)
			default:
				if !checkpointed {
					listed[group] = true
				}
				g := groups[group]
				if g == nil {
					g = &groupLog{}
					groups[group] = g
				}
				if err := g.read(kind, body, !checkpointed); err != nil {
					return nil, fmt.Errorf("group %d: %w", group, err)
				}
				if kind == recEntries && len(g.ents) > 0 {
					last[group] = max(last[group], g.ents[len(g.ents)-1].GetIndex())
				}
			}
		}
	}
	if !checkpointed {
		return nil, errors.New("the segment has no whole checkpoint")
	}
	return last, nil
}

// read applies one record's body to g; inCheckpoint tells whether it is
// part of a segment's checkpoint.
func (g *groupLog) read(kind byte, body []byte, inCheckpoint bool) error {
	r := reader{b: body}
	switch kind {
	case recHardState:
		g.hs = &pb.HardState{Term: new(r.uvarint()), Vote: new(r.uvarint()), Commit: new(r.uvarint())}
	case recSnapshot:
		index, term := r.uvarint(), r.uvarint()
		cs := &pb.ConfState{}
		if err := proto.Unmarshal(r.bytes(), cs); err != nil {
			return err
		}
		g.snap = &pb.SnapshotMetadata{Index: new(index), Term: new(term), ConfState: cs}
		if !inCheckpoint || len(g.ents) == 0 || g.ents[len(g.ents)-1].GetIndex() <= index {
			g.ents = nil
		} else if first := g.ents[0].GetIndex(); first <= index {
			g.ents = g.ents[index-first+1:]
		}
	case recEntries:
		first, count := r.uvarint(), r.uvarint()
		if first <= g.snap.GetIndex() {
			return fmt.Errorf("entries from %d are not after the snapshot point %d", first, g.snap.GetIndex())
		}
		// Entries before first, if any after the snapshot point, may have
		// been in segments done with: a later checkpoint's point is past
		// them.
		if len(g.ents) > 0 {
			from, next := g.ents[0].GetIndex(), g.ents[len(g.ents)-1].GetIndex()+1
			if first > next {
				return fmt.Errorf("entries from %d do not follow the log (%d to %d)", first, from, next-1)
			}
			g.ents = g.ents[:max(first, from)-from]
		}
		for i := range count {
			term, typ, data := r.uvarint(), pb.EntryType(r.uvarint()), bytes.Clone(r.bytes())
			g.ents = append(g.ents, &pb.Entry{Index: new(first + i), Term: new(term), Type: typ.Enum(), Data: data})
		}
	default:
		return fmt.Errorf("unknown record kind %d", kind)
	}
	return r.err
}

// reader reads uvarints and length-prefixed bytes; the first problem
// sticks in err.
type reader struct {
	b   []byte
	err error
}

func (r *reader) uvarint() uint64 {
	v, k := binary.Uvarint(r.b)
	if k <= 0 {
		r.err, r.b = io.ErrUnexpectedEOF, nil
		return 0
	}
	r.b = r.b[k:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if n > uint64(len(r.b)) {
		r.err, r.b = io.ErrUnexpectedEOF, nil
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// begin starts a record of kind for group, and the round's frame if it
// is the first; end finishes the record.
func (l *logFile) begin(kind byte, group uint64) int {
	if len(l.buf) == 0 {
		l.buf = append(l.buf, make([]byte, frameHeader)...)
		l.buf = binary.BigEndian.AppendUint64(l.buf, l.n)
	}
	l.buf = append(l.buf, kind)
	l.buf = binary.AppendUvarint(l.buf, group)
	l.buf = append(l.buf, make([]byte, recordLength)...)
	return len(l.buf)
}

func (l *logFile) end(body int) {
	binary.BigEndian.PutUint32(l.buf[body-recordLength:], uint32(len(l.buf)-body))
}

// addEntries queues a record of ents, consecutive entries of group.
func (l *logFile) addEntries(group uint64, ents []*pb.Entry) {
	if len(ents) == 0 {
		return
	}
	if l.last == nil {
		l.last = map[uint64]uint64{}
	}
	l.last[group] = max(l.last[group], ents[len(ents)-1].GetIndex())
	s := l.begin(recEntries, group)
	l.buf = binary.AppendUvarint(l.buf, ents[0].GetIndex())
	l.buf = binary.AppendUvarint(l.buf, uint64(len(ents)))
	for _, e := range ents {
		l.buf = binary.AppendUvarint(l.buf, e.GetTerm())
		l.buf = binary.AppendUvarint(l.buf, uint64(e.GetType()))
		l.buf = binary.AppendUvarint(l.buf, uint64(len(e.GetData())))
		l.buf = append(l.buf, e.GetData()...)
	}
	l.end(s)
}

// addHardState queues a record of group's hard state.
func (l *logFile) addHardState(group uint64, hs *pb.HardState) {
	s := l.begin(recHardState, group)
	l.buf = binary.AppendUvarint(l.buf, hs.GetTerm())
	l.buf = binary.AppendUvarint(l.buf, hs.GetVote())
	l.buf = binary.AppendUvarint(l.buf, hs.GetCommit())
	l.end(s)
}

// addSnapshot queues a record of group's snapshot point; index 0 records
// a group that has none yet.
func (l *logFile) addSnapshot(group uint64, m *pb.SnapshotMetadata) {
	cs, _ := proto.Marshal(m.GetConfState()) // a ConfState always marshals
	s := l.begin(recSnapshot, group)
	l.buf = binary.AppendUvarint(l.buf, m.GetIndex())
	l.buf = binary.AppendUvarint(l.buf, m.GetTerm())
	l.buf = binary.AppendUvarint(l.buf, uint64(len(cs)))
	l.buf = append(l.buf, cs...)
	l.end(s)
}

// addRemove queues the record of group's removal.
func (l *logFile) addRemove(group uint64) { l.end(l.begin(recRemove, group)) }

// appended returns the bytes of rounds written since the checkpoint.
func (l *logFile) appended() int64 { return l.size - l.base }

// pending tells whether records are queued.
func (l *logFile) pending() bool { return len(l.buf) > 0 }

// write writes the queued records and, if sync, makes them durable.
func (l *logFile) write(sync bool) error {
	if len(l.buf) == 0 {
		return nil
	}
	payload := l.buf[frameHeader:]
	binary.BigEndian.PutUint32(l.buf, uint32(len(payload)))
	binary.BigEndian.PutUint32(l.buf[4:], crc32.Checksum(payload, castagnoli))
	n, err := l.f.WriteAt(l.buf, l.size)
	l.size += int64(n)
	l.buf = l.buf[:0]
	if err != nil {
		return err
	}
	l.dirty = !sync
	if sync {
		return unix.Fdatasync(int(l.f.Fd()))
	}
	return nil
}

// sync makes the frames written without a sync durable.
func (l *logFile) sync() error {
	if !l.dirty {
		return nil
	}
	l.dirty = false
	return unix.Fdatasync(int(l.f.Fd()))
}

// rotate starts segment n+1 with the checkpoint fill queues, durable
// before it returns. Then the older segments, oldest first, are done with
// while done says so of each one's highest entry indices: the first is
// kept as a spare, if there is none, and the others deleted. It waits for
// a spare being prepared, if it has no other.
func (l *logFile) rotate(fill func() error, done func(last map[uint64]uint64) bool) error {
	if l.dirty {
		// The checkpoint holds no entry: the rounds before it must be
		// durable where they are.
		if err := unix.Fdatasync(int(l.f.Fd())); err != nil {
			return err
		}
		l.dirty = false
	}
	n := l.n + 1
	tmp := filepath.Join(l.dir, segmentName(n, ".tmp"))
	if l.spare == "" && l.preparing != nil {
		l.spare = <-l.preparing
		l.preparing = nil
	}
	fresh := l.spare == ""
	if !fresh {
		if err := os.Rename(l.spare, tmp); err != nil {
			return err
		}
		l.spare = ""
	}
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	old, oldN, oldLast := l.f, l.n, l.last
	l.f, l.n, l.size, l.buf, l.last = f, n, 0, l.buf[:0], nil
	if fresh && old == nil && l.prewrite > 0 {
		// At open, before the driver loop runs: the checkpoint's sync
		// makes the zeros durable with it.
		err = writeZeros(f, l.prewrite, l.stop)
	}
	if err == nil {
		err = l.fillAndSync(fill, tmp)
	}
	if old != nil {
		old.Close() // written and synced, or given up: a close error changes nothing
	}
	if err != nil {
		return err
	}
	if oldN != 0 {
		l.kept = append(l.kept, keptSegment{oldN, oldLast})
	}
	if err := l.retire(done); err != nil {
		return err
	}
	if l.spare == "" && l.preparing == nil && l.prewrite > 0 {
		l.prepareSpare()
	}
	return nil
}

// retire lets go of the older segments done says are done with, oldest
// first: the first becomes the spare if there is none, the others are
// deleted. The directory is synced, so that a spare written over never
// comes back under its old name.
func (l *logFile) retire(done func(last map[uint64]uint64) bool) error {
	k := 0
	for k < len(l.kept) && done(l.kept[k].last) {
		path := filepath.Join(l.dir, segmentName(l.kept[k].n, ".log"))
		if l.spare == "" && l.preparing == nil {
			l.spare = filepath.Join(l.dir, segmentName(l.kept[k].n, ".spare"))
			if err := os.Rename(path, l.spare); err != nil {
				l.spare = ""
				return err
			}
		} else if err := os.Remove(path); err != nil {
			return err
		}
		k++
	}
	if k == 0 {
		return nil
	}
	l.kept = slices.Delete(l.kept, 0, k)
	return syncDir(l.dir)
}

// prepareSpare writes, in the background, a spare of prewrite bytes of
// zeros, for the next rotation to write over. It is named segment 0, a
// number no segment has.
func (l *logFile) prepareSpare() {
	done := make(chan string, 1)
	l.preparing = done
	tmp := filepath.Join(l.dir, segmentName(0, ".tmp"))
	spare := filepath.Join(l.dir, segmentName(0, ".spare"))
	size, stop := l.prewrite, l.stop
	go func() {
		f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
		if err == nil {
			err = writeZeros(f, size, stop)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err == nil {
				err = os.Rename(tmp, spare)
			}
			if err != nil {
				os.Remove(tmp) // openLog removes it otherwise
			}
		}
		if err != nil {
			spare = "" // the next segment is appended to instead
		}
		done <- spare
	}()
}

// errStopped is writeZeros's answer once stop is closed.
var errStopped = errors.New("the log is closed")

// writeZeros writes size bytes of zeros at the start of f, a MiB at a
// time, syncing every 8 MiB and at the end, so that the device is never
// handed all of it at once; it gives up once stop is closed.
func writeZeros(f *os.File, size int64, stop <-chan struct{}) error {
	const chunk, syncEvery = 1 << 20, 8 << 20
	zeros := make([]byte, chunk)
	for off := int64(0); off < size; off += chunk {
		select {
		case <-stop:
			return errStopped
		default:
		}
		if _, err := f.WriteAt(zeros[:min(chunk, size-off)], off); err != nil {
			return err
		}
		if (off+chunk)%syncEvery == 0 || off+chunk >= size {
			if err := unix.Fdatasync(int(f.Fd())); err != nil {
				return err
			}
		}
	}
	return nil
}

// fillAndSync queues the checkpoint fill makes, writes and syncs it, and
// gives the segment at tmp its name.
func (l *logFile) fillAndSync(fill func() error, tmp string) error {
	if err := fill(); err != nil {
		return err
	}
	l.end(l.begin(recCheckpoint, 0))
	if err := l.write(true); err != nil {
		return err
	}
	if err := os.Rename(tmp, filepath.Join(l.dir, segmentName(l.n, ".log"))); err != nil {
		return err
	}
	l.base = l.size
	return syncDir(l.dir)
}

// close closes the segment, once a spare being prepared is given up.
func (l *logFile) close() error {
	if l.stop != nil {
		close(l.stop)
		l.stop = nil
	}
	if l.preparing != nil {
		<-l.preparing
		l.preparing = nil
	}
	if l.f == nil {
		return nil
	}
	return l.f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}
