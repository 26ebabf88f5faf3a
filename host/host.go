// Package host is persona's actor runtime: it runs one node's virtual actors
// on protoactor-go.
//
// An actor is addressed by its kind and id. Identities hash to a fixed
// number of partitions; a partition actor activates the actors of its
// partition on their first message, forwards their messages in each
// sender's order, and passivates them when idle without losing a message.
// The host watches idleness itself: each activation has an IdleWatch that
// the actor sets, and that gives it IdleTimeout on its own turn.
// Send and Request are the one place that resolves where an actor lives:
// they post to the local partition actor, which delivers to the actor when
// this node owns the partition (Placement; without one every partition is
// local), sends the message in a wire.Envelope to the owner's partition
// actor over protoactor's remote (StartRemote) when another node does, and
// holds it while no owner is known or the one known cannot be reached
// (links.go).
//
// The host owns the actor system, the partition actors and the room
// workers' goroutines. It knows nothing of users or rooms and touches no
// storage: the domain registers its kinds (Kind) and their mailboxes, and
// owns every message and every key.
package host

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	rtrace "runtime/trace"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"

	"persona/metrics"
)

// ErrTimeout is returned by Request and RequestIn when the actor did not
// answer in time.
var ErrTimeout = errors.New("host: request timed out")

// Options tune a Host. Partitions and PassivateAfter come from the node's
// configuration (config.Actors) and must be set; a zero value of another
// field means its default (DefaultOptions). validate rejects values that
// cannot work.
type Options struct {
	// Partitions is the number of partitions identities hash to. It is
	// fixed for the life of a data directory: keys carry the partition.
	Partitions int
	// PassivateAfter is how long an actor stays idle before it is stopped.
	PassivateAfter time.Duration
	// Workers is the number of goroutines that run the mailboxes of kinds
	// with MailboxWorkers; 0 means one less than GOMAXPROCS, at least one.
	Workers int
	// NetYieldEvery is how long a worker runs mailboxes before it lets the
	// network be polled: the longest a client's request waits to be read
	// while every processor runs actors.
	NetYieldEvery time.Duration
	// WorkerThroughput is how many messages a workers-run mailbox processes
	// before it yields its worker to the next actor.
	WorkerThroughput int
	// RequestTimeout bounds a Request whose context has no deadline.
	RequestTimeout time.Duration
	// Metrics receives activations, passivations and mailbox depths; nil
	// disables them.
	Metrics *metrics.Metrics
	// Log receives the runtime's errors; nil discards them.
	Log *slog.Logger

	// Placement names the owner of each partition; nil owns them all here.
	Placement Placement
	// Peers names the other nodes Broadcast sends to; nil: none.
	Peers Peers
	// HoldFor is how long a partition actor holds a message while no
	// owner of its partition is known, or the one known cannot be reached
	// (a node down, or back and not yet probed), before it drops it. Longer rides
	// out a slower change of placement; the sender of a dropped message
	// (the delivery rule's resend) or its requester's timeout covers it.
	HoldFor time.Duration
	// MaxHeld is how many messages a partition actor holds at most while
	// no owner is known or reachable; it drops those beyond.
	MaxHeld int
	// MaxHops is how many times a message may be forwarded between nodes
	// that each think another owns its partition (views of the cluster
	// that differ for a moment) before it is dropped.
	MaxHops int
	// RemoteQueue is the length of protoactor remote's queues, per peer
	// and for all: protoactor allocates them whole.
	RemoteQueue int
}

// DefaultOptions returns the defaults of the options not configured.
func DefaultOptions() Options {
	return Options{
		Workers:          max(1, runtime.GOMAXPROCS(0)-1),
		NetYieldEvery:    time.Millisecond,
		WorkerThroughput: 300,
		RequestTimeout:   30 * time.Second,
		HoldFor:          10 * time.Second,
		MaxHeld:          10000,
		MaxHops:          3,
		RemoteQueue:      4096,
	}
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.Workers = cmp.Or(o.Workers, d.Workers)
	o.NetYieldEvery = cmp.Or(o.NetYieldEvery, d.NetYieldEvery)
	o.WorkerThroughput = cmp.Or(o.WorkerThroughput, d.WorkerThroughput)
	o.RequestTimeout = cmp.Or(o.RequestTimeout, d.RequestTimeout)
	o.HoldFor = cmp.Or(o.HoldFor, d.HoldFor)
	o.MaxHeld = cmp.Or(o.MaxHeld, d.MaxHeld)
	o.MaxHops = cmp.Or(o.MaxHops, d.MaxHops)
	o.RemoteQueue = cmp.Or(o.RemoteQueue, d.RemoteQueue)
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return o
}

// validate reports the first option that cannot work.
func (o Options) validate() error {
	switch {
	case o.Partitions < 1 || o.Partitions > 1<<16:
		return fmt.Errorf("host: Partitions = %d, want 1..65536", o.Partitions)
	case o.PassivateAfter <= 0:
		return fmt.Errorf("host: PassivateAfter = %v, want > 0", o.PassivateAfter)
	case o.Workers < 1:
		return fmt.Errorf("host: Workers = %d, want >= 1", o.Workers)
	case o.NetYieldEvery <= 0:
		return fmt.Errorf("host: NetYieldEvery = %v, want > 0", o.NetYieldEvery)
	case o.WorkerThroughput < 1:
		return fmt.Errorf("host: WorkerThroughput = %d, want >= 1", o.WorkerThroughput)
	case o.RequestTimeout <= 0:
		return fmt.Errorf("host: RequestTimeout = %v, want > 0", o.RequestTimeout)
	case o.HoldFor <= 0:
		return fmt.Errorf("host: HoldFor = %v, want > 0", o.HoldFor)
	case o.MaxHeld < 1:
		return fmt.Errorf("host: MaxHeld = %d, want >= 1", o.MaxHeld)
	case o.MaxHops < 1:
		return fmt.Errorf("host: MaxHops = %d, want >= 1", o.MaxHops)
	case o.RemoteQueue < 1:
		return fmt.Errorf("host: RemoteQueue = %d, want >= 1", o.RemoteQueue)
	}
	return nil
}

// Mailbox is how a kind's actors receive their messages.
type Mailbox int

const (
	// MailboxFIFO delivers messages in the order they were posted, each
	// actor on a goroutine of its own while it has messages.
	MailboxFIFO Mailbox = iota
	// MailboxPriority delivers messages by their GetPriority() int8
	// (protoactor's default 4 for messages without one), FIFO within a
	// priority.
	MailboxPriority
	// MailboxWorkers runs the kind's mailboxes on the host's fixed pool of
	// worker goroutines, in FIFO order; Kind.Urgent picks the fast lane.
	MailboxWorkers
)

// Kind describes one kind of actor the host activates: its name, how to
// make one and its mailbox.
type Kind struct {
	// Name addresses the kind in Send and Request.
	Name string
	// New returns a new actor for id; it is started on the id's first
	// message after it was passivated or the node started. idle is the
	// actor's own watch: the actor sets it (IdleWatch.Set) to get
	// IdleTimeout when it has had no message for a while.
	New func(id string, idle *IdleWatch) actor.Actor
	// Mailbox is how its actors receive their messages.
	Mailbox Mailbox
	// Urgent, with MailboxWorkers, reports whether a message posted to an
	// actor puts its next turn in the workers' fast lane; nil means never.
	Urgent func(msg any) bool
	// Moved reports that the kind's active actors get a *Moved when
	// partitions change owners (PlacementChanged).
	Moved bool
}

// Network carries what Send sends, as a cluster's network may: it calls
// deliver for each copy that arrives, as many times and as late as it
// likes. Tests use it to prove the delivery rule over a lossy network.
type Network func(kind, id string, msg proto.Message, deliver func())

// Host runs one node's actors: the actor system, one partition actor per
// partition and the kinds they activate.
type Host struct {
	opts    Options
	system  *actor.ActorSystem
	parts   []*actor.PID
	kinds   map[string]Kind
	depths  map[string]*depth // mailbox depth per kind ("partition" too)
	workers *workers
	stop    chan struct{}
	dead    atomic.Int64
	network atomic.Pointer[Network]
	remote  *remote.Remote // nil until StartRemote
	// remoteUp is set once remote runs: Broadcast reads it from any goroutine.
	remoteUp atomic.Bool
	// links says which other nodes remote may be handed messages for.
	links *links
	// onBroadcast receives what other nodes broadcast (OnBroadcast).
	onBroadcast atomic.Pointer[func(proto.Message)]
}

// New starts the actor system and one partition actor per partition, with
// kinds as the actors they activate. It fails, leaving nothing running, on
// options that cannot work or a kind that is unnamed, has no New or is
// registered twice.
func New(opts Options, kinds ...Kind) (*Host, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	h := &Host{opts: opts, kinds: map[string]Kind{}, depths: map[string]*depth{"partition": {}},
		stop: make(chan struct{}), workers: newWorkers(opts.Workers, opts.NetYieldEvery)}
	for _, k := range kinds {
		if _, dup := h.kinds[k.Name]; dup || k.Name == "" || k.New == nil {
			h.workers.stop()
			return nil, fmt.Errorf("host: kind %q registered twice or incomplete", k.Name)
		}
		h.kinds[k.Name], h.depths[k.Name] = k, &depth{}
	}
	h.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return opts.Log.With("component", "protoactor")
	}))
	h.system.EventStream.Subscribe(func(msg any) {
		if d, ok := msg.(*actor.DeadLetterEvent); ok {
			h.dead.Add(1)
			opts.Log.Debug("dead letter", "message", fmt.Sprintf("%T", d.Message), "to", d.PID)
		}
	})
	h.parts = make([]*actor.PID, opts.Partitions)
	for i := range h.parts {
		props := actor.PropsFromProducer(func() actor.Actor { return newPartition(h, i) },
			actor.WithMailbox(actor.Unbounded(h.depths["partition"])))
		pid, err := h.system.Root.SpawnNamed(props, fmt.Sprintf("partition/%d", i))
		if err != nil {
			panic(fmt.Sprintf("spawn partition %d: %v", i, err)) // names are unique: cannot happen
		}
		h.parts[i] = pid
	}
	h.links = newLinks(func(to *actor.PID, m any) { h.system.Root.Send(to, m) }, func(string) { h.PlacementChanged(nil) })
	h.spawnListener()
	if opts.Metrics != nil {
		go h.sampleDepths(h.stop)
	}
	return h, nil
}

// Stop stops every partition and so every actor, after they finish the
// messages already queued, and waits for them.
func (h *Host) Stop() {
	select {
	case <-h.stop:
		return
	default:
		close(h.stop)
	}
	for _, p := range h.parts {
		_ = h.system.Root.PoisonFuture(p).Wait()
	}
	if h.remote != nil {
		h.remote.Shutdown(false) // closes its connections at once: the partitions are gone
	}
	h.system.Shutdown()
	h.workers.stop()
}

// Partitions returns the number of partitions.
func (h *Host) Partitions() int { return len(h.parts) }

// Partition returns the partition of an identity.
func (h *Host) Partition(id string) int {
	return PartitionOf(id, len(h.parts))
}

// PartitionKey returns partition p's name in storage keys: every key an
// actor of partition p owns starts with "p/" + PartitionKey(p).
func PartitionKey(p int) string { return fmt.Sprintf("%04x", p) }

// PassivateAfter returns how long an actor stays idle before it is stopped.
func (h *Host) PassivateAfter() time.Duration { return h.opts.PassivateAfter }

// Send delivers msg to the actor kind/id without waiting, activating it if
// needed; the messages of one sender to one actor arrive in order, unless
// a Network set by SetNetwork reorders them.
func (h *Host) Send(kind, id string, msg proto.Message) {
	to := h.parts[h.Partition(id)]
	if n := h.network.Load(); n != nil {
		// Each copy is a message of its own, as if decoded off the wire.
		(*n)(kind, id, msg, func() { h.system.Root.Send(to, &envelope{kind: kind, id: id, msg: proto.Clone(msg)}) })
		return
	}
	h.system.Root.Send(to, &envelope{kind: kind, id: id, msg: msg})
}

// Request sends msg to the actor kind/id and waits for its answer, at most
// until ctx ends or RequestTimeout passes (then ErrTimeout).
func (h *Host) Request(ctx context.Context, kind, id string, msg proto.Message) (proto.Message, error) {
	return h.RequestIn(ctx, h.Partition(id), kind, id, msg)
}

// RequestIn sends msg to the actor kind/id of partition p, rather than of
// id's own partition, and waits as Request does: for actors that stand for
// a partition (an index of its keys), one per partition. A request
// answered with a wire.Reroute (its partition moved before the actor took
// it) is sent again, routed anew, within the same time.
func (h *Host) RequestIn(ctx context.Context, p int, kind, id string, msg proto.Message) (proto.Message, error) {
	timeout := h.opts.RequestTimeout
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if rtrace.IsEnabled() { // execution traces show each request to an actor
		defer rtrace.StartRegion(ctx, fmt.Sprintf("%s %T", kind, msg)).End()
	}
	_, local, known := h.owner(p)
	began := time.Now()
	res, err := h.request(ctx, p, kind, id, msg, began.Add(timeout))
	if known && !local && err == nil {
		h.opts.Metrics.RemoteRequest(kind, time.Since(began))
	}
	if errors.Is(err, actor.ErrTimeout) {
		return nil, ErrTimeout
	}
	if err != nil {
		return nil, err
	}
	reply, ok := res.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("host: %s answered %T", kind, res)
	}
	return reply, nil
}

// Post sends msg to the local actor pid from outside any actor: a storage
// callback telling an actor its batch is durable.
func (h *Host) Post(pid *actor.PID, msg any) { h.system.Root.Send(pid, msg) }

// SetNetwork routes every later Send through n; nil restores direct
// delivery.
func (h *Host) SetNetwork(n Network) {
	if n == nil {
		h.network.Store(nil)
		return
	}
	h.network.Store(&n)
}

// DeadLetters returns how many messages reached no actor since the start.
func (h *Host) DeadLetters() int64 { return h.dead.Load() }

// envelope carries a message to the actor kind/id through its partition. It
// stays local; across nodes the partition actor sends msg in a
// wire.Envelope.
type envelope struct {
	kind, id string
	msg      any
}
