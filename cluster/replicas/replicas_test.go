package replicas

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"persona/cluster"
	"persona/cluster/raft"
	"persona/internal/leakcheck"
	"persona/metrics"
	"persona/storage"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

const testPartitions = 8

// store is a raft state machine on a real store: group g's state is the
// key range p/<g>/, with its applied index beside it, as a node keeps a
// partition's.
type store struct {
	s     *storage.Store
	drops atomic.Int64
}

func rangeOf(g uint64) []byte   { return fmt.Appendf(nil, "p/%04x/", Partition(g)) }
func appliedOf(g uint64) []byte { return fmt.Appendf(nil, "\xfftest-applied/%d", g) }

// Flushed: CommitSync made every Apply durable.
func (m *store) Flushed() (durable, newest uint64, err error) { return 1, 0, nil }

func (m *store) Drop(g uint64) error {
	m.drops.Add(1)
	return m.s.ImportRange(rangeOf(g), nil, deleted(appliedOf(g)))
}

func deleted(k []byte) *storage.Batch {
	b := &storage.Batch{}
	b.Delete(k)
	return b
}

func (m *store) Applied(g uint64) (uint64, error) {
	v, err := m.s.Get(appliedOf(g))
	if errors.Is(err, storage.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint64(v), nil
}

// Apply writes each command, key=value, in its group's range.
func (m *store) Apply(updates []raft.Update) error {
	b := &storage.Batch{}
	for _, u := range updates {
		for _, cmd := range u.Commands {
			k, v, _ := bytes.Cut(cmd, []byte("="))
			b.Set(append(rangeOf(u.Group), k...), v)
		}
		b.Set(appliedOf(u.Group), binary.BigEndian.AppendUint64(nil, u.Index))
	}
	return m.s.CommitSync(b)
}

func (m *store) Snapshot(g uint64) (func() ([]byte, error), error) {
	return m.s.ExportRangeLater(rangeOf(g)), nil
}

func (m *store) Restore(g, index uint64, data []byte) error {
	done := &storage.Batch{}
	done.Set(appliedOf(g), binary.BigEndian.AppendUint64(nil, index))
	return m.s.ImportRange(rangeOf(g), data, done)
}

// contents is group g's state on this node.
func (m *store) contents(t *testing.T, g uint64) map[string]string {
	out := map[string]string{}
	prefix := rangeOf(g)
	if err := m.s.Scan(prefix, nil, func(k, v []byte) error { out[string(k[len(prefix):])] = string(v); return nil }); err != nil {
		t.Fatal(err)
	}
	return out
}

// node is one member: memberlist, a raft driver on loopback TCP over a
// real store, and its controller.
type node struct {
	name    string
	metrics *metrics.Metrics
	m       *cluster.Membership
	d       *raft.Driver
	c       *Controller
	sm      *store
	once    sync.Once
}

// startNode starts a member named name that joins seeds and founds the
// cluster with expect members; it stops when the test ends.
func startNode(t *testing.T, name string, expect int, seeds ...string) *node {
	t.Helper()
	st, err := storage.Open(t.TempDir(), storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{name: name, sm: &store{s: st}, metrics: metrics.New(nil)}
	tr, err := raft.ListenTCP(raft.TCPOptions{NodeID: NodeID(name), Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	var ctl atomic.Pointer[Controller]
	n.d, err = raft.Open(raft.Options{NodeID: NodeID(name), Dir: t.TempDir(), TickInterval: 50 * time.Millisecond,
		OnEvent: func(ev raft.Event) {
			if c := ctl.Load(); c != nil {
				c.OnEvent(ev)
			}
		}}, n.sm, tr)
	if err != nil {
		t.Fatal(err)
	}
	n.m, err = cluster.Start(cluster.Options{Name: name, Bind: "127.0.0.1:0", Join: seeds, Partitions: testPartitions,
		Local:         cluster.Meta{ActorAddr: ":8090", RaftAddr: tr.Addr().String(), Ready: true},
		ProbeInterval: 200 * time.Millisecond, ProbeTimeout: 100 * time.Millisecond, SuspicionMult: 3,
		GossipInterval: 50 * time.Millisecond, PushPullInterval: 2 * time.Second,
		Rejoin: 200 * time.Millisecond, Refresh: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	n.c = Start(n.d, n.m, Options{Partitions: testPartitions, ReplicationFactor: 3, BootstrapExpect: expect,
		Interval: 100 * time.Millisecond, ChangeTimeout: 2 * time.Second, ReplaceAfter: time.Second, SetPeer: tr.SetPeer, Drop: n.sm.Drop,
		Metrics: n.metrics, Log: slog.New(slog.DiscardHandler)})
	ctl.Store(n.c)
	t.Cleanup(n.kill)
	return n
}

// kill stops the node at once, without leaving: as a crash looks to the
// others.
func (n *node) kill() {
	n.once.Do(func() {
		n.c.Close()
		_ = n.d.Close()
		_ = n.m.Shutdown()
		_ = n.sm.s.Close()
	})
}

// placed returns the voters placement wants for every group over names,
// with the preferred leader first.
func placed(names []string) map[uint64][]uint64 {
	slices.Sort(names)
	out := map[uint64][]uint64{}
	for p := range testPartitions {
		out[Group(p)] = ids(cluster.Replicas(p, names, 3))
	}
	return out
}

// converged reports whether, on nodes, every group has exactly the voters
// want gives it, each of them holds it, and each knows the same leader
// (want's first when preferred is set).
func converged(nodes []*node, want map[uint64][]uint64, preferred bool) error {
	for g, voters := range want {
		var leader uint64
		for _, n := range nodes {
			st, err := n.d.Status(g)
			in := slices.Contains(voters, NodeID(n.name))
			switch {
			case in && err != nil:
				return fmt.Errorf("%s: group %d: %v", n.name, g, err)
			case !in && err == nil:
				return fmt.Errorf("%s still holds group %d", n.name, g)
			case !in:
				continue
			}
			if !slices.Equal(st.Voters, sorted(voters)) {
				return fmt.Errorf("%s: group %d has voters %v, want %v", n.name, g, st.Voters, sorted(voters))
			}
			if st.Leader == 0 || (leader != 0 && st.Leader != leader) {
				return fmt.Errorf("%s: group %d: leader %d (another replica knows %d)", n.name, g, st.Leader, leader)
			}
			leader = st.Leader
		}
		if preferred && leader != voters[0] {
			return fmt.Errorf("group %d is led by %d, not the preferred %d", g, leader, voters[0])
		}
	}
	return nil
}

func sorted(ids []uint64) []uint64 { return slices.Sorted(slices.Values(ids)) }

// eventually polls cond until it returns nil, or fails after within.
func eventually(t *testing.T, within time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v: %v", what, within, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// propose writes key=value to group g through its leader among nodes.
func propose(t *testing.T, nodes []*node, g uint64, key, value string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, n := range nodes {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			err := n.d.Propose(ctx, g, []byte(key+"="+value))
			cancel()
			if err == nil {
				return
			}
		}
		if time.Now().After(deadline) {
			var seen []string
			for _, n := range nodes {
				st, err := n.d.Status(g)
				seen = append(seen, fmt.Sprintf("%s: %+v %v", n.name, st, err))
			}
			t.Fatalf("no leader of group %d took %s=%s: %v", g, key, value, seen)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// sameEverywhere reports whether every voter of every group among nodes
// holds the same state as want.
func sameEverywhere(t *testing.T, nodes []*node, want map[uint64]map[string]string) error {
	for _, n := range nodes {
		for g, kv := range want {
			if _, err := n.d.Status(g); err != nil {
				continue
			}
			if got := n.sm.contents(t, g); !maps.Equal(got, kv) {
				return fmt.Errorf("%s: group %d holds %v, want %v", n.name, g, got, kv)
			}
		}
	}
	return nil
}

// TestFoundersPlaceGroupsAndSpreadLeadership: three members that found a
// cluster together start every group with the voters placement gives it,
// the preferred replica ends up leading each, every node gossips what it
// leads, and writes reach every replica.
func TestFoundersPlaceGroupsAndSpreadLeadership(t *testing.T) {
	a := startNode(t, "a", 3)
	b := startNode(t, "b", 3, a.m.Addr())
	c := startNode(t, "c", 3, a.m.Addr())
	nodes := []*node{a, b, c}
	want := placed([]string{"a", "b", "c"})
	eventually(t, 20*time.Second, "groups founded and led by their preferred replicas", func() error { return converged(nodes, want, true) })
	eventually(t, 5*time.Second, "leadership gossiped", func() error {
		for _, n := range nodes {
			for _, mb := range a.m.Members() {
				if mb.Name != n.name {
					continue
				}
				var led []int
				for g, voters := range want {
					if voters[0] == NodeID(n.name) {
						led = append(led, Partition(g))
					}
				}
				slices.Sort(led)
				if !slices.Equal(mb.Led, led) {
					return fmt.Errorf("%s gossips leading %v, it leads %v", n.name, mb.Led, led)
				}
			}
		}
		return nil
	})
	eventually(t, 5*time.Second, "the partitions each node leads and follows, in its metrics", func() error {
		var led, followed, changes float64
		for _, n := range nodes {
			led += sample(t, n.metrics, `persona_cluster_partitions{role="leader"}`)
			followed += sample(t, n.metrics, `persona_cluster_partitions{role="follower"}`)
			changes += sample(t, n.metrics, `persona_cluster_leader_changes_total`)
		}
		if led != testPartitions || followed != 2*testPartitions || changes < testPartitions {
			return fmt.Errorf("%v led, %v followed, %v leader changes", led, followed, changes)
		}
		for g, voters := range want {
			leader := nodes[slices.IndexFunc(nodes, func(n *node) bool { return NodeID(n.name) == voters[0] })]
			series := fmt.Sprintf(`persona_cluster_replication_lag_entries{partition="%d"}`, Partition(g))
			if !strings.Contains(metricsText(leader.metrics), series+" ") {
				return fmt.Errorf("%s exports no %s", leader.name, series)
			}
		}
		return nil
	})
	state := map[uint64]map[string]string{}
	for g := range want {
		propose(t, nodes, g, "k", fmt.Sprint("v", g))
		state[g] = map[string]string{"k": fmt.Sprint("v", g)}
	}
	eventually(t, 5*time.Second, "every replica applied the writes", func() error { return sameEverywhere(t, nodes, state) })
}

// metricsText is m's exposition.
func metricsText(m *metrics.Metrics) string {
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	return rec.Body.String()
}

// sample returns the value of one sample (name and labels as the text
// format prints them) that m exports, 0 if it exports none.
func sample(t *testing.T, m *metrics.Metrics, series string) float64 {
	t.Helper()
	for line := range strings.Lines(metricsText(m)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), series+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}
			return f
		}
	}
	return 0
}

// TestFailedMemberIsReplaced: when a member dies, each group it held gets
// another live voter, which catches up from a snapshot, the dead one is
// removed, and no acknowledged write is lost.
func TestFailedMemberIsReplaced(t *testing.T) {
	a := startNode(t, "a", 4)
	b := startNode(t, "b", 4, a.m.Addr())
	c := startNode(t, "c", 4, a.m.Addr())
	d := startNode(t, "d", 4, a.m.Addr())
	all := []*node{a, b, c, d}
	eventually(t, 20*time.Second, "groups founded", func() error { return converged(all, placed([]string{"a", "b", "c", "d"}), false) })
	state := map[uint64]map[string]string{}
	for g := range placed([]string{"a"}) {
		propose(t, all, g, "before", "the failure")
		state[g] = map[string]string{"before": "the failure"}
	}
	d.kill()
	live := []*node{a, b, c}
	eventually(t, 30*time.Second, "the dead member's groups re-placed", func() error { return converged(live, placed([]string{"a", "b", "c"}), false) })
	for g := range state {
		propose(t, live, g, "after", "the failure")
		state[g]["after"] = "the failure"
	}
	eventually(t, 5*time.Second, "every replica holds every write", func() error { return sameEverywhere(t, live, state) })
}

// TestJoiningMemberTakesItsShare: a member joining a founded cluster gets
// the groups placement now gives it, with their state, and the members
// that lost a group forget it and delete its state.
func TestJoiningMemberTakesItsShare(t *testing.T) {
	a := startNode(t, "a", 3)
	b := startNode(t, "b", 3, a.m.Addr())
	c := startNode(t, "c", 3, a.m.Addr())
	three := []*node{a, b, c}
	eventually(t, 20*time.Second, "groups founded", func() error { return converged(three, placed([]string{"a", "b", "c"}), false) })
	state := map[uint64]map[string]string{}
	for g := range placed([]string{"a"}) {
		propose(t, three, g, "k", fmt.Sprint("v", g))
		state[g] = map[string]string{"k": fmt.Sprint("v", g)}
	}
	d := startNode(t, "d", 3, a.m.Addr())
	all := []*node{a, b, c, d}
	eventually(t, 30*time.Second, "the groups re-placed over four", func() error { return converged(all, placed([]string{"a", "b", "c", "d"}), false) })
	eventually(t, 5*time.Second, "the newcomer holds its groups' state", func() error { return sameEverywhere(t, all, state) })
	var drops int64
	for _, n := range three {
		drops += n.sm.drops.Load()
	}
	if drops == 0 {
		t.Fatal("no member that lost a group to the newcomer deleted its state")
	}
	// The newcomer joined each group as a learner, then became a voter.
	var added, promoted float64
	for _, n := range all {
		added += sample(t, n.metrics, `persona_cluster_replica_changes_total{change="add"}`)
		promoted += sample(t, n.metrics, `persona_cluster_replica_changes_total{change="promote"}`)
	}
	if promoted == 0 || promoted > added {
		t.Fatalf("%v learners added, %v made voters", added, promoted)
	}
}

// TestStrayEmptyReplicaIsForgotten: an empty replica that no replica has
// spoken to, of a group placement does not put on its node (one started
// on a view of the members that has moved on since), is forgotten.
func TestStrayEmptyReplicaIsForgotten(t *testing.T) {
	a := startNode(t, "a", 4)
	b := startNode(t, "b", 4, a.m.Addr())
	c := startNode(t, "c", 4, a.m.Addr())
	d := startNode(t, "d", 4, a.m.Addr())
	all := []*node{a, b, c, d}
	want := placed([]string{"a", "b", "c", "d"})
	eventually(t, 20*time.Second, "groups founded", func() error { return converged(all, want, false) })
	var stray uint64
	for g, voters := range want {
		if !slices.Contains(voters, NodeID("d")) {
			stray = g
			break
		}
	}
	if err := d.d.AddGroup(context.Background(), stray, nil); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "the stray replica forgotten", func() error {
		if _, err := d.d.Status(stray); err == nil {
			return fmt.Errorf("d still holds group %d", stray)
		}
		return nil
	})
}

// TestDrainHandsLeadershipOver: a member draining leads no group once
// Drain returns, and the groups it led take writes through their new
// leaders.
func TestDrainHandsLeadershipOver(t *testing.T) {
	a := startNode(t, "a", 3)
	b := startNode(t, "b", 3, a.m.Addr())
	c := startNode(t, "c", 3, a.m.Addr())
	nodes := []*node{a, b, c}
	want := placed([]string{"a", "b", "c"})
	eventually(t, 20*time.Second, "groups founded and led by their preferred replicas", func() error { return converged(nodes, want, true) })
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := a.c.Drain(ctx); err != nil {
		t.Fatalf("drain: %v", err)
	}
	for _, s := range a.d.Statuses() {
		if s.Role == raft.Leader {
			t.Fatalf("a still leads group %d after draining", s.Group)
		}
	}
	if err := a.m.Leave(time.Second); err != nil { // as a stopping node does next
		t.Fatal(err)
	}
	for g := range want {
		propose(t, []*node{b, c}, g, "after", "the drain")
	}
}
