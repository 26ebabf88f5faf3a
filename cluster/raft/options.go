package raft

import (
	"cmp"
	"errors"
	"fmt"
	"log/slog"
	"time"
)

// Options tune a Driver. A zero field takes the default its comment names;
// a negative one is an error. Open reports every field it cannot run with.
type Options struct {
	// NodeID is this node's replica id in every group it holds: unique in
	// the cluster, never 0. Required.
	NodeID uint64
	// Dir is the directory of the node's raft log. Required.
	Dir string
	// Logger receives the driver's and etcd raft's warnings and errors
	// (raft's information messages at debug level); nil discards them.
	Logger *slog.Logger
	// OnEvent, if set, is told of every change of a group's role or known
	// leader on this node, and of a replica's removal; Open tells it of
	// every group the log holds. It is called from the driver loop: it
	// must return quickly and must not call the Driver's methods that
	// wait (Propose, AddGroup, TransferLeader, ...).
	OnEvent func(Event)

	// TickInterval is the length of one raft tick. Default 100 ms.
	TickInterval time.Duration
	// ElectionTicks is how many ticks a follower waits without hearing
	// from a leader before it campaigns (raft randomises it up to twice
	// this). With TickInterval it sets failover time against spurious
	// elections under load. More than HeartbeatTicks. Default 10.
	ElectionTicks int
	// HeartbeatTicks is how many ticks pass between a leader's
	// heartbeats. Default 1.
	HeartbeatTicks int

	// MaxEntryBytes caps the data of one log entry: the proposals to a
	// group gathered in one round are coalesced into entries of at most
	// this (a larger proposal gets an entry of its own). Default 256 KiB.
	MaxEntryBytes int
	// MaxMsgBytes caps the entries of one append message to a follower.
	// Default 1 MiB.
	MaxMsgBytes uint64
	// MaxInflightMsgs caps the append messages in flight to one follower
	// of one group. Default 256.
	MaxInflightMsgs int
	// MaxInflightBytes caps the entries' bytes in flight to one follower
	// of one group: a follower far behind is caught up at the pace it
	// answers, not with everything the leader holds at once. At least
	// MaxMsgBytes. Default 16 MiB.
	MaxInflightBytes uint64
	// MaxApplyBytes caps the committed entries one group applies in one
	// round. Default 16 MiB.
	MaxApplyBytes uint64

	// SegmentBytes is how much the rounds write to the log before the
	// driver checkpoints: it drops from memory the entries every follower
	// has (a leader keeps CatchUpEntries at most), starts a new segment,
	// and deletes the segments whose entries the state machine holds
	// durably. Larger means fewer checkpoints and more memory (the
	// entries since the last checkpoint are kept in memory). Default 64
	// MiB.
	SegmentBytes int64
	// PrewriteSegments has every segment written over space written
	// before: a segment with no spare to write over is first filled with
	// SegmentBytes of zeros (at Open; the next one's spare in the
	// background), so that a round's fdatasync writes its blocks alone,
	// not the file's new size and extents through the file system's
	// journal, where it waits for other files' writes. It costs writing
	// SegmentBytes twice on a new log. Default off.
	PrewriteSegments bool
	// CatchUpEntries is how many entries before its applied index a
	// leader keeps for a slow follower at a checkpoint; a follower
	// further behind catches up from a snapshot. Default 5,000.
	CatchUpEntries uint64

	// QueueProposals is how many proposals may wait for the driver loop
	// before Propose blocks. Default 4096.
	QueueProposals int
	// QueueInbound is how many received batches may wait for the driver
	// loop before the transport's readers block. Default 1024.
	QueueInbound int
}

// withDefaults returns o with every zero field set to its default; it is
// the one place the defaults are.
func (o Options) withDefaults() Options {
	o.TickInterval = cmp.Or(o.TickInterval, 100*time.Millisecond)
	o.ElectionTicks = cmp.Or(o.ElectionTicks, 10)
	o.HeartbeatTicks = cmp.Or(o.HeartbeatTicks, 1)
	o.MaxEntryBytes = cmp.Or(o.MaxEntryBytes, 256<<10)
	o.MaxMsgBytes = cmp.Or(o.MaxMsgBytes, 1<<20)
	o.MaxInflightMsgs = cmp.Or(o.MaxInflightMsgs, 256)
	o.MaxInflightBytes = cmp.Or(o.MaxInflightBytes, 16<<20)
	o.MaxApplyBytes = cmp.Or(o.MaxApplyBytes, 16<<20)
	o.SegmentBytes = cmp.Or(o.SegmentBytes, 64<<20)
	o.CatchUpEntries = cmp.Or(o.CatchUpEntries, 5000)
	o.QueueProposals = cmp.Or(o.QueueProposals, 4096)
	o.QueueInbound = cmp.Or(o.QueueInbound, 1024)
	return o
}

// validate returns every problem of o (with defaults applied), each
// naming its field.
func (o Options) validate() error {
	var errs []error
	bad := func(field, why string) { errs = append(errs, fmt.Errorf("raft options: %s %s", field, why)) }
	if o.NodeID == 0 {
		bad("NodeID", "must be set (not 0)")
	}
	if o.Dir == "" {
		bad("Dir", "must be set")
	}
	if o.TickInterval < time.Millisecond {
		bad("TickInterval", "must be at least 1ms")
	}
	if o.HeartbeatTicks < 1 {
		bad("HeartbeatTicks", "must be positive")
	}
	if o.ElectionTicks <= o.HeartbeatTicks {
		bad("ElectionTicks", "must be more than HeartbeatTicks")
	}
	if o.MaxEntryBytes < 1 {
		bad("MaxEntryBytes", "must be positive")
	}
	if o.MaxInflightMsgs < 1 {
		bad("MaxInflightMsgs", "must be positive")
	}
	if o.MaxInflightBytes < o.MaxMsgBytes {
		bad("MaxInflightBytes", "must be at least MaxMsgBytes")
	}
	if o.SegmentBytes < 4<<10 {
		bad("SegmentBytes", "must be at least 4 KiB")
	}
	if o.QueueProposals < 1 {
		bad("QueueProposals", "must be positive")
	}
	if o.QueueInbound < 1 {
		bad("QueueInbound", "must be positive")
	}
	return errors.Join(errs...)
}
