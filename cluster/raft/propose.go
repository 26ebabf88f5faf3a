package raft

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"go.etcd.io/raft/v3"
	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// ErrClosed is returned by a Driver's methods once it is closed.
var ErrClosed = errors.New("raft: driver closed")

// ErrUnknownGroup is returned for a group this node holds no replica of.
var ErrUnknownGroup = errors.New("raft: unknown group")

// ErrDropped is returned for a proposal that will not be committed: a
// new leader replaced its entry, or raft refused a membership change
// (another not yet applied). Nothing of it was applied; it may be
// proposed again. A proposal raft refuses while this node leads (a
// leadership transfer under way, too much uncommitted) is not dropped: it
// waits, and is proposed again in call order.
var ErrDropped = errors.New("raft: proposal dropped")

// ErrUnknownOutcome is returned for a proposal whose entry this node can
// no longer tell the fate of (it took a snapshot past the entry's index):
// it may or may not have been applied.
var ErrUnknownOutcome = errors.New("raft: proposal outcome unknown")

// NotLeaderError is returned for a request only a group's leader takes,
// made to another replica. Leader is the leader this node knows of, 0 for
// none (an election under way).
type NotLeaderError struct {
	Group  uint64
	Leader uint64
}

// Error says which group and which leader.
func (e *NotLeaderError) Error() string {
	if e.Leader == 0 {
		return fmt.Sprintf("raft: group %d: not the leader, none known", e.Group)
	}
	return fmt.Sprintf("raft: group %d: not the leader; the leader is node %d", e.Group, e.Leader)
}

// proposal is one Propose waiting for its command to be applied.
type proposal struct {
	group uint64
	data  []byte
	done  func(error) // runs on the driver loop: must not block
}

// waiter is an entry this node proposed: the proposals it carries (a
// membership change: one, with no data) and, once raft appended it,
// where.
type waiter struct {
	id    uint64
	props []*proposal
	index uint64
	term  uint64
	// overwritten: another leader's entry replaced this one, or cut it
	// off; it fails once the waiters ahead of it are done.
	overwritten bool
}

func (w *waiter) finish(err error) {
	for _, p := range w.props {
		p.done(err)
	}
}

// Propose replicates data as a command of group and returns once the
// group committed it on a quorum and this node applied it. Only the
// group's leader takes proposals: another replica returns a
// *NotLeaderError. The proposals to a group that reach the driver in one
// round go into one entry. data must not be modified afterwards. An
// empty data is a barrier: nothing is applied, and Propose returns once
// every entry before it is.
//
// nil means applied; *NotLeaderError and ErrDropped mean not applied,
// and the command may be proposed again. Any other error (ctx's,
// ErrClosed, ErrUnknownGroup for a replica removed meanwhile,
// ErrUnknownOutcome) leaves it unknown: the command may yet be applied.
func (d *Driver) Propose(ctx context.Context, group uint64, data []byte) error {
	done := make(chan error, 1)
	p, err := d.newProposal(group, data, func(err error) { done <- err })
	if err != nil {
		return err
	}
	select {
	case d.props <- p:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.stop:
		return d.closedErr()
	}
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-d.done:
		select {
		case err := <-done:
			return err
		default:
			return d.closedErr()
		}
	}
}

// ProposeAsync proposes data as Propose does without waiting: done runs
// once, with what Propose would return (nil: applied), from the driver
// loop, or before ProposeAsync returns for a proposal refused at once
// (not the leader, an unknown group, the driver closed). The proposals
// of one caller to one group become entries in the order of the calls,
// and their done run in that order; once one fails (ErrDropped, a new
// leader), none after it is applied in the same term. done must not block or call the Driver. It
// blocks while Options.QueueProposals proposals wait for the loop.
func (d *Driver) ProposeAsync(group uint64, data []byte, done func(error)) {
	p, err := d.newProposal(group, data, done)
	if err != nil {
		done(err)
		return
	}
	d.propMu.RLock()
	defer d.propMu.RUnlock()
	if d.propClosed {
		done(d.closedErr())
		return
	}
	select {
	case d.props <- p:
	case <-d.done:
		done(d.closedErr())
	}
}

// newProposal returns a proposal of data to group, or why this node does
// not take it.
func (d *Driver) newProposal(group uint64, data []byte, done func(error)) (*proposal, error) {
	if s, err := d.Status(group); err != nil {
		return nil, err
	} else if s.Role != Leader {
		return nil, &NotLeaderError{Group: group, Leader: s.Leader}
	}
	return &proposal{group: group, data: data, done: done}, nil
}

// An entry this driver proposes carries its id (uvarint) then its
// commands, each a uvarint length and the bytes. The id's high 16 bits
// are the proposing node's id (masked), the rest a counter that starts
// at a random number when the driver opens; a membership change carries
// the id in its Context.

// nextID returns a new proposal id. Driver loop only.
func (d *Driver) nextID() uint64 {
	d.seq++
	return d.opts.NodeID<<48 | d.seq&(1<<48-1)
}

// encodeEntry returns the data of an entry carrying props.
func encodeEntry(id uint64, props []*proposal) []byte {
	size := binary.MaxVarintLen64
	for _, p := range props {
		size += binary.MaxVarintLen64 + len(p.data)
	}
	b := binary.AppendUvarint(make([]byte, 0, size), id)
	for _, p := range props {
		b = binary.AppendUvarint(b, uint64(len(p.data)))
		b = append(b, p.data...)
	}
	return b
}

// entryID returns the id of an entry's data, 0 for an entry no driver
// proposed (raft's own empty entries).
func entryID(data []byte) uint64 {
	id, k := binary.Uvarint(data)
	if k <= 0 {
		return 0
	}
	return id
}

// appendCommands appends the commands of an entry's data to cmds, but
// for empty ones (barriers).
func appendCommands(cmds [][]byte, data []byte) ([][]byte, error) {
	r := reader{b: data}
	r.uvarint()
	for len(r.b) > 0 && r.err == nil {
		if c := r.bytes(); len(c) > 0 {
			cmds = append(cmds, c)
		}
	}
	return cmds, r.err
}

// queueProposal takes p into its group's batch for the round. Driver
// loop only.
func (d *Driver) queueProposal(p *proposal) {
	g := d.groups[p.group]
	if g == nil {
		p.done(ErrUnknownGroup)
		return
	}
	g.queued = append(g.queued, p)
	d.touch(g)
}

// proposeQueued hands every group's batch of the round to raft, in
// entries of at most MaxEntryBytes. An entry raft refuses while this
// node leads (a leadership transfer under way, or more uncommitted than
// MaxUncommittedEntriesSize) stays queued, with everything after it, and
// is proposed again in a later round (at the latest the next tick's): a
// leader's proposals are never applied around one of its own it dropped,
// so a proposer may build each on the last. Driver loop only.
func (d *Driver) proposeQueued() {
	for _, g := range d.touched {
		if len(g.queued) == 0 {
			continue
		}
		if g.solo() {
			d.proposeSolo(g)
			continue
		}
		st := g.rn.BasicStatus()
		if st.RaftState != raft.StateLeader && g.waking {
			continue // it leads once its campaign ends
		}
		if st.RaftState != raft.StateLeader {
			err := &NotLeaderError{Group: g.id, Leader: st.Lead}
			for _, p := range g.queued {
				p.done(err)
			}
			g.queued = g.queued[:0]
			continue
		}
		queued := g.queued
		for len(queued) > 0 {
			n := d.entryLen(queued)
			w := &waiter{id: d.nextID(), props: queued[:n:n]}
			if err := g.rn.Propose(encodeEntry(w.id, w.props)); err != nil {
				break // held: proposed again later, in order
			}
			queued = queued[n:]
			g.proposed = append(g.proposed, w)
		}
		if len(queued) == 0 {
			g.queued = nil
		} else {
			g.queued = slices.Clone(queued)
		}
	}
}

// entryLen returns how many of the proposals queued, from the first,
// go into one entry: at least one, and at most MaxEntryBytes of data.
func (d *Driver) entryLen(queued []*proposal) int {
	n, size := 0, 0
	for n < len(queued) && (n == 0 || size+len(queued[n].data) <= d.opts.MaxEntryBytes) {
		size += len(queued[n].data)
		n++
	}
	return n
}

// placeProposed finds where raft appended this round's proposals of g,
// among the entries it gave to be persisted; a proposal not among them
// was dropped. Driver loop only.
func (d *Driver) placeProposed(g *group, ents []*pb.Entry) {
	if len(g.proposed) == 0 {
		return
	}
	if len(g.proposed) == 1 && len(ents) > 0 {
		// The common case: one entry proposed this round, the last raft
		// gave to persist.
		w, e := g.proposed[0], ents[len(ents)-1]
		g.proposed = g.proposed[:0]
		if e.GetType() == pb.EntryNormal && entryID(e.GetData()) == w.id {
			w.index, w.term = e.GetIndex(), e.GetTerm()
			g.waiting = append(g.waiting, w)
		} else {
			d.placeProposedAmong(g, []*waiter{w}, ents)
		}
		return
	}
	d.placeProposedAmong(g, g.proposed, ents)
	g.proposed = g.proposed[:0]
}

// placeProposedAmong places each of ws among ents, or drops it.
func (d *Driver) placeProposedAmong(g *group, ws []*waiter, ents []*pb.Entry) {
	byID := make(map[uint64]*waiter, len(ws))
	for _, w := range ws {
		byID[w.id] = w
	}
	for _, e := range ents {
		var id uint64
		switch e.GetType() {
		case pb.EntryNormal:
			id = entryID(e.GetData())
		case pb.EntryConfChangeV2:
			var cc pb.ConfChangeV2
			if proto.Unmarshal(e.GetData(), &cc) == nil {
				id = entryID(cc.GetContext())
			}
		}
		if w := byID[id]; w != nil {
			w.index, w.term = e.GetIndex(), e.GetTerm()
			g.waiting = append(g.waiting, w)
			delete(byID, id)
		}
	}
	for _, w := range ws {
		if byID[w.id] != nil {
			w.finish(ErrDropped)
		}
	}
}

// settle finishes the waiters of g whose entries are among ents, the
// entries just applied: a waiter whose entry is the one applied at its
// index succeeded, another was replaced. Driver loop only.
func (g *group) settle(ents []*pb.Entry) {
	if len(g.waiting) == 0 || len(ents) == 0 {
		return
	}
	first, last := ents[0].GetIndex(), ents[len(ents)-1].GetIndex()
	keep := g.waiting[:0]
	for _, w := range g.waiting {
		switch {
		case w.index > last:
			keep = append(keep, w)
		case w.index < first: // passed over by a snapshot
			w.finish(ErrUnknownOutcome)
		case ents[w.index-first].GetTerm() == w.term:
			w.finish(nil)
		default:
			w.finish(ErrDropped)
		}
	}
	clear(g.waiting[len(keep):])
	g.waiting = keep
	g.finishOverwritten()
}

// dropOverwritten marks the waiters of g whose entries ents replace or
// cut off: raft gives a follower the entries that overwrite its log from
// their first index on, so a deposed leader's proposals fail as soon as
// the new leader's entries reach it, not once it has applied up to them.
// Same index and term is the same entry (raft's log matching). Driver
// loop only.
func (g *group) dropOverwritten(ents []*pb.Entry) {
	if len(g.waiting) == 0 || len(ents) == 0 {
		return
	}
	first, last := ents[0].GetIndex(), ents[len(ents)-1].GetIndex()
	for _, w := range g.waiting {
		if w.index >= first && (w.index > last || ents[w.index-first].GetTerm() != w.term) {
			w.overwritten = true
		}
	}
	g.finishOverwritten()
}

// finishOverwritten fails the overwritten waiters at the head of g's
// queue: done runs in call order, so one behind a waiter still pending
// waits for it.
func (g *group) finishOverwritten() {
	n := 0
	for n < len(g.waiting) && g.waiting[n].overwritten {
		g.waiting[n].finish(ErrDropped)
		n++
	}
	if n > 0 {
		clear(g.waiting[:n])
		g.waiting = g.waiting[n:]
	}
}

// settleSnapshot finishes the waiters of g whose entries a snapshot up to
// index passed over: whether they are in it is not known.
func (g *group) settleSnapshot(index uint64) {
	keep := g.waiting[:0]
	for _, w := range g.waiting {
		if w.index <= index {
			w.finish(ErrUnknownOutcome)
		} else {
			keep = append(keep, w)
		}
	}
	clear(g.waiting[len(keep):])
	g.waiting = keep
	g.finishOverwritten()
}

// failWaiting finishes every proposal of g still waiting with err.
func (g *group) failWaiting(err error) {
	for _, w := range g.waiting {
		w.finish(err)
	}
	for _, w := range g.proposed {
		w.finish(err)
	}
	for _, p := range g.queued {
		p.done(err)
	}
	g.waiting, g.proposed, g.queued = nil, nil, nil
}
