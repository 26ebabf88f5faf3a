package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"persona/cluster"
	"persona/cluster/raft"
	"persona/cluster/replicas"
	"persona/config"
	"persona/storage"
)

// replication is a clustered node's share of the partitions' raft groups:
// the raft transport on cluster.raft_bind, the controller that keeps each
// group on the nodes placement chooses, and which partitions this node
// leads and has caught up on, so that the host places their actors here.
type replication struct {
	name string
	id   uint64
	tr   *raft.TCPTransport
	path *raftPath
	log  *slog.Logger
	// changed wakes the node's placement loop: a group's leader changed
	// or a new leader caught up. Never blocks (capacity 1).
	changed chan struct{}

	mu       sync.Mutex
	ctl      *replicas.Controller
	caughtUp map[uint64]uint64 // groups led here whose barrier applied, by the term led
}

// nodeName is the node's name in the cluster: cluster.node_name, else the
// host name and cluster.bind's port, as the membership names itself.
func nodeName(c config.Cluster) (string, error) {
	if c.NodeName != "" {
		return c.NodeName, nil
	}
	_, port, err := net.SplitHostPort(c.Bind)
	if err != nil || port == "0" {
		return "", fmt.Errorf("cluster.node_name: must be set when cluster.bind (%q) names no fixed port", c.Bind)
	}
	host, err := os.Hostname()
	if err != nil {
		return "", fmt.Errorf("cluster.node_name: name the node after its host: %w", err)
	}
	return host + "-" + port, nil
}

// openReplicated opens the store on raft groups shared with the other
// nodes: the node's own keys in a group of this node alone, each
// partition in the group the controller places (started later, by
// startReplicas), all on one driver whose transport listens on
// cluster.raft_bind. It returns once the node's own group has applied
// what its log holds. A node that ran without a cluster founds its
// partitions' groups with its data here (convert.go).
func openReplicated(dataDir string, opts storage.Options, cfg *config.Config, log *slog.Logger) (*storage.Store, *replication, error) {
	name, err := nodeName(cfg.Cluster)
	if err != nil {
		return nil, nil, err
	}
	r := &replication{name: name, id: replicas.NodeID(name), log: log, changed: make(chan struct{}, 1), caughtUp: map[uint64]uint64{}}
	keys, err := cfg.Cluster.GossipKeys() // the raft peers prove they hold one
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.gossip_key_file: %w", err)
	}
	r.tr, err = raft.ListenTCP(raft.TCPOptions{NodeID: r.id, Listen: cfg.Cluster.RaftBind, Logger: log, Keys: keys})
	if err != nil {
		return nil, nil, fmt.Errorf("cluster.raft_bind: %w", err)
	}
	if err := takeOverLocalLog(dataDir, opts, cfg.Actors.Partitions, otherSeeds(cfg.Cluster), log); err != nil {
		_ = r.tr.Close()
		return nil, nil, err
	}
	r.path = &raftPath{partitions: cfg.Actors.Partitions}
	opts.CommitPath = r.path
	s, err := storage.Open(filepath.Join(dataDir, "db"), opts)
	if err != nil {
		_ = r.tr.Close()
		return nil, nil, err
	}
	r.path.s = s
	const tick = 100 * time.Millisecond
	ropts := raft.Options{NodeID: r.id, Dir: filepath.Join(dataDir, "raft"), Logger: log, OnEvent: r.onEvent,
		TickInterval: tick, ElectionTicks: max(2, int(cfg.Cluster.ElectionTimeout/tick))}
	if r.path.d, err = raft.Open(ropts, r.path, r.tr); err != nil {
		_ = r.tr.Close()
		_ = s.Close()
		return nil, nil, fmt.Errorf("open the raft log: %w", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	d := r.path.d
	// A node that never ran in a cluster has an empty raft log: the
	// store's applied indexes, if any, point into a log gone.
	fresh := len(d.Statuses()) == 0
	if fresh {
		err = s.ForgetApplied()
	}
	if err == nil {
		err = d.AddGroup(ctx, nodeGroup, []uint64{r.id})
	}
	if err == nil {
		_, err = d.WaitLeader(ctx, nodeGroup)
	}
	if err == nil {
		err = d.Propose(ctx, nodeGroup, nil) // applied: so is every entry before it
	}
	if err != nil {
		_ = s.Close() // closes the driver too
		return nil, nil, fmt.Errorf("open the node's own raft group: %w", err)
	}
	if err := foundHeld(ctx, r, s, dataDir, cfg, fresh); err != nil {
		_ = s.Close()
		return nil, nil, err
	}
	return s, r, nil
}

// raftAddr is the address the others reach this node's raft transport at:
// cluster.raft_bind's host (an unspecified one is told as the advertised
// address by the membership) with the port the transport listens on.
func (r *replication) raftAddr(bind string) string {
	host, _, err := net.SplitHostPort(bind)
	if err != nil {
		return bind
	}
	_, port, err := net.SplitHostPort(r.tr.Addr().String())
	if err != nil {
		return bind
	}
	return net.JoinHostPort(host, port)
}

// startReplicas starts the controller once the node is in the cluster.
// The founders of a cluster are this node and the seeds it joins: it
// founds the partitions once that many members are alive (so a node with
// no seeds founds a cluster of its own).
func (r *replication) startReplicas(m *cluster.Membership, cfg *config.Config, n *Node) {
	expect := 1
	self := map[string]bool{cfg.Cluster.Bind: true, cfg.Cluster.Advertise: true, m.Addr(): true}
	seen := map[string]bool{}
	for _, s := range cfg.Cluster.Join {
		if !self[s] && !seen[s] {
			seen[s] = true
			expect++
		}
	}
	st := r.path.s
	ctl := replicas.Start(r.path.d, m, replicas.Options{Partitions: cfg.Actors.Partitions, ReplicationFactor: cfg.Cluster.ReplicationFactor,
		BootstrapExpect: expect, SetPeer: r.tr.SetPeer, Metrics: n.metrics, Log: r.log.With("component", "replicas"),
		Drop: func(g uint64) error { return st.DropPartition(replicas.Partition(g)) }})
	r.mu.Lock()
	r.ctl = ctl
	r.mu.Unlock()
}

// onEvent is the driver's OnEvent: it passes the event to the controller,
// has a partition this node now leads proposed a barrier (its actors move
// here once every entry before it is applied), and wakes the placement
// loop. Called from the driver loop: it must not wait.
func (r *replication) onEvent(ev raft.Event) {
	r.mu.Lock()
	ctl := r.ctl
	if ev.Removed || ev.Role != raft.Leader {
		delete(r.caughtUp, ev.Group)
	}
	r.mu.Unlock()
	if ctl != nil {
		ctl.OnEvent(ev)
	}
	if !ev.Removed && ev.Role == raft.Leader && ev.Group != nodeGroup {
		go r.catchUp(ev.Group, ev.Term)
	}
	r.poke()
}

// catchUp proposes to group g, which this node leads in term, the term
// as the partition's fence (storage.FenceRecord), and once it is applied
// marks g caught up: every entry before it is applied too, and a batch
// an actor built under another leadership is refused from then on. A
// fence raft drops (a leadership transfer under way, say) is proposed
// again while the node still leads g in that term; the next election
// starts another.
func (r *replication) catchUp(g, term uint64) {
	r.path.d.ProposeAsync(g, storage.FenceRecord(term), func(err error) {
		st, serr := r.path.d.Status(g)
		leads := serr == nil && st.Role == raft.Leader && st.Term == term
		switch {
		case err == nil && leads:
			r.mu.Lock()
			r.caughtUp[g] = term
			r.mu.Unlock()
			r.poke()
		case err != nil && leads && !errors.Is(err, raft.ErrClosed):
			time.AfterFunc(50*time.Millisecond, func() { r.catchUp(g, term) })
		}
	})
}

// poke wakes the placement loop without waiting.
func (r *replication) poke() {
	select {
	case r.changed <- struct{}{}:
	default:
	}
}

// owners returns the owner of every partition: the leader of its group,
// as this node's driver knows it for the groups it holds, else as the
// members gossip it. This node owns a partition it leads only once it
// caught up on it; a partition no member is known to lead has no owner.
// terms holds, for each partition this node owns, the term it leads in.
func (r *replication) owners(m *cluster.Membership, partitions int) (out []cluster.Owner, terms []uint64) {
	byID := map[uint64]cluster.Member{}
	ledBy := make([]string, partitions)
	addrs := map[string]string{r.name: m.Local().ActorAddr}
	for _, mb := range m.Members() {
		byID[replicas.NodeID(mb.Name)] = mb
		if mb.State == cluster.StateAlive || mb.State == cluster.StateSuspect {
			addrs[mb.Name] = mb.ActorAddr
			for _, p := range mb.Led {
				if p < partitions && mb.Name != r.name {
					ledBy[p] = mb.Name
				}
			}
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out, terms = make([]cluster.Owner, partitions), make([]uint64, partitions)
	for p := range partitions {
		g := replicas.Group(p)
		name := ledBy[p]
		if st, err := r.path.d.Status(g); err == nil && st.Leader != 0 {
			switch {
			case st.Leader == r.id && r.caughtUp[g] == st.Term:
				name, terms[p] = r.name, st.Term
			case st.Leader == r.id:
				name = "" // elected, not caught up yet: hold
			default:
				name = byID[st.Leader].Name
			}
		}
		if addr, ok := addrs[name]; ok && name != "" {
			out[p] = cluster.Owner{Name: name, ActorAddr: addr}
		}
	}
	return out, terms
}

// drain hands the leadership of this node's groups to other voters and
// stops the controller.
func (r *replication) drain(ctx context.Context) {
	if r == nil {
		return
	}
	r.mu.Lock()
	ctl := r.ctl
	r.ctl = nil
	r.mu.Unlock()
	if ctl == nil {
		return
	}
	if err := ctl.Drain(ctx); err != nil {
		r.log.Warn("hand the partitions' leadership over before stopping", "err", err)
	}
	ctl.Close()
}
