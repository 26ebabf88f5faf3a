package raft

import (
	"bytes"
	"hash/crc32"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
	"pgregory.net/rapid"
)

// logModel is what the log of a few groups should hold: it applies the
// same changes as the records the test writes.
type logModel map[uint64]*groupLog

// group returns group id's state; a new one starts, as the driver starts
// a group, with a record of its (empty) snapshot point.
func (m logModel) group(l *logFile, id uint64) *groupLog {
	if m[id] == nil {
		m[id] = &groupLog{snap: &pb.SnapshotMetadata{Index: new(uint64(0)), Term: new(uint64(0)), ConfState: &pb.ConfState{}}}
		l.addSnapshot(id, m[id].snap)
	}
	return m[id]
}

func (m logModel) clone() logModel {
	out := logModel{}
	for id, g := range m {
		out[id] = &groupLog{snap: g.snap, hs: g.hs, ents: append([]*pb.Entry(nil), g.ents...)}
	}
	return out
}

// fill queues the model as a checkpoint, with its entries if copy, else
// without: the entries after each snapshot point stay in the segments
// kept.
func (m logModel) fill(l *logFile, copy bool) func() error {
	return func() error {
		for id, g := range m {
			l.addSnapshot(id, g.snap)
			if copy {
				l.addEntries(id, g.ents)
			}
			if g.hs != nil {
				l.addHardState(id, g.hs)
			}
		}
		return nil
	}
}

// compact moves group id's snapshot point to the entry at index, as a
// checkpoint moves a group's durable point.
func (m logModel) compact(id, index uint64) {
	g := m[id]
	k := index - g.snap.GetIndex() // entries dropped
	if k == 0 {
		return
	}
	g.snap = &pb.SnapshotMetadata{Index: new(index), Term: new(g.ents[k-1].GetTerm()), ConfState: g.snap.GetConfState()}
	g.ents = g.ents[k:]
}

// done tells, as the driver does, whether a segment's entries are all at
// or before their group's snapshot point.
func (m logModel) done(last map[uint64]uint64) bool {
	for id, index := range last {
		if g := m[id]; g != nil && index > g.snap.GetIndex() {
			return false
		}
	}
	return true
}

func equalLogs(t *rapid.T, got map[uint64]*groupLog, want logModel) {
	if len(got) != len(want) {
		t.Fatalf("%d groups, want %d", len(got), len(want))
	}
	for id, w := range want {
		g := got[id]
		if g == nil {
			t.Fatalf("group %d missing", id)
		}
		if !proto.Equal(g.snap, w.snap) || !proto.Equal(g.hs, w.hs) {
			t.Fatalf("group %d: snapshot %v hard state %v, want %v %v", id, g.snap, g.hs, w.snap, w.hs)
		}
		if len(g.ents) != len(w.ents) {
			t.Fatalf("group %d: %d entries, want %d", id, len(g.ents), len(w.ents))
		}
		for i := range g.ents {
			if !proto.Equal(g.ents[i], w.ents[i]) {
				t.Fatalf("group %d: entry %d is %v, want %v", id, i, g.ents[i], w.ents[i])
			}
		}
	}
}

// TestLogRecoversWhatItWrote writes random rounds of records (entries,
// some replacing a suffix; hard states; snapshot points; removals) and
// checkpoints over spare segments, some prewritten with zeros: most move
// snapshot points and copy no entry, so that older segments are kept
// while their entries are needed. It reopens the log and compares what
// it reads with a model. Then it tears the last round at a random byte,
// with garbage or zeros, and checks that recovery stops before it.
func TestLogRecoversWhatItWrote(t *testing.T) {
	dir := t.TempDir()
	rapid.Check(t, func(t *rapid.T) {
		d, err := os.MkdirTemp(dir, "log")
		if err != nil {
			t.Fatal(err)
		}
		defer os.RemoveAll(d)
		prewrite := rapid.SampledFrom([]int64{0, 4 << 10, 64 << 10}).Draw(t, "prewrite")
		l, got, err := openLog(d, prewrite)
		if err != nil || len(got) != 0 {
			t.Fatalf("a new log: %v, %d groups", err, len(got))
		}
		model := logModel{}
		if err := l.rotate(model.fill(l, false), model.done); err != nil {
			t.Fatal(err)
		}
		var before logModel
		var lastWrite int64 // where the last round starts
		rounds := rapid.IntRange(1, 30).Draw(t, "rounds")
		for range rounds {
			before = model.clone()
			if rapid.IntRange(0, 4).Draw(t, "checkpoint") == 0 {
				copy := rapid.IntRange(0, 3).Draw(t, "copy") == 0
				if !copy {
					for _, id := range slices.Sorted(maps.Keys(model)) {
						g := model[id]
						model.compact(id, g.snap.GetIndex()+rapid.Uint64Range(0, uint64(len(g.ents))).Draw(t, "durable"))
					}
				}
				if err := l.rotate(model.fill(l, copy), model.done); err != nil {
					t.Fatal(err)
				}
				before = model.clone()
				if ns, _ := filepath.Glob(filepath.Join(d, "*.log")); len(ns) != len(l.kept)+1 {
					t.Fatalf("%d segments, %d kept and the one written", len(ns), len(l.kept))
				}
			}
			for range rapid.IntRange(1, 4).Draw(t, "records") {
				id := rapid.Uint64Range(1, 4).Draw(t, "group")
				g := model.group(l, id)
				switch rapid.IntRange(0, 9).Draw(t, "kind") {
				case 0:
					index := g.snap.GetIndex() + uint64(len(g.ents)) + rapid.Uint64Range(0, 5).Draw(t, "ahead")
					voters := rapid.SliceOfN(rapid.Uint64Range(1, 9), 1, 5).Draw(t, "voters")
					g.snap = &pb.SnapshotMetadata{Index: new(index), Term: new(rapid.Uint64Range(1, 9).Draw(t, "term")), ConfState: &pb.ConfState{Voters: voters}}
					g.ents = nil
					l.addSnapshot(id, g.snap)
				case 1:
					g.hs = &pb.HardState{Term: new(rapid.Uint64().Draw(t, "term")), Vote: new(rapid.Uint64Range(0, 9).Draw(t, "vote")), Commit: new(rapid.Uint64().Draw(t, "commit"))}
					l.addHardState(id, g.hs)
				case 2:
					delete(model, id)
					l.addRemove(id)
				default:
					keep := rapid.IntRange(0, len(g.ents)).Draw(t, "keep")
					g.ents = g.ents[:keep]
					first := g.snap.GetIndex() + uint64(keep) + 1
					var ents []*pb.Entry
					for i := range rapid.IntRange(1, 5).Draw(t, "entries") {
						ents = append(ents, &pb.Entry{
							Index: new(first + uint64(i)),
							Term:  new(rapid.Uint64Range(1, 9).Draw(t, "term")),
							Type:  pb.EntryType(rapid.IntRange(0, 2).Draw(t, "type")).Enum(),
							Data:  rapid.SliceOfN(rapid.Byte(), 0, 300).Draw(t, "data"),
						})
					}
					g.ents = append(g.ents, ents...)
					l.addEntries(id, ents)
				}
			}
			lastWrite = l.size
			if err := l.write(true); err != nil {
				t.Fatal(err)
			}
		}
		size, n := l.size, l.n
		l.close()
		_, got, err = openLog(d, 0)
		if err != nil {
			t.Fatal(err)
		}
		equalLogs(t, got, model)

		// Tear the last round: overwrite it from a byte inside it on, as
		// far as it went, with garbage or with zeros; what the segment
		// held beyond it stays. Bytes that held the garbage already leave
		// the round whole.
		path := filepath.Join(d, segmentName(n, ".log"))
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		cut := rapid.IntRange(int(lastWrite), int(size)-1).Draw(t, "cut")
		garbage := bytes.Repeat([]byte{rapid.SampledFrom([]byte{0, 0xa5}).Draw(t, "garbage")}, int(size)-cut)
		if bytes.Equal(data[cut:size], garbage) {
			before = model
		}
		f, err := os.OpenFile(path, os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.WriteAt(garbage, int64(cut))
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			t.Fatal(err)
		}
		_, got, err = openLog(d, 0)
		if err != nil {
			t.Fatal(err)
		}
		equalLogs(t, got, before)
	})
}

// TestZerosEndASegment checks that zeros after a segment's last frame, as
// a prewritten segment holds, end it: a frame of zeros would have an empty
// payload whose CRC-32C is 0, and no frame is shorter than its segment
// number.
func TestZerosEndASegment(t *testing.T) {
	t.Parallel()
	if crc := crc32.Checksum(nil, castagnoli); crc != 0 {
		t.Fatalf("CRC-32C of nothing is %#x: the premise changed", crc)
	}
	l, _, err := openLog(t.TempDir(), 64<<10)
	if err != nil {
		t.Fatal(err)
	}
	defer l.close()
	model := logModel{}
	if err := l.rotate(model.fill(l, false), model.done); err != nil {
		t.Fatal(err)
	}
	model.group(l, 3)
	if err := l.write(true); err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(l.dir, segmentName(l.n, ".log")))
	if err != nil {
		t.Fatal(err)
	}
	if len(data) < 64<<10 || !bytes.Equal(data[l.size:], make([]byte, len(data)-int(l.size))) {
		t.Fatalf("%d bytes, %d written: want zeros after the frames to 64 KiB", len(data), l.size)
	}
	got := map[uint64]*groupLog{}
	if _, err := readSegment(l.n, data, got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[3] == nil {
		t.Fatalf("read %d groups, want group 3 alone", len(got))
	}
}
