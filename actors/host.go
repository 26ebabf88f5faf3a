// Package actors holds persona's actors and the router that reaches them.
//
// Every user and every room is a virtual actor (protoactor-go), activated on
// its first message and passivated when idle. Identities hash to a fixed
// number of partitions; a partition actor on the node that owns the partition
// activates its actors and forwards their messages. On one node every
// partition is local; the cluster layer later places partitions on nodes
// without changing the actors or their messages.
//
// An actor is the only code that reads or writes its storage prefix.
package actors

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	rtrace "runtime/trace"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/cespare/xxhash/v2"
	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/metrics"
	"persona/storage"
)

// Kinds of actors.
const (
	KindUser      = "user"
	KindRoom      = "room"
	KindAlias     = "alias"
	KindDirectory = "directory"
)

// ErrTimeout is returned by Request when the actor did not answer in time.
var ErrTimeout = errors.New("actors: request timed out")

// Host runs one node's actors: the actor system, the partition routers and
// the kinds they activate.
type Host struct {
	system   *actor.ActorSystem
	store    *storage.Store
	cfg      *config.Config
	metrics  *metrics.Metrics
	log      *slog.Logger
	parts    []*actor.PID
	partKeys []string // partitionName of each partition, for keys
	kinds    map[string]func(id string) actor.Actor
	stream   *stream
	presence presences
	acks     acker
	depths   map[string]*depth // mailbox depth per kind ("partition" too)
	rooms    *workers          // the goroutines room actors run on
	stop     chan struct{}
	tokens   sync.Map // token hash -> *AuthReply: checks answered by user actors
	// network, when set (tests only), carries what Send sends as a
	// cluster's network may: it calls deliver for each copy that arrives,
	// as many times and as late as it likes.
	network atomic.Pointer[func(kind, id string, msg proto.Message, deliver func())]
}

// NewHost starts the actor system and one partition router per partition.
func NewHost(store *storage.Store, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*Host, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	st, err := newStream(store)
	if err != nil {
		return nil, err
	}
	if err := indexAliases(store, cfg.Actors.Partitions); err != nil {
		return nil, err
	}
	if err := indexStateHistory(store, cfg.Actors.Partitions, log); err != nil {
		return nil, err
	}
	h := &Host{store: store, cfg: cfg, metrics: m, log: log, stream: st, presence: presences{users: map[string]*Presence{}},
		depths: map[string]*depth{KindUser: {}, KindRoom: {}, KindAlias: {}, KindDirectory: {}, KindUserDir: {}, "partition": {}}, stop: make(chan struct{}), rooms: newWorkers(max(1, runtime.GOMAXPROCS(0)-1))}
	h.system = actor.NewActorSystem(actor.WithLoggerFactory(func(*actor.ActorSystem) *slog.Logger {
		return log.With("component", "protoactor")
	}))
	h.kinds = map[string]func(string) actor.Actor{
		KindUser:      func(id string) actor.Actor { return newUser(h, id) },
		KindRoom:      func(id string) actor.Actor { return newRoom(h, id) },
		KindAlias:     func(id string) actor.Actor { return newAlias(h, id) },
		KindDirectory: func(id string) actor.Actor { return newDirectory(h, id) },
		KindUserDir:   func(id string) actor.Actor { return newUserDir(h, id) },
	}
	n := cfg.Actors.Partitions
	h.parts, h.partKeys = make([]*actor.PID, n), make([]string, n)
	for i := range h.parts {
		h.partKeys[i] = partitionName(i)
		props := actor.PropsFromProducer(func() actor.Actor { return newPartition(h, i) },
			actor.WithMailbox(h.depths["partition"].mailbox()))
		pid, err := h.system.Root.SpawnNamed(props, fmt.Sprintf("partition/%d", i))
		if err != nil {
			panic(fmt.Sprintf("spawn partition %d: %v", i, err)) // names are unique: cannot happen
		}
		h.parts[i] = pid
	}
	if err := h.wake(); err != nil {
		h.Stop()
		return nil, err
	}
	if m != nil {
		go h.sampleDepths(h.stop)
	}
	go h.expirePresence(h.stop, presenceTimeout)
	return h, nil
}

// wake restarts the actors that had unfinished deliveries when the node
// stopped: each left a mark under its partition's "wake" prefix.
func (h *Host) wake() error {
	for p := range h.parts {
		prefix := storage.Prefix("p", partitionName(p), "wake")
		var marks [][2]string
		err := h.store.Scan(prefix, nil, func(k, _ []byte) error {
			kind, id, ok := strings.Cut(string(k[len(prefix):]), "\x00")
			if ok {
				marks = append(marks, [2]string{kind, id})
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("scan wake marks: %w", err)
		}
		for _, m := range marks {
			h.Send(m[0], m[1], &Wake{Id: m[1]})
		}
	}
	return nil
}

// Stop stops every partition and so every actor, after they finish the
// messages already queued, and waits for them.
func (h *Host) Stop() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	for _, p := range h.parts {
		_ = h.system.Root.PoisonFuture(p).Wait()
	}
	h.system.Shutdown()
	h.rooms.stop()
}

// Partition returns the partition of an identity.
func (h *Host) Partition(id string) int {
	return int(xxhash.Sum64String(id) % uint64(len(h.parts)))
}

// Request sends msg to the actor kind/id and waits for its answer, at most
// until ctx ends or 30 s pass.
func (h *Host) Request(ctx context.Context, kind, id string, msg proto.Message) (proto.Message, error) {
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	if rtrace.IsEnabled() { // execution traces show each request to an actor
		defer rtrace.StartRegion(ctx, fmt.Sprintf("%s %T", kind, msg)).End()
	}
	f := h.system.Root.RequestFuture(h.parts[h.Partition(id)], &envelope{kind: kind, id: id, msg: msg}, timeout)
	res, err := f.Result()
	if errors.Is(err, actor.ErrTimeout) {
		return nil, ErrTimeout
	}
	if err != nil {
		return nil, err
	}
	reply, ok := res.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("actors: %s answered %T", kind, res)
	}
	return reply, nil
}

// Send delivers msg to the actor kind/id without waiting.
func (h *Host) Send(kind, id string, msg proto.Message) {
	to := h.parts[h.Partition(id)]
	if n := h.network.Load(); n != nil {
		// Each copy is a message of its own, as if decoded off the wire.
		(*n)(kind, id, msg, func() { h.system.Root.Send(to, &envelope{kind: kind, id: id, msg: proto.Clone(msg)}) })
		return
	}
	h.system.Root.Send(to, &envelope{kind: kind, id: id, msg: msg})
}

// envelope carries a message to the actor kind/id through its partition. It
// stays local; across nodes the cluster layer wraps msg in protobuf.
type envelope struct {
	kind, id string
	msg      any
}

// Authenticate checks an access token's hash for user, from the node's cache
// or the user's actor. The actor drops a token from the cache when its
// device is removed.
func (h *Host) Authenticate(ctx context.Context, user string, hash []byte) (*AuthReply, error) {
	if a, ok := h.tokens.Load(string(hash)); ok {
		return a.(*AuthReply), nil
	}
	reply, err := h.Request(ctx, KindUser, user, &Authenticate{UserId: user, TokenHash: hash})
	if err != nil {
		return nil, err
	}
	a, ok := reply.(*AuthReply)
	if !ok {
		return &AuthReply{}, nil
	}
	if a.Ok {
		h.tokens.Store(string(hash), a)
	}
	return a, nil
}
