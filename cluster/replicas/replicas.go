// Package replicas keeps each partition's raft group on the nodes placement
// chooses: it is the cluster's controller between the membership
// (cluster.Membership) and the replication driver (cluster/raft).
//
// Each node runs one Controller. It founds the groups once, when the
// cluster's first members are all present; afterwards each group's leader
// changes the group's voters, one at a time, toward the replicas
// rendezvous hashing places over the live members and those gone for less
// than a grace (adding before it removes, so a group never runs short of
// copies by choice), and hands
// leadership to the preferred replica, so that leadership spreads again
// after a failure. A node that placement gives a partition it does not
// hold starts an empty replica for the leader to add; a node removed from
// a group forgets its replica. The controller also tells the raft
// transport where every member listens, and gossips the partitions this
// node leads and follows.
//
// It acts on membership events, on the driver's changes of role (Notify)
// and on a timer, from one goroutine; a change raft refuses or that times
// out is tried again on the next pass.
package replicas

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/cespare/xxhash/v2"

	"persona/cluster"
	"persona/cluster/raft"
	"persona/metrics"
)

// NodeID is the raft replica id of the node named name: the same on every
// node, never 0.
func NodeID(name string) uint64 { return cmp.Or(xxhash.Sum64String(name), 1) }

// Group is the raft group of partition p. Group 0 is none, and group 1
// the node's own keys, which no other node holds.
func Group(p int) uint64 { return uint64(p) + 2 }

// Partition is the partition of group g (Group's inverse).
func Partition(g uint64) int { return int(g) - 2 }

// Options configure a Controller. Partitions, ReplicationFactor and
// BootstrapExpect must be set.
type Options struct {
	// Partitions is the number of partitions, each one raft group.
	Partitions int
	// ReplicationFactor is how many voters each group has, capped by the
	// number of live members.
	ReplicationFactor int
	// BootstrapExpect is how many members found the cluster: a node whose
	// driver holds no group, in a cluster where no member gossips a
	// partition, waits until this many members are alive, then starts
	// its replicas of the partitions placed on it with the voters placed,
	// the same on every founder.
	BootstrapExpect int
	// Interval is how often the controller looks again with nothing to
	// wake it. Default 1 s.
	Interval time.Duration
	// ChangeTimeout bounds one membership change or leader transfer.
	// Default 5 s.
	ChangeTimeout time.Duration
	// ReplaceAfter is how long a member may be gone (dead, left, or
	// leaving) before its replicas are placed on other members: a node
	// restarting keeps its replicas and catches up from its groups' logs
	// rather than from snapshots. Its groups elect other leaders at once
	// meanwhile. Default 1 minute.
	ReplaceAfter time.Duration
	// SetPeer tells the raft transport where a member listens.
	SetPeer func(id uint64, addr string)
	// Drop is called with a group this node no longer holds a replica of,
	// after the driver forgot it, to delete the group's state; nil keeps
	// it.
	Drop func(group uint64) error
	// Metrics receives the partitions led and followed, leader changes
	// and replica changes; nil disables them.
	Metrics *metrics.Metrics
	// Log receives what the controller does; nil discards it.
	Log *slog.Logger
}

// Controller keeps one node's replicas where placement wants them.
type Controller struct {
	opts     Options
	d        *raft.Driver
	m        *cluster.Membership
	self     uint64
	wake     chan struct{}
	stop     chan struct{}
	done     chan struct{}
	mu       sync.Mutex        // guards draining, founded, gossiped and removed
	removed  []uint64          // groups the driver forgot, their state not yet dropped
	leaders  map[uint64]uint64 // the leader last known of each group
	draining bool
	founded  bool
	gossiped [2][]int             // led and followed, as last gossiped
	moved    map[uint64]time.Time // last leader transfer asked, by group (run's own)
	running  sync.WaitGroup       // changes under way
	slots    chan struct{}        // one per change under way, concurrentChanges at most
}

// Start starts the controller of the node whose driver is d and whose
// membership is m.
func Start(d *raft.Driver, m *cluster.Membership, o Options) *Controller {
	o.Interval = cmp.Or(o.Interval, time.Second)
	o.ChangeTimeout = cmp.Or(o.ChangeTimeout, 5*time.Second)
	o.ReplaceAfter = cmp.Or(o.ReplaceAfter, time.Minute)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	c := &Controller{opts: o, d: d, m: m, self: NodeID(m.Name()), wake: make(chan struct{}, 1),
		stop: make(chan struct{}), done: make(chan struct{}), moved: map[uint64]time.Time{}, leaders: map[uint64]uint64{},
		slots: make(chan struct{}, concurrentChanges)}
	go c.run()
	return c
}

// OnEvent takes the driver's events (raft.Options.OnEvent calls it): a
// change of role or leader asks for a pass soon, and a replica the driver
// forgot (removed by its group, or by forget) has its state dropped on
// the next pass. It never blocks.
func (c *Controller) OnEvent(ev raft.Event) {
	c.mu.Lock()
	switch {
	case ev.Removed:
		c.removed = append(c.removed, ev.Group)
		delete(c.leaders, ev.Group)
	case ev.Leader != 0 && ev.Leader != c.leaders[ev.Group]:
		c.leaders[ev.Group] = ev.Leader
		c.opts.Metrics.ClusterLeaderChange()
	}
	c.mu.Unlock()
	c.poke()
}

// poke asks for a pass soon. It never blocks.
func (c *Controller) poke() {
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// Close stops the controller and waits for its pass in progress.
func (c *Controller) Close() {
	select {
	case <-c.stop:
	default:
		close(c.stop)
	}
	<-c.done
}

func (c *Controller) run() {
	defer close(c.done)
	events, cancel := c.m.Subscribe()
	defer cancel()
	tick := time.NewTicker(c.opts.Interval)
	defer tick.Stop()
	for {
		c.pass()
		select {
		case <-c.stop:
			return
		case <-events:
		case <-c.wake:
		case <-tick.C:
		}
	}
}

// pass looks at the members and the groups once and makes the changes
// due.
func (c *Controller) pass() {
	members := c.m.Members()
	live, placed, founded := c.survey(members)
	held := map[uint64]raft.Status{}
	for _, s := range c.statuses() {
		held[s.Group] = s
	}
	c.mu.Lock()
	draining := c.draining
	founded = founded || c.founded || len(held) > 0
	c.founded = founded
	removed := c.removed
	c.removed = nil
	c.mu.Unlock()
	c.drop(removed, held)
	if draining { // Drain hands leadership away; the replicas stay
		c.gossip()
		return
	}
	if !founded {
		if len(live) >= c.opts.BootstrapExpect {
			c.found(live)
			c.running.Wait()
		}
		c.gossip()
		return
	}
	for p := range c.opts.Partitions {
		if c.stopped() {
			return
		}
		g := Group(p)
		want := ids(cluster.Replicas(p, placed, c.opts.ReplicationFactor))
		st, ok := held[g]
		switch {
		case !ok && slices.Contains(want, c.self):
			c.do("start an empty replica", g, 0, func(ctx context.Context) error { return c.d.AddGroup(ctx, g, nil) })
		case ok && st.Role == raft.Leader:
			c.lead(st, want, ids(live))
		case ok && st.Applied > 0 && !slices.Contains(st.Voters, c.self) && !slices.Contains(st.Learners, c.self):
			c.forget(g)
		case ok && untouched(st) && !slices.Contains(want, c.self):
			c.forget(g) // started for a placement that has moved on since
		}
	}
	c.running.Wait()
	c.gossip()
	c.measureLags()
}

// untouched reports whether a replica is empty and no other replica has
// spoken to it: it has no state, no members and no term (so it cast no
// vote), and forgetting it loses nothing.
func untouched(st raft.Status) bool {
	return st.Applied == 0 && st.Term == 0 && len(st.Voters) == 0 && len(st.Learners) == 0
}

// measureLags exports the replication lag of each partition this node
// leads.
func (c *Controller) measureLags() {
	if c.opts.Metrics == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	lags, err := c.d.Lags(ctx)
	if err != nil {
		return
	}
	byPartition := map[int]uint64{}
	for g, lag := range lags {
		if p := Partition(g); p >= 0 && p < c.opts.Partitions {
			byPartition[p] = lag
		}
	}
	c.opts.Metrics.ClusterReplicationLags(byPartition)
}

// survey tells the transport where each member's raft listens, and
// returns, sorted, the members alive (or suspect), not leaving and not
// draining, and
// those placement places replicas on: the live ones and those gone (dead,
// left or leaving) for less than ReplaceAfter; and whether any other
// member gossips a partition (the cluster was founded).
func (c *Controller) survey(members []cluster.Member) (live, placed []string, founded bool) {
	for _, mb := range members {
		if mb.RaftAddr != "" && c.opts.SetPeer != nil && mb.Name != c.m.Name() {
			c.opts.SetPeer(NodeID(mb.Name), mb.RaftAddr)
		}
		if mb.Name != c.m.Name() && len(mb.Led)+len(mb.Followed) > 0 {
			founded = true
		}
		if mb.MetaErr != nil {
			continue
		}
		switch {
		case (mb.State == cluster.StateAlive || mb.State == cluster.StateSuspect) && !mb.Leaving && !mb.Draining:
			live = append(live, mb.Name)
			placed = append(placed, mb.Name)
		case time.Since(mb.Since) < c.opts.ReplaceAfter:
			placed = append(placed, mb.Name)
		}
	}
	slices.Sort(live)
	slices.Sort(placed)
	return live, placed, founded
}

// found starts this node's replicas of a new cluster: every group
// placement puts on it, with the voters placed, as every founder does.
func (c *Controller) found(live []string) {
	c.opts.Log.Info("founding the cluster's partitions", "members", live)
	for p := range c.opts.Partitions {
		voters := ids(cluster.Replicas(p, live, c.opts.ReplicationFactor))
		if slices.Contains(voters, c.self) {
			g := Group(p)
			c.do("found the group", g, 0, func(ctx context.Context) error { return c.d.AddGroup(ctx, g, voters) })
		}
	}
	c.mu.Lock()
	c.founded = true
	c.mu.Unlock()
}

// lead makes one change toward want in a group this node leads: add a
// missing replica that is live, as a learner, or make such a learner a
// voter once it has caught up; else remove a replica placement dropped
// (handing leadership away first if that is this node); else hand
// leadership to the preferred replica if it is live. A replica joins as
// a learner so that the group's quorum does not count it while it
// restores its snapshot: replacing a dead voter, the new one is added
// before the dead one is removed, and counted at once it would leave the
// group short of a quorum until it had the whole partition.
func (c *Controller) lead(st raft.Status, want, live []uint64) {
	g := st.Group
	if len(want) == 0 {
		return
	}
	for _, id := range want {
		switch {
		case slices.Contains(st.Voters, id) || !slices.Contains(live, id):
			continue
		case slices.Contains(st.Learners, id):
			c.do("make a learner a voter", g, id, func(ctx context.Context) error {
				if err := c.promote(ctx, g, id); err != nil {
					return err
				}
				c.opts.Metrics.ClusterReplicaChange("promote")
				return nil
			})
		default:
			c.do("add a learner", g, id, func(ctx context.Context) error { return c.d.AddLearner(ctx, g, id) })
			c.opts.Metrics.ClusterReplicaChange("add")
		}
		return
	}
	for _, id := range st.Learners {
		if !slices.Contains(want, id) {
			c.do("remove a learner", g, id, func(ctx context.Context) error { return c.d.RemoveReplica(ctx, g, id) })
			c.opts.Metrics.ClusterReplicaChange("remove")
			return
		}
	}
	for _, id := range st.Voters {
		if slices.Contains(want, id) {
			continue
		}
		if id == c.self {
			if slices.Contains(live, want[0]) {
				c.transfer(g, want[0])
			}
			return
		}
		c.do("remove a replica", g, id, func(ctx context.Context) error { return c.d.RemoveReplica(ctx, g, id) })
		c.opts.Metrics.ClusterReplicaChange("remove")
		return
	}
	if want[0] != c.self && slices.Contains(live, want[0]) && slices.Contains(st.Voters, want[0]) {
		c.transfer(g, want[0])
	}
}

// promoteWait is how long promote waits for a learner to catch up, and
// promoteEvery how often it looks meanwhile: a small partition's snapshot
// comes within a heartbeat or two.
const (
	promoteWait  = 5 * time.Second
	promoteEvery = 100 * time.Millisecond
)

// promote makes learner id of g a voter, once it has caught up, waiting
// up to promoteWait for that.
func (c *Controller) promote(ctx context.Context, g, id uint64) error {
	ctx, cancel := context.WithTimeout(ctx, promoteWait)
	defer cancel()
	for {
		err := c.d.AddReplica(ctx, g, id)
		if !errors.Is(err, raft.ErrBehind) {
			return err
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(promoteEvery):
		}
	}
}

// Drain stops changing replicas and hands the leadership of every group
// this node leads to another voter, the one placement prefers among the
// live members without this node. It returns once this node leads no
// group another live voter could lead, or with ctx's error. It gossips
// the node as draining first, so that the others hand it no leadership
// back. A node stopping calls it, so that its partitions are served
// elsewhere before it goes.
func (c *Controller) Drain(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	if err := c.m.UpdateLocal(func(m *cluster.Meta) { m.Draining = true }); err != nil && !errors.Is(err, cluster.ErrLeft) {
		c.opts.Log.Warn("replicas: tell the cluster this node drains", "err", err)
	}
	for {
		live, _, _ := c.survey(c.m.Members())
		live = slices.DeleteFunc(live, func(n string) bool { return n == c.m.Name() })
		leading := 0
		for _, s := range c.statuses() {
			if s.Role != raft.Leader {
				continue
			}
			to := uint64(0)
			for _, id := range ids(cluster.Replicas(Partition(s.Group), live, len(live))) {
				if slices.Contains(s.Voters, id) {
					to = id
					break
				}
			}
			if to == 0 {
				continue // no other voter alive: nobody to hand it to
			}
			leading++
			g := s.Group
			c.do("hand leadership over before stopping", g, to, func(ctx context.Context) error { return c.d.TransferLeader(ctx, g, to) })
		}
		c.running.Wait()
		if leading == 0 {
			c.gossip()
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// transferEvery is the least time between two leader transfers of one
// group, so that a transfer raft refuses (the target behind or down) is
// not asked for on every pass.
const transferEvery = 2 * time.Second

// transfer hands g's leadership to node to, at most every transferEvery.
func (c *Controller) transfer(g, to uint64) {
	if time.Since(c.moved[g]) < transferEvery {
		return
	}
	c.moved[g] = time.Now()
	c.do("hand leadership over", g, to, func(ctx context.Context) error {
		if ok, err := c.d.KeepsUp(ctx, g, to); err != nil || !ok {
			return cmp.Or(err, raft.ErrBehind) // not to one that may be cut off or down
		}
		c.opts.Metrics.ClusterReplicaChange("transfer")
		return c.d.TransferLeader(ctx, g, to)
	})
}

// forget drops this node's replica of g, which its group removed while
// this node did not hear of it; OnEvent then hears of the drop.
func (c *Controller) forget(g uint64) {
	c.do("forget a removed replica", g, 0, func(ctx context.Context) error {
		if err := c.d.RemoveGroup(ctx, g); err != nil && !errors.Is(err, raft.ErrUnknownGroup) {
			return err
		}
		return nil
	})
}

// drop deletes the state of the groups the driver forgot, unless the
// node holds the group again. A drop that fails is tried on the next pass.
func (c *Controller) drop(groups []uint64, held map[uint64]raft.Status) {
	for _, g := range groups {
		if _, again := held[g]; again || c.opts.Drop == nil {
			continue
		}
		if err := c.opts.Drop(g); err != nil {
			c.opts.Log.Warn("replicas: delete a forgotten replica's state", "partition", Partition(g), "err", err)
			c.mu.Lock()
			c.removed = append(c.removed, g)
			c.mu.Unlock()
			continue
		}
		c.opts.Log.Info("replicas: deleted a forgotten replica's state", "partition", Partition(g))
	}
}

// do starts one change, made within ChangeTimeout, and logs its outcome;
// a change that fails is tried again on a later pass. The changes of a
// pass run concurrently (concurrentChanges at most), and the pass waits
// for them all.
func (c *Controller) do(what string, g, node uint64, fn func(context.Context) error) {
	c.running.Add(1)
	c.slots <- struct{}{}
	go func() {
		defer func() { <-c.slots; c.running.Done() }()
		ctx, cancel := context.WithTimeout(context.Background(), c.opts.ChangeTimeout)
		defer cancel()
		go func() {
			select {
			case <-c.stop:
				cancel()
			case <-ctx.Done():
			}
		}()
		if err := fn(ctx); err != nil {
			c.opts.Log.Debug("replicas: "+what+" failed; trying again later", "partition", Partition(g), "node", node, "err", err)
			return
		}
		c.opts.Log.Info("replicas: "+what, "partition", Partition(g), "node", node)
		c.poke() // the next change of the group may be due at once
	}()
}

// concurrentChanges is how many changes of different groups the
// controller makes at once.
const concurrentChanges = 16

// gossip tells the cluster the partitions this node leads and follows,
// when they changed.
func (c *Controller) gossip() {
	var led, followed []int
	learning := 0
	for _, s := range c.statuses() {
		switch {
		case s.Role == raft.Leader:
			led = append(led, Partition(s.Group))
		case slices.Contains(s.Voters, c.self):
			followed = append(followed, Partition(s.Group))
		default: // empty, or a learner: not a copy the group counts yet
			learning++
		}
	}
	slices.Sort(led)
	slices.Sort(followed)
	c.opts.Metrics.ClusterPartitions(len(led), len(followed), learning)
	c.mu.Lock()
	same := slices.Equal(led, c.gossiped[0]) && slices.Equal(followed, c.gossiped[1])
	c.mu.Unlock()
	if same {
		return
	}
	// Not under mu: UpdateLocal waits for memberlist to pass the update
	// on (up to a second), and OnEvent, which takes mu, runs in the raft
	// driver's loop: held here, it stopped every group of the node.
	if err := c.m.UpdateLocal(func(m *cluster.Meta) { m.Led, m.Followed = led, followed }); err != nil {
		if !errors.Is(err, cluster.ErrLeft) {
			c.opts.Log.Warn("replicas: gossip the partitions held", "err", err)
		}
		return
	}
	c.mu.Lock()
	c.gossiped = [2][]int{led, followed}
	c.mu.Unlock()
}

// statuses returns the driver's status of the partitions' groups it
// holds, leaving out its other groups (the node's own).
func (c *Controller) statuses() []raft.Status {
	all := c.d.Statuses()
	out := all[:0]
	for _, s := range all {
		if p := Partition(s.Group); p >= 0 && p < c.opts.Partitions {
			out = append(out, s)
		}
	}
	return out
}

// stopped reports whether Close was called.
func (c *Controller) stopped() bool {
	select {
	case <-c.stop:
		return true
	default:
		return false
	}
}

// ids returns the raft ids of the named nodes, in order.
func ids(names []string) []uint64 {
	out := make([]uint64, len(names))
	for i, n := range names {
		out[i] = NodeID(n)
	}
	return out
}
