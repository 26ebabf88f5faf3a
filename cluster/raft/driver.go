// Package raft replicates groups of state over nodes with etcd's raft
// library (go.etcd.io/raft/v3), driven the way CockroachDB and TiKV drive
// it: one Driver per node owns the RawNode of every group the node has a
// replica of, and one loop and one ticker move them all. A round of the
// loop takes what arrived (ticks, messages, proposals), then for every
// group with work, persists what raft hands out as one log write and at
// most one fdatasync, sends the messages, one batch per peer, and applies
// the committed entries to the StateMachine in one call.
//
// The log is a file of the driver's own in Options.Dir, not badger: a
// round's records are one pwrite and one fdatasync of a plain file. The
// prototype of this driver (research/raft-spike.md in the design notes:
// one badger batch and one DB.Sync per round, 9.2k entries/s at 64 groups
// on 3 nodes) found badger's sync path the cost that grows with writers,
// and persona's storage package measured DB.Sync (an msync of badger's
// memtable log) at twice the time and three times the CPU of pwrite and
// fdatasync for the same round (docs/BENCHMARKS.md, "Commit log sync");
// the storage commit log, which this log is to replace, already works
// that way. The entries raft may still need are also kept in memory
// (raft's MemoryStorage), as etcd keeps its own, so raft never reads the
// file; the log is read only at start.
//
// A group's state is the caller's StateMachine: committed commands go to
// it in batches with their applied index, not synced; a checkpoint drops
// the segments whose entries the state machine has since made durable of
// its own accord (badger flushing a memtable), so that nothing waits on a
// sync of the state; a follower too far behind gets a snapshot of the
// group's state from the leader, read and restored outside the loop
// (snapshot.go). Proposals to a group that reach
// the loop in one round go into one entry. A group whose only replica is
// this node needs no consensus, and is driven without its RawNode
// (solo.go).
//
// The package knows nothing of persona's users, rooms or storage and
// imports no persona package. Nodes and groups are numbers given by the
// caller (cluster/ maps them to members and partitions).
package raft

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"sync"
	"time"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
)

// Driver is one node's raft: every group it holds a replica of, its log
// and its transport.
type Driver struct {
	opts   Options
	sm     StateMachine
	tr     Transport
	log    *logFile
	logger *slog.Logger

	props     chan *proposal
	inbox     chan inbound
	ops       chan func()
	stop      chan struct{}
	done      chan struct{}
	closeOnce sync.Once
	err       error // why the loop ended; set before done is closed
	// propMu orders ProposeAsync's sends before the loop's last drain of
	// props: propClosed is set, under it, once done is closed.
	propMu     sync.RWMutex
	propClosed bool

	// The loop's own.
	groups     map[uint64]*group
	touched    []*group // groups that may have work this round
	seq        uint64   // proposal counter
	ticks      uint64   // ticks so far
	afterWrite []chan<- error
	points     []durablePoint // applied points not yet durable, oldest first (checkpoint.go)
	readies    []ready
	updates    []Update

	bg    sync.WaitGroup // snapshots read and restored outside the loop (snapshot.go)
	bgErr error          // a restore that failed: it stops the loop

	mu      sync.Mutex
	pub     map[uint64]Status
	leases  map[uint64]time.Time // the end of each led group's lease (lease.go)
	changed chan struct{}        // closed and replaced when a status changes
	stats   Stats
}

// group is one group's replica on this node. Driver loop only.
type group struct {
	id          uint64
	rn          *raft.RawNode // nil while the group is driven alone (solo.go)
	ms          *raft.MemoryStorage
	snap        *pb.SnapshotMetadata // raft's snapshot point: entries up to it are gone from memory
	durable     *pb.SnapshotMetadata // the log's: the state machine holds the entries up to it durably
	hs          *pb.HardState        // as the log holds it
	applied     uint64               // the last entry applied
	smApplied   uint64               // entries up to it were applied before the driver opened
	cs          *pb.ConfState        // the membership as of applied
	pubCS       *pb.ConfState        // the membership last published
	confs       []confAt             // membership changes applied after snap
	queued      []*proposal          // proposals of this round, not yet given to raft
	proposed    []*waiter            // entries given to raft this round
	waiting     []*waiter            // entries appended, waiting to be applied
	touched     bool
	removed     bool
	confApplied bool      // a membership change applied this round, not yet published
	confirms    []confirm // a leader's confirmations of its leadership asked for, oldest first (lease.go)

	// Snapshots outside the loop (snapshot.go): one being read for a
	// follower, or read and not yet taken by raft; a Ready whose snapshot
	// is being restored, and what waits for the restore.
	building     bool
	built        *pb.Snapshot
	builtTick    uint64
	restoring    *raft.Ready
	restored     bool
	afterRestore []func()

	// Driven alone (solo.go): the term and last index of its log, the
	// entries of the round; waking, the RawNode built again campaigns, and
	// onLead runs once it leads.
	term, last uint64
	soloEnts   []*pb.Entry
	waking     bool
	onLead     []func()
}

// confAt is the membership from an index on.
type confAt struct {
	index uint64
	cs    *pb.ConfState
}

// inbound is a batch from the transport: received, or failed to send.
type inbound struct {
	peer   uint64
	msgs   []Envelope
	failed bool
}

// ready is a group's raft Ready of the round.
type ready struct {
	g     *group
	rd    raft.Ready
	early bool // its committed entries are applied before the round's write
	lead  bool // the group is led here: its messages go before the write
}

// Stats counts a Driver's work since it opened.
type Stats struct {
	Rounds            uint64 // log writes
	Syncs             uint64 // fdatasyncs of the log
	Entries           uint64 // entries written to the log
	Applied           uint64 // entries applied
	Proposals         uint64 // proposals of this node applied
	ProposalEntries   uint64 // the entries that carried them
	Checkpoints       uint64
	SnapshotsSent     uint64
	SnapshotsRestored uint64
}

// bootstrapIndex is the snapshot point of a group made by AddGroup with
// its first members: the state is empty there.
const bootstrapIndex = 1

// Open recovers the log in opts.Dir, starts a replica of every group it
// holds, and starts the driver loop and tr. Once Open succeeds the Driver
// owns tr: Close closes it; when Open fails, tr is still the caller's.
func Open(opts Options, sm StateMachine, tr Transport) (*Driver, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	var prewrite int64
	if opts.PrewriteSegments {
		prewrite = opts.SegmentBytes
	}
	l, logs, err := openLog(opts.Dir, prewrite)
	if err != nil {
		return nil, fmt.Errorf("open raft log %s: %w", opts.Dir, err)
	}
	logger := opts.Logger
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	d := &Driver{
		opts:    opts,
		sm:      sm,
		tr:      tr,
		log:     l,
		logger:  logger,
		props:   make(chan *proposal, opts.QueueProposals),
		inbox:   make(chan inbound, opts.QueueInbound),
		ops:     make(chan func()),
		stop:    make(chan struct{}),
		done:    make(chan struct{}),
		groups:  map[uint64]*group{},
		seq:     mrand.Uint64(),
		pub:     map[uint64]Status{},
		leases:  map[uint64]time.Time{},
		changed: make(chan struct{}),
	}
	for id, gl := range logs {
		g, err := d.newGroup(id, gl)
		if err != nil {
			l.close()
			return nil, fmt.Errorf("open raft log %s: group %d: %w", opts.Dir, id, err)
		}
		d.groups[id] = g
	}
	// The recovered segment may end in a torn record: go on in a new one.
	if err := l.rotate(d.fillCheckpoint, d.entriesDurable); err != nil {
		l.close()
		return nil, fmt.Errorf("open raft log %s: %w", opts.Dir, err)
	}
	for _, g := range d.groups {
		d.publish(g)
		d.touch(g) // the first round looks at every group
	}
	if err := tr.Start(receiver{d}); err != nil {
		l.close()
		return nil, fmt.Errorf("start raft transport: %w", err)
	}
	go d.run()
	return d, nil
}

// newGroup builds a replica of group id from its log.
func (d *Driver) newGroup(id uint64, gl *groupLog) (*group, error) {
	ms := raft.NewMemoryStorage()
	snap := gl.snap
	if snap == nil {
		snap = &pb.SnapshotMetadata{Index: new(uint64(0)), Term: new(uint64(0)), ConfState: &pb.ConfState{}}
	}
	if snap.GetIndex() > 0 {
		if err := ms.ApplySnapshot(&pb.Snapshot{Metadata: snap}); err != nil {
			return nil, err
		}
	}
	if err := ms.Append(gl.ents); err != nil {
		return nil, err
	}
	if gl.hs != nil {
		if err := ms.SetHardState(gl.hs); err != nil {
			return nil, err
		}
	}
	smApplied, err := d.sm.Applied(id)
	if err != nil {
		return nil, fmt.Errorf("state machine: %w", err)
	}
	if smApplied < snap.GetIndex() && snap.GetIndex() > bootstrapIndex {
		return nil, fmt.Errorf("the state machine applied up to index %d, the log starts after %d: the entries between are lost", smApplied, snap.GetIndex())
	}
	if last, _ := ms.LastIndex(); smApplied > last && soloConf(snap.GetConfState(), d.opts.NodeID) {
		// Applied before the crash took their frame (soloRound): never
		// acknowledged, they stay, and the log goes on after them.
		if ms, snap, gl.hs, err = skipTo(ms, smApplied, gl.hs, snap.GetConfState()); err != nil {
			return nil, err
		}
	}
	g := &group{id: id, ms: ms, snap: snap, durable: snap, hs: gl.hs, applied: snap.GetIndex(), smApplied: smApplied, cs: snap.GetConfState()}
	rn, err := raft.NewRawNode(d.raftConfig(g, 0))
	if err != nil {
		return nil, err
	}
	g.rn = rn
	if soloConf(g.cs, d.opts.NodeID) {
		_ = rn.Campaign() // a group of one: no one to wait for
	}
	return g, nil
}

// raftConfig returns the configuration of g's RawNode, whose entries up
// to applied are applied already.
func (d *Driver) raftConfig(g *group, applied uint64) *raft.Config {
	return &raft.Config{
		ID:                        d.opts.NodeID,
		ElectionTick:              d.opts.ElectionTicks,
		HeartbeatTick:             d.opts.HeartbeatTicks,
		Storage:                   groupStorage{MemoryStorage: g.ms, d: d, g: g},
		Applied:                   applied,
		MaxSizePerMsg:             d.opts.MaxMsgBytes,
		MaxCommittedSizePerReady:  d.opts.MaxApplyBytes,
		MaxUncommittedEntriesSize: 4 * d.opts.MaxApplyBytes,
		MaxInflightMsgs:           d.opts.MaxInflightMsgs,
		MaxInflightBytes:          d.opts.MaxInflightBytes,
		CheckQuorum:               true,
		PreVote:                   true,
		DisableProposalForwarding: true,
		StepDownOnRemoval:         true,
		Logger:                    raftLogger{d.logger.With("group", g.id)},
	}
}

// Close stops the driver loop (every call waiting on it returns
// ErrClosed), then the transport, and closes the log. It returns the
// error that stopped the loop, if one did.
func (d *Driver) Close() error {
	d.closeOnce.Do(func() { close(d.stop) })
	<-d.done
	d.bg.Wait()
	err := d.tr.Close()
	if d.err != nil && !errors.Is(d.err, ErrClosed) {
		err = errors.Join(d.err, err)
	}
	return err
}

// Stats returns the driver's counters.
func (d *Driver) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.stats
}

// closedErr is what a call gets once the loop has ended.
func (d *Driver) closedErr() error {
	select {
	case <-d.done:
		if d.err != nil && !errors.Is(d.err, ErrClosed) {
			return fmt.Errorf("%w: %w", ErrClosed, d.err)
		}
	default:
	}
	return ErrClosed
}

// maxDrain caps what one round takes from each queue beyond the first
// item, so that a round stays short.
const maxDrain = 4096

// run is the driver loop.
func (d *Driver) run() {
	t := time.NewTicker(d.opts.TickInterval)
	defer t.Stop()
	for {
		if len(d.touched) == 0 { // else the last round left work: go on at once
			select {
			case <-d.stop:
				d.shutdown(ErrClosed)
				return
			case <-t.C:
				d.tick()
			case in := <-d.inbox:
				d.receive(in)
			case p := <-d.props:
				d.queueProposal(p)
			case op := <-d.ops:
				op()
			}
		}
	drain:
		for range maxDrain {
			select {
			case <-t.C:
				d.tick()
			case in := <-d.inbox:
				d.receive(in)
			case p := <-d.props:
				d.queueProposal(p)
			case op := <-d.ops:
				op()
			case <-d.stop:
				d.shutdown(ErrClosed)
				return
			default:
				break drain
			}
		}
		d.proposeQueued()
		err := d.round()
		if err == nil && len(d.touched) > 0 {
			// What the round's Advance committed (a group of one's entries,
			// durable now) is applied before more proposals are taken, so
			// that their proposers hear of it a round sooner.
			err = d.round()
		}
		if err == nil && d.log.appended() >= d.opts.SegmentBytes {
			err = d.checkpoint()
		}
		if err != nil {
			d.logger.Error("raft: the driver stopped", "err", err)
			d.shutdown(err)
			return
		}
	}
}

// shutdown fails everything waiting on the loop with err, closes the log
// and ends the loop.
func (d *Driver) shutdown(err error) {
	d.err = err
	closed := fmt.Errorf("%w: %w", ErrClosed, err)
	if errors.Is(err, ErrClosed) {
		closed = ErrClosed
	}
	for _, g := range d.groups {
		g.failWaiting(closed)
	}
	for _, ch := range d.afterWrite {
		ch <- closed
	}
	d.afterWrite = nil
	if cerr := d.log.close(); cerr != nil {
		d.logger.Error("raft: close the log", "err", cerr)
	}
	close(d.done)
	d.propMu.Lock()
	d.propClosed = true
	d.propMu.Unlock()
	// Whatever is still queued gets its answer.
	for {
		select {
		case p := <-d.props:
			p.done(closed)
		default:
			return
		}
	}
}

// touch marks g as having work this round.
func (d *Driver) touch(g *group) {
	if !g.touched {
		g.touched = true
		d.touched = append(d.touched, g)
	}
}

// tick advances every group's clock by one tick.
func (d *Driver) tick() {
	for _, g := range d.groups {
		if !g.solo() {
			g.rn.Tick()
			d.touch(g)
		}
	}
	d.ticks++
	if d.ticks%uint64(d.opts.HeartbeatTicks) == 0 {
		d.askConfirms()
	}
	if d.ticks%snapshotKeep == 0 {
		d.forgetSnapshots()
	}
}

// receive steps a received batch into its groups, or tells them of a
// batch that could not be sent.
func (d *Driver) receive(in inbound) {
	for _, e := range in.msgs {
		g := d.groups[e.Group]
		if g == nil || g.solo() {
			continue // a group this node does not hold (yet, or any more), or holds alone
		}
		d.touch(g)
		if in.failed {
			if e.Msg.GetType() == pb.MsgSnap {
				g.rn.ReportSnapshot(in.peer, raft.SnapshotFailure)
			}
			g.rn.ReportUnreachable(in.peer)
			continue
		}
		_ = g.rn.Step(e.Msg) // raft refuses only messages it has no use for
	}
}

// call runs fn in the driver loop and waits for the answer fn sends on
// reply (at once, or once the round's log write is durable).
func (d *Driver) call(ctx context.Context, fn func(reply chan<- error)) error {
	reply := make(chan error, 1)
	select {
	case d.ops <- func() { fn(reply) }:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		return d.closedErr()
	}
	select {
	case err := <-reply:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		select {
		case err := <-reply:
			return err
		default:
			return d.closedErr()
		}
	}
}

// sortedGroups returns the groups in id order.
func (d *Driver) sortedGroups() []*group {
	gs := make([]*group, 0, len(d.groups))
	for _, g := range d.groups {
		gs = append(gs, g)
	}
	slices.SortFunc(gs, func(a, b *group) int { return cmpUint(a.id, b.id) })
	return gs
}

// receiver hands a transport's batches to the driver loop.
type receiver struct{ d *Driver }

// Receive queues a received batch for the loop.
func (r receiver) Receive(from uint64, msgs []Envelope) {
	select {
	case r.d.inbox <- inbound{peer: from, msgs: msgs}:
	case <-r.d.done:
	}
}

// Unreachable queues a batch that could not be sent.
func (r receiver) Unreachable(to uint64, msgs []Envelope) {
	select {
	case r.d.inbox <- inbound{peer: to, msgs: msgs, failed: true}:
	case <-r.d.done:
	}
}
