// Package outbox is the federation outbox: one actor per destination server
// (kind "outbox", its id the server name) that queues the PDUs and EDUs
// meant for that server durably in badger and sends them in transactions
// (PUT /_matrix/federation/v1/send/{txnId}), one at a time, in queue order.
//
// A room hands its signed events to the outbox with wire.OutboundPDUs, at
// least once; the outbox queues each (room, pos) once, and once the queue is
// on disk tells the room with a cumulative wire.OutboundAck. A transaction is
// recorded before it is sent, so that after a crash the same txnId carries
// the same events again; a failed one is sent again, the same, after an
// exponential back-off with jitter. Nothing queued is lost across a
// restart. The queue is deleted as the destination answers 200.
//
// outbox owns the fo/ keys under each partition and nothing else; it knows rooms
// only by their ids and events only as JSON, and reaches them through the
// host: rooms are the actors of kind "room".
package outbox

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/asynkron/protoactor-go/actor"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// Kinds of actors: the outbox's own, and the one its acks go to.
const (
	kind     = "outbox"
	roomKind = "room"
)

// Service runs the outboxes of one node: the Kind the host activates them
// by, and what they share (the store, the options, the sends in progress).
type Service struct {
	store  *storage.Store
	opts   Options
	rt     *host.Host
	ctx    context.Context // the parent of every send; Close cancels it
	cancel context.CancelFunc
	mu     sync.Mutex // guards closed and sends.Add
	closed bool
	sends  sync.WaitGroup
}

// New returns the outbox service of a node on store. It fails on options it
// cannot run with, naming each. Register its Kind with the host, then
// Attach the host and Resume.
func New(store *storage.Store, opts Options) (*Service, error) {
	if store == nil {
		return nil, errors.New("outbox: no store")
	}
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Service{store: store, opts: opts, ctx: ctx, cancel: cancel}, nil
}

// Kind returns the actor kind to register on the host: "outbox", one actor
// per destination server, its id the server name.
func (s *Service) Kind() host.Kind {
	return host.Kind{Name: kind, New: func(id string, idle *host.IdleWatch) actor.Actor {
		return newDestination(s, id, idle)
	}}
}

// Attach gives the service the host its Kind runs on. Call it before
// anything is sent to an outbox.
func (s *Service) Attach(h *host.Host) { s.rt = h }

// Resume moves a queue the store holds in the layout of an older persona
// (see migrate.go), then wakes the outbox of every destination of the
// node's partitions whose queue holds entries, so that what was queued
// before the node stopped is sent.
func (s *Service) Resume() error {
	if err := s.migrate(); err != nil {
		return err
	}
	return s.wake(s.allPartitions())
}

// PlacementChanged wakes the outboxes with entries queued among the
// partitions moved: their queues are replicated state, and the previous
// owner's sends go on from the new one. The wakes are routed to the
// owners, held until they are known (a new leader owns its partition
// once its lease runs, later than this call). Tell it after the host's
// own PlacementChanged.
func (s *Service) PlacementChanged(moved []int) {
	if err := s.wake(moved); err != nil {
		s.opts.Log.Warn("wake the outboxes of partitions that moved", "err", err)
	}
}

// wake wakes the outboxes with a queue among the partitions parts whose
// keys the store holds. It reads the first keys of each destination
// alone, not its queue.
func (s *Service) wake(parts []int) error {
	for _, p := range parts {
		dests, err := s.destinations(p)
		if err != nil {
			return err
		}
		for _, d := range dests {
			if d.queued {
				s.rt.Send(kind, d.name, &wire.Wake{Id: d.name})
			}
		}
	}
	return nil
}

func (s *Service) allPartitions() []int {
	parts := make([]int, s.rt.Partitions())
	for p := range parts {
		parts[p] = p
	}
	return parts
}

// Destinations returns the state of every destination the store holds
// keys of, by name: each outbox with a queue answers for itself, the
// others have nothing queued. In a cluster the store holds the keys of
// the partitions this node replicates.
func (s *Service) Destinations(ctx context.Context) ([]*wire.DestinationState, error) {
	var dests []known
	for _, p := range s.allPartitions() {
		in, err := s.destinations(p)
		if err != nil {
			return nil, err
		}
		dests = append(dests, in...)
	}
	slices.SortFunc(dests, func(a, b known) int { return strings.Compare(a.name, b.name) })
	out := make([]*wire.DestinationState, 0, len(dests))
	for _, d := range dests {
		if !d.queued {
			out = append(out, &wire.DestinationState{Destination: d.name})
			continue
		}
		reply, err := s.rt.Request(ctx, kind, d.name, &wire.GetDestinations{})
		if err != nil {
			return nil, fmt.Errorf("outbox: ask %s for its state: %w", d.name, err)
		}
		if r, ok := reply.(*wire.DestinationsReply); ok {
			out = append(out, r.Destinations...)
		}
	}
	return out, nil
}

// Close ends the sends in progress and waits for their goroutines. Call it
// once the host has stopped.
func (s *Service) Close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	s.cancel()
	s.sends.Wait()
}

// goSend runs send on a goroutine of its own that Close waits for; it
// reports false, running nothing, once Close has begun.
func (s *Service) goSend(send func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.sends.Add(1)
	go func() {
		defer s.sends.Done()
		send()
	}()
	return true
}

// known is a destination the store holds keys of.
type known struct {
	name   string
	queued bool // its queue holds entries
}

// destinations lists the destinations of partition p the store holds
// keys of, in name order: one seek to each destination's queue and one
// past its keys.
func (s *Service) destinations(p int) ([]known, error) {
	snap := s.store.Snapshot()
	defer snap.Close()
	root := partitionRoot(p)
	it := snap.Iterator(root, false)
	defer it.Close()
	var out []known
	for it.Seek(root); it.Valid(); {
		name, _, ok := bytes.Cut(it.Key()[len(root):], []byte{0})
		if !ok {
			return nil, fmt.Errorf("outbox: stray key %q", it.Key())
		}
		d := known{name: string(name)}
		k := keys{part: host.PartitionKey(p), dest: d.name}
		q := k.queuePrefix()
		it.Seek(q)
		d.queued = it.Valid() && bytes.HasPrefix(it.Key(), q)
		out = append(out, d)
		it.Seek(k.past())
	}
	return slices.Clip(out), nil
}
