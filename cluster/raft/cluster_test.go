package raft

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"persona/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// testNode is one node of a testCluster: a Driver on a TCP transport on
// 127.0.0.1, its log and a badger state machine in its own directory.
type testNode struct {
	id   uint64
	dir  string
	addr string
	sm   *kvMachine
	tr   *TCPTransport
	d    *Driver
}

// testCluster runs nodes in this process, talking over loopback TCP.
type testCluster struct {
	t     testing.TB
	tune  func(*Options)
	tcp   func(*TCPOptions) // if set, changes every node's transport options
	mu    sync.Mutex
	nodes map[uint64]*testNode
}

// testOptions are quick to elect: a 50 ms tick, 0.5-1 s election timeout.
func testOptions(id uint64, dir string) Options {
	return Options{NodeID: id, Dir: filepath.Join(dir, "raft"), TickInterval: 50 * time.Millisecond}
}

// newCluster starts n nodes (ids 1..n) and the given groups on all of
// them; tune, if set, changes every node's options.
func newCluster(t testing.TB, n int, groups []uint64, tune func(*Options)) *testCluster {
	c := &testCluster{t: t, tune: tune, nodes: map[uint64]*testNode{}}
	var ids []uint64
	for id := uint64(1); id <= uint64(n); id++ {
		c.nodes[id] = &testNode{id: id, dir: t.TempDir()}
		ids = append(ids, id)
	}
	t.Cleanup(c.closeAll)
	for _, id := range ids {
		c.start(id)
	}
	for _, id := range ids {
		for _, g := range groups {
			if err := c.node(id).d.AddGroup(context.Background(), g, ids); err != nil {
				t.Fatalf("node %d: add group %d: %v", id, g, err)
			}
		}
	}
	return c
}

// addNode makes a node that holds no group yet, and tells every running
// node its address.
func (c *testCluster) addNode(id uint64) *testNode {
	c.mu.Lock()
	c.nodes[id] = &testNode{id: id, dir: c.t.TempDir()}
	c.mu.Unlock()
	n := c.start(id)
	for _, o := range c.running() {
		o.tr.SetPeer(id, n.addr)
	}
	return n
}

// start opens node id from its directory, on its old address if it had
// one.
func (c *testCluster) start(id uint64) *testNode {
	c.t.Helper()
	n := c.node(id)
	listen := n.addr
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	peers := map[uint64]string{}
	c.mu.Lock()
	for oid, o := range c.nodes {
		if oid != id && o.addr != "" {
			peers[oid] = o.addr
		}
	}
	c.mu.Unlock()
	tcpOpts := TCPOptions{NodeID: id, Listen: listen, Peers: peers}
	if c.tcp != nil {
		c.tcp(&tcpOpts)
	}
	var err error
	if n.tr, err = ListenTCP(tcpOpts); err != nil {
		c.t.Fatal(err)
	}
	if n.addr == "" {
		n.addr = n.tr.Addr().String()
		for _, o := range c.running() {
			o.tr.SetPeer(id, n.addr)
		}
	}
	if n.sm, err = openKV(filepath.Join(n.dir, "sm")); err != nil {
		c.t.Fatal(err)
	}
	opts := testOptions(id, n.dir)
	if c.tune != nil {
		c.tune(&opts)
	}
	d, err := Open(opts, n.sm, n.tr)
	if err != nil {
		c.t.Fatalf("open node %d: %v", id, err)
	}
	c.mu.Lock()
	n.d = d
	c.mu.Unlock()
	return n
}

// stop closes node id's driver and state machine, as a node that goes
// away.
func (c *testCluster) stop(id uint64) {
	c.t.Helper()
	n := c.node(id)
	c.mu.Lock()
	d := n.d
	n.d = nil
	c.mu.Unlock()
	if d == nil {
		return
	}
	if err := d.Close(); err != nil {
		c.t.Errorf("close node %d: %v", id, err)
	}
	if err := n.sm.close(); err != nil {
		c.t.Errorf("close node %d's state machine: %v", id, err)
	}
}

func (c *testCluster) closeAll() {
	for _, n := range c.running() {
		c.stop(n.id)
	}
}

// node returns node id itself (nil if there is none): only the test's
// goroutine may change it.
func (c *testCluster) node(id uint64) *testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// driver returns node id's open driver, nil if it is stopped.
func (c *testCluster) driver(id uint64) *Driver {
	c.mu.Lock()
	defer c.mu.Unlock()
	if n := c.nodes[id]; n != nil {
		return n.d
	}
	return nil
}

// running returns a copy of each node with an open driver.
func (c *testCluster) running() []*testNode {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []*testNode
	for _, n := range c.nodes {
		if n.d != nil {
			cp := *n
			out = append(out, &cp)
		}
	}
	slices.SortFunc(out, func(a, b *testNode) int { return cmpUint(a.id, b.id) })
	return out
}

// leaders returns each group's leader among the running nodes, if every
// group has one that says so itself and that every running replica
// agrees on.
func (c *testCluster) leaders(groups []uint64) (map[uint64]uint64, bool) {
	out := map[uint64]uint64{}
	for _, g := range groups {
		var lead uint64
		for _, n := range c.running() {
			s, err := n.d.Status(g)
			if err != nil {
				continue
			}
			if s.Leader == 0 || (lead != 0 && s.Leader != lead) {
				return nil, false
			}
			lead = s.Leader
		}
		ld := c.driver(lead)
		if ld == nil {
			return nil, false
		}
		if s, err := ld.Status(g); err != nil || s.Role != Leader {
			return nil, false
		}
		out[g] = lead
	}
	return out, true
}

// waitLeaders waits until every group has a leader (leaders), up to
// timeout.
func (c *testCluster) waitLeaders(groups []uint64, timeout time.Duration) map[uint64]uint64 {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if l, ok := c.leaders(groups); ok {
			return l
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("groups without one agreed leader after %v", timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// propose proposes data to group on whichever node leads it, again while
// the group elects or drops it, until it is acknowledged or ctx ends.
func (c *testCluster) propose(ctx context.Context, group uint64, data []byte) error {
	for {
		var err error
		for _, n := range c.running() {
			s, serr := n.d.Status(group)
			if serr != nil || s.Role != Leader {
				continue
			}
			if err = n.d.Propose(ctx, group, data); err == nil {
				return nil
			}
		}
		var nl *NotLeaderError
		if err != nil && !errors.As(err, &nl) && !errors.Is(err, ErrDropped) && !errors.Is(err, ErrClosed) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("group %d: %w (last: %v)", group, ctx.Err(), err)
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// waitState waits until node id's state of group equals want, up to
// timeout.
func (c *testCluster) waitState(id, group uint64, want map[string]string, timeout time.Duration) {
	c.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		got, err := c.node(id).sm.dump(group)
		if err != nil {
			c.t.Fatal(err)
		}
		if maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("node %d, group %d: %d keys, want %d (first missing: %s)", id, group, len(got), len(want), firstMissing(got, want))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func firstMissing(got, want map[string]string) string {
	for _, k := range slices.Sorted(maps.Keys(want)) {
		if got[k] != want[k] {
			return fmt.Sprintf("%s=%q (has %q)", k, want[k], got[k])
		}
	}
	for k := range got {
		if _, ok := want[k]; !ok {
			return fmt.Sprintf("%s (not wanted)", k)
		}
	}
	return "none"
}

// groupIDs returns n group ids, not consecutive, as partitions' would be.
func groupIDs(n int) []uint64 {
	var out []uint64
	for i := range n {
		out = append(out, uint64(100+7*i))
	}
	return out
}
