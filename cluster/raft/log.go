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

// The log is one append-only file at a time, a segment, named by its
// number ("000007.log"). A segment starts with a checkpoint: for every
// group, its snapshot point (index, term, membership), the entries after
// it that are kept and its hard state. Rounds append to it: each is one
// frame, one write and, when raft asks for durability, one fdatasync.
// Once the rounds have written SegmentBytes the driver writes the next
// segment's checkpoint; the old segment is then done with and kept as a
// spare to write over.
//
// A segment is written under a temporary name and renamed once its
// checkpoint is durable, so the newest "*.log" always starts with a whole
// checkpoint: recovery reads it alone. A frame is checked whole, so a
// round is recovered whole or not at all (a group's entries never without
// the hard state that commits them). Every frame carries its segment's
// number, which tells a spare's old frames from new ones. After a crash
// the last round may be torn; recovery stops at the first frame that does
// not check, and the driver starts a new segment at once, so that nothing
// is ever written after a torn frame.
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
	recSnapshot   = 3 // a group's snapshot point: index, term, membership; the log before it is gone
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
	base  int64  // the size of the segment's checkpoint
	buf   []byte // records not yet written
	spare string // a segment done with, to write the next over; "" for none

	prewrite  int64         // bytes of zeros a segment with no spare is written over; 0 for none
	preparing chan string   // the spare being prepared: its path once ready, "" if that failed
	stop      chan struct{} // closed by close: a spare being prepared is given up
}

// groupLog is a group's persistent raft state as the log holds it.
type groupLog struct {
	snap *pb.SnapshotMetadata // nil: no snapshot point (a group waiting to be given one)
	hs   *pb.HardState
	ents []*pb.Entry // after snap
}

func segmentName(n uint64, ext string) string { return fmt.Sprintf("%06d%s", n, ext) }

// openLog reads the newest segment of dir, deletes the other segments
// but one spare, and returns the state of every group in it. The caller
// must rotate before it appends anything. A segment with no spare to
// write over is first filled with prewrite bytes of zeros (0: none).
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
	if logs := byExt[".log"]; len(logs) > 0 {
		l.n = logs[len(logs)-1]
		data, err := os.ReadFile(filepath.Join(dir, segmentName(l.n, ".log")))
		if err != nil {
			return nil, nil, err
		}
		if groups, err = readSegment(l.n, data); err != nil {
			return nil, nil, fmt.Errorf("raft log %s: %w", segmentName(l.n, ".log"), err)
		}
		for _, n := range logs[:len(logs)-1] {
			byExt[".spare"] = append(byExt[".spare"], n) // older segments: done with
			if err := os.Rename(filepath.Join(dir, segmentName(n, ".log")), filepath.Join(dir, segmentName(n, ".spare"))); err != nil {
				return nil, nil, err
			}
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

// readSegment returns the group states that segment n's data holds. Its
// checkpoint must be whole; after it, the first frame that does not check
// ends the segment.
func readSegment(n uint64, data []byte) (map[uint64]*groupLog, error) {
	groups := map[uint64]*groupLog{}
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
			case recRemove:
				delete(groups, group)
			default:
				g := groups[group]
				if g == nil {
					g = &groupLog{}
					groups[group] = g
				}
				if err := g.read(kind, body); err != nil {
					return nil, fmt.Errorf("group %d: %w", group, err)
				}
			}
		}
	}
	if !checkpointed {
		return nil, errors.New("the segment has no whole checkpoint")
	}
	return groups, nil
}

// read applies one record's body to g.
func (g *groupLog) read(kind byte, body []byte) error {
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
		g.ents = nil
	case recEntries:
		first, count := r.uvarint(), r.uvarint()
		next := g.snap.GetIndex() + 1
		if len(g.ents) > 0 {
			next = g.ents[len(g.ents)-1].GetIndex() + 1
		}
		if first > next || first <= g.snap.GetIndex() {
			return fmt.Errorf("entries from %d do not follow the log (next %d)", first, next)
		}
		g.ents = g.ents[:first-g.snap.GetIndex()-1]
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
	if sync {
		return unix.Fdatasync(int(l.f.Fd()))
	}
	return nil
}

// rotate starts segment n+1 with the checkpoint fill queues, durable
// before it returns, and keeps the previous segment as a spare. It waits
// for a spare being prepared, if it has no other.
func (l *logFile) rotate(fill func() error) error {
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
	old, oldN := l.f, l.n
	l.f, l.n, l.size, l.buf = f, n, 0, l.buf[:0]
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
		spare := filepath.Join(l.dir, segmentName(oldN, ".spare"))
		if err := os.Rename(filepath.Join(l.dir, segmentName(oldN, ".log")), spare); err != nil {
			return err
		}
		l.spare = spare
	}
	if l.spare == "" && l.preparing == nil && l.prewrite > 0 {
		l.prepareSpare()
	}
	return nil
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
