package raft

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestGroupOfOne runs a node with no peers, as a node without a cluster
// would: its groups lead at once, concurrent proposals share entries, and
// after a restart, through checkpoints, the state and the log go on.
func TestGroupOfOne(t *testing.T) {
	t.Parallel()
	groups := groupIDs(4)
	c := newCluster(t, 1, nil, func(o *Options) {
		o.TickInterval = 100 * time.Millisecond // an election would take 1-2 s
		o.SegmentBytes = 64 << 10
	})
	d := c.driver(1)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	start := time.Now()
	for _, g := range groups {
		if err := d.AddGroup(ctx, g, []uint64{1}); err != nil {
			t.Fatal(err)
		}
	}
	c.waitLeaders(groups, 5*time.Second)
	if took := time.Since(start); took >= time.Second {
		t.Errorf("a group of one took %v to lead: it waited for an election timeout", took)
	}

	want := map[uint64]map[string]string{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, g := range groups {
		want[g] = map[string]string{}
	}
	for _, g := range groups {
		for i := range 16 {
			wg.Go(func() {
				for n := range 30 {
					k, v := fmt.Sprintf("c%d-%d", i, n), strings.Repeat(fmt.Sprintf("%x", rand.Uint64()), 8)
					if err := d.Propose(ctx, g, []byte(k+"="+v)); err != nil {
						t.Errorf("group %d: %v", g, err)
						return
					}
					mu.Lock()
					want[g][k] = v
					mu.Unlock()
				}
			})
		}
	}
	wg.Wait()
	st := d.Stats()
	if st.Proposals != uint64(len(groups)*16*30) {
		t.Errorf("%d proposals applied, want %d", st.Proposals, len(groups)*16*30)
	}
	if st.ProposalEntries >= st.Proposals {
		t.Errorf("%d proposals in %d entries: none shared an entry", st.Proposals, st.ProposalEntries)
	}
	if st.Checkpoints == 0 {
		t.Errorf("no checkpoint after %d entries", st.Entries)
	}
	if st.Syncs == 0 || st.Syncs > st.Rounds {
		t.Errorf("%d syncs in %d rounds", st.Syncs, st.Rounds)
	}
	t.Logf("%d proposals in %d entries, %d rounds, %d syncs, %d checkpoints", st.Proposals, st.ProposalEntries, st.Rounds, st.Syncs, st.Checkpoints)
	applied := map[uint64]uint64{}
	for _, g := range groups {
		s, _ := d.Status(g)
		applied[g] = s.Applied
	}

	c.stop(1)
	c.start(1)
	d = c.driver(1)
	c.waitLeaders(groups, 5*time.Second)
	for _, g := range groups {
		c.waitState(1, g, want[g], 5*time.Second)
		if err := d.Propose(ctx, g, []byte("after=restart")); err != nil {
			t.Fatalf("group %d after the restart: %v", g, err)
		}
		want[g]["after"] = "restart"
		c.waitState(1, g, want[g], 5*time.Second)
		if s, _ := d.Status(g); s.Applied <= applied[g] {
			t.Errorf("group %d: applied %d after the restart, %d before", g, s.Applied, applied[g])
		}
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	tests := []struct {
		name   string
		change func(*Options)
		want   string // in the error; "" for none
	}{
		{"defaults", func(*Options) {}, ""},
		{"no node id", func(o *Options) { o.NodeID = 0 }, "NodeID"},
		{"no dir", func(o *Options) { o.Dir = "" }, "Dir"},
		{"election not after heartbeat", func(o *Options) { o.ElectionTicks, o.HeartbeatTicks = 2, 2 }, "ElectionTicks"},
		{"negative heartbeat", func(o *Options) { o.HeartbeatTicks = -1 }, "HeartbeatTicks"},
		{"tiny tick", func(o *Options) { o.TickInterval = time.Microsecond }, "TickInterval"},
		{"tiny segment", func(o *Options) { o.SegmentBytes = 100 }, "SegmentBytes"},
		{"negative entry size", func(o *Options) { o.MaxEntryBytes = -1 }, "MaxEntryBytes"},
		{"negative queues", func(o *Options) { o.QueueProposals, o.QueueInbound = -1, -1 }, "QueueInbound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{NodeID: 1, Dir: dir}
			tt.change(&o)
			err := o.withDefaults().validate()
			switch {
			case tt.want == "" && err != nil:
				t.Fatalf("unexpected error: %v", err)
			case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("error %v, want one naming %s", err, tt.want)
			}
		})
	}
}

// forgetfulMachine holds what Apply gives it in memory, as in a memtable,
// and writes it to its badger, synced, once flushEvery commands are
// held; it loses what it holds when dropped: a state machine whose writes
// a crash may lose, as a node's unflushed badger writes are.
type forgetfulMachine struct {
	*kvMachine
	mu       sync.Mutex // Restore runs beside Apply
	pending  []Update
	held     int    // commands in pending
	memtable uint64 // the number of the memtable pending is
}

const flushEvery = 128

func (m *forgetfulMachine) Apply(updates []Update) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, u := range updates {
		var cmds [][]byte
		for _, c := range u.Commands {
			cmds = append(cmds, bytes.Clone(c))
		}
		m.pending = append(m.pending, Update{Group: u.Group, Index: u.Index, Commands: cmds})
		m.held += len(cmds)
	}
	if m.held >= flushEvery {
		return m.flush()
	}
	return nil
}

// flush writes what the machine holds to its badger and syncs it. The
// caller holds mu.
func (m *forgetfulMachine) flush() error {
	if err := m.kvMachine.Apply(m.pending); err != nil {
		return err
	}
	m.pending, m.held = nil, 0
	m.memtable++
	return m.db.Sync()
}

// Flushed: the memtables before the one held are flushed.
func (m *forgetfulMachine) Flushed() (durable, newest uint64, err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.memtable, m.memtable, nil
}

func (m *forgetfulMachine) Snapshot(group uint64) (func() ([]byte, error), error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if err := m.flush(); err != nil {
		return nil, err
	}
	return m.kvMachine.Snapshot(group)
}

func (m *forgetfulMachine) Restore(group, index uint64, data []byte) error {
	m.mu.Lock()
	err := m.flush()
	m.mu.Unlock()
	if err != nil {
		return err
	}
	return m.kvMachine.Restore(group, index, data)
}

// TestUnsyncedAppliesComeBackFromTheLog stops a node whose state machine
// then loses everything applied since its last flush: on restart the
// driver applies those entries again from its log, which holds them in
// the segments kept since the last durable point, and the state holds
// every acknowledged proposal, with and without checkpoints in between.
func TestUnsyncedAppliesComeBackFromTheLog(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		segment  int64
		prewrite bool
	}{{64 << 20, false}, {16 << 10, false}, {16 << 10, true}} {
		segment := tc.segment
		t.Run(fmt.Sprintf("segment=%d,prewrite=%v", segment, tc.prewrite), func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			g := uint64(7)
			open := func() (*Driver, *forgetfulMachine) {
				kv, err := openKV(filepath.Join(dir, "sm"))
				if err != nil {
					t.Fatal(err)
				}
				sm := &forgetfulMachine{kvMachine: kv}
				tr, err := ListenTCP(TCPOptions{NodeID: 1, Listen: "127.0.0.1:0"})
				if err != nil {
					t.Fatal(err)
				}
				d, err := Open(Options{NodeID: 1, Dir: filepath.Join(dir, "raft"), SegmentBytes: segment, PrewriteSegments: tc.prewrite}, sm, tr)
				if err != nil {
					t.Fatal(err)
				}
				return d, sm
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			d, sm := open()
			if err := d.AddGroup(ctx, g, []uint64{1}); err != nil {
				t.Fatal(err)
			}
			if lead, err := d.WaitLeader(ctx, g); err != nil || lead != 1 {
				t.Fatalf("leader %d, %v: a group of one leads itself", lead, err)
			}
			want := map[string]string{}
			for n := range 1000 {
				k, v := fmt.Sprintf("k%03d", n), strings.Repeat(fmt.Sprintf("%x", rand.Uint64()), 4)
				if err := d.Propose(ctx, g, []byte(k+"="+v)); err != nil {
					t.Fatal(err)
				}
				want[k] = v
			}
			checkpoints := d.Stats().Checkpoints
			if tc.prewrite {
				checkPrewritten(t, filepath.Join(dir, "raft"), segment)
			}
			st, err := d.Status(g)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if segs, _ := filepath.Glob(filepath.Join(dir, "raft", "*.log")); segment < 1<<20 && (len(segs) < 2 || len(segs) > 4) {
				// The entries since the point durable at the last
				// checkpoint span the segment before; those before are gone.
				t.Fatalf("%d segments after %d checkpoints: want the last and one or a few before", len(segs), checkpoints)
			}
			lost := len(sm.pending)
			sm.pending = nil // the crash
			if err := sm.close(); err != nil {
				t.Fatal(err)
			}
			if lost == 0 {
				t.Fatal("the state machine lost nothing: the test tests nothing")
			}

			d, sm = open()
			if err := d.waitStatus(ctx, g, func(s Status, _ bool) bool { return s.Applied >= st.Applied }); err != nil {
				t.Fatalf("applied index %d before the restart: %v", st.Applied, err)
			}
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			if err := sm.flush(); err != nil {
				t.Fatal(err)
			}
			got, err := sm.dump(g)
			if err != nil {
				t.Fatal(err)
			}
			if err := sm.close(); err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(got, want) {
				t.Fatalf("after the restart: %d keys, want %d (first missing: %s)", len(got), len(want), firstMissing(got, want))
			}
			t.Logf("%d updates lost by the state machine, applied again; %d checkpoints before", lost, checkpoints)
		})
	}
}

// checkPrewritten checks a log of prewritten segments after its first
// checkpoint: every segment is at least SegmentBytes long, and the spare
// prepared for the second was written over.
func checkPrewritten(t *testing.T, dir string, segment int64) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		fi, err := e.Info()
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(e.Name(), segmentName(0, "")) || fi.Size() < segment {
			t.Errorf("%s: %d bytes, want a segment of at least %d, and no prepared spare left", e.Name(), fi.Size(), segment)
		}
	}
}
