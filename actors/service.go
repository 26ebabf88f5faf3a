// Package actors holds persona's domain actors: users (profile, devices,
// the delivery of profile versions to rooms), rooms (events, state,
// members, reads), aliases, the room directory, the user directory and
// presence.
//
// The actors run on the host runtime (package host), which activates,
// routes and passivates them; they exchange the messages of package wire's
// .proto files. An actor is the only code that reads or writes its storage
// prefix. Service is the node's entry to them.
package actors

import (
	"cmp"
	"context"
	"crypto/ed25519"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/host"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// Kinds of actors.
const (
	KindUser      = "user"
	KindRoom      = "room"
	KindAlias     = "alias"
	KindDirectory = "directory"
	// kindAliasIndex answers for one partition's index of aliases by room.
	kindAliasIndex = "aliasindex"
)

// ErrTimeout is returned by Request when the actor did not answer in time.
var ErrTimeout = host.ErrTimeout

// Options tune the domain actors beyond the node's configuration. A zero
// field means its default (DefaultOptions).
type Options struct {
	// Host tunes the runtime; its Partitions, PassivateAfter, Metrics and
	// Log come from New's arguments.
	Host host.Options
	// PropagationIdle is how long a room that only applied propagation
	// since it was activated stays in memory, and how long a room keeps
	// the state it read for a client after the last message.
	PropagationIdle time.Duration
	// PresenceTimeout is how long a user who is not offline stays so with
	// no /sync in progress (Synapse waits 30 s too).
	PresenceTimeout time.Duration
	// AckWindow is how long the node gathers rooms' acks for one user into
	// one message.
	AckWindow time.Duration
	// Kinds are more kinds of actors the host runs, registered after the
	// domain's (the federation outbox's, for one); their names must differ
	// from the domain's.
	Kinds []host.Kind
	// Signing is the server's key, which signs the PDUs that leave the
	// server. Without one the service makes a key that it does not keep.
	Signing Signing
}

// Signing is a server signing key and its id ("ed25519:...").
type Signing struct {
	KeyID string
	Key   ed25519.PrivateKey
}

// DefaultOptions returns the options a node runs with.
func DefaultOptions() Options {
	return Options{PropagationIdle: 5 * time.Second, PresenceTimeout: 30 * time.Second, AckWindow: time.Millisecond}
}

// withDefaults returns o with every zero field set to its default.
func (o Options) withDefaults() Options {
	d := DefaultOptions()
	o.PropagationIdle = cmp.Or(o.PropagationIdle, d.PropagationIdle)
	o.PresenceTimeout = cmp.Or(o.PresenceTimeout, d.PresenceTimeout)
	o.AckWindow = cmp.Or(o.AckWindow, d.AckWindow)
	if o.Signing.Key == nil {
		_, key, _ := ed25519.GenerateKey(nil)
		o.Signing = Signing{KeyID: "ed25519:ephemeral", Key: key}
	}
	return o
}

// validate reports the first option that cannot work.
func (o Options) validate() error {
	switch {
	case o.PropagationIdle < 0:
		return fmt.Errorf("actors: PropagationIdle = %v, want > 0", o.PropagationIdle)
	case o.PresenceTimeout < 0:
		return fmt.Errorf("actors: PresenceTimeout = %v, want > 0", o.PresenceTimeout)
	case o.AckWindow < 0:
		return fmt.Errorf("actors: AckWindow = %v, want > 0", o.AckWindow)
	}
	return nil
}

// Service runs one node's domain actors on a host and holds what they share
// on the node: the store, the event stream, presence, the ack coalescer and
// the cache of checked access tokens.
type Service struct {
	rt       *host.Host
	opts     Options
	store    *storage.Store
	cfg      *config.Config
	metrics  *metrics.Metrics
	log      *slog.Logger
	stream   *stream
	presence presences
	acks     acker
	stop     chan struct{}
	tokens   tokenCache
}

// PlacementChanged tells the actors that the partitions moved changed
// owners: the host routes their messages anew, releases the actors of
// those that went to another node, and has the user actors resend what
// the moves may have lost; the tokens cached for their users are dropped
// (their logouts now happen elsewhere); and the actors with unfinished
// work in those partitions are woken, as at a start, to go on from what
// storage holds. The wakes are routed, not checked against this node's
// ownership: a new leader owns its partition only once its lease runs,
// later than this call, and the host holds them until then. Every replica
// of a partition sends them, and a woken actor ignores the others.
func (h *Service) PlacementChanged(moved []int) {
	h.tokens.moved(moved)
	h.stream.moved(moved)
	h.rt.PlacementChanged(moved)
	for _, p := range moved {
		if err := h.wakePartition(p); err != nil {
			h.log.Warn("wake the actors of a partition that moved", "partition", p, "err", err)
		}
	}
}

// New starts the node's actors on a new host and wakes those that had
// unfinished deliveries when the node stopped.
func New(store *storage.Store, cfg *config.Config, m *metrics.Metrics, log *slog.Logger) (*Service, error) {
	return NewWith(store, cfg, m, log, Options{})
}

// NewWith is New with options.
func NewWith(store *storage.Store, cfg *config.Config, m *metrics.Metrics, log *slog.Logger, opts Options) (*Service, error) {
	opts = opts.withDefaults()
	if err := opts.validate(); err != nil {
		return nil, err
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := checkFormat(store); err != nil {
		return nil, err
	}
	h := &Service{opts: opts, store: store, cfg: cfg, metrics: m, log: log,
		presence: presences{users: map[string]*Presence{}}, stop: make(chan struct{})}
	h.stream = newStream(store, cfg.Actors.Partitions, func(p int) bool { return h.rt.Local(p) }, func(id string) int { return h.rt.Partition(id) })
	h.stream.fence = func(p int) uint64 { return h.rt.Fence(p) }
	ho := opts.Host
	ho.Partitions, ho.PassivateAfter, ho.Metrics, ho.Log = cfg.Actors.Partitions, cfg.Actors.PassivateAfter, m, log
	var err error
	h.rt, err = host.New(ho, append([]host.Kind{
		host.Kind{Name: KindUser, New: func(id string, idle *host.IdleWatch) actor.Actor {
			u := newUser(h, id)
			u.idle = idle
			return u
		}, Mailbox: host.MailboxPriority, Moved: true},
		host.Kind{Name: KindRoom, New: func(id string, idle *host.IdleWatch) actor.Actor {
			r := newRoom(h, id)
			r.idle = idle
			return r
		}, Mailbox: host.MailboxWorkers, Urgent: urgentForRoom},
		host.Kind{Name: KindAlias, New: func(id string, idle *host.IdleWatch) actor.Actor {
			a := newAlias(h, id)
			a.idle = idle
			return a
		}},
		host.Kind{Name: KindDirectory, New: func(id string, idle *host.IdleWatch) actor.Actor {
			d := newDirectory(h, id)
			d.idle = idle
			return d
		}},
		host.Kind{Name: KindUserDir, New: func(id string, idle *host.IdleWatch) actor.Actor { return newUserDir(h, id, idle) }},
		host.Kind{Name: kindAliasIndex, New: func(id string, idle *host.IdleWatch) actor.Actor { return newAliasIndex(h, id, idle) }},
	}, opts.Kinds...)...)
	if err != nil {
		return nil, err
	}
	if ho.Peers != nil {
		h.stream.broadcast = func(m *wire.StreamNews) {
			if err := h.rt.Broadcast(m); err != nil {
				h.log.Warn("tell the stream's news", "err", err)
			}
		}
		h.presence.tell = func(m *wire.PresenceChange) {
			if err := h.rt.Broadcast(m); err != nil {
				h.log.Warn("tell a presence change", "err", err)
			}
		}
		h.presence.tellNode = func(addr string, m *wire.PresenceCatchUp) {
			if err := h.rt.Tell(addr, m); err != nil {
				h.log.Warn("tell a node the presence decided here", "to", addr, "err", err)
			}
		}
		h.rt.OnBroadcast(func(msg proto.Message) {
			switch m := msg.(type) {
			case *wire.StreamNews:
				h.stream.heard(m)
			case *wire.PresenceChange:
				h.heardPresence(m)
			case *wire.PresenceCatchUp:
				h.heardCatchUp(m)
			}
		})
		go h.stream.tellNews(h.stop)
	}
	if err := h.wake(); err != nil {
		h.Stop()
		return nil, err
	}
	go h.expirePresence(h.stop, opts.PresenceTimeout)
	return h, nil
}

// wake restarts the actors that had unfinished deliveries when the node
// stopped: each left a mark under its partition's "wake" prefix.
func (h *Service) wake() error {
	for p := range h.rt.Partitions() {
		if err := h.wakePartition(p); err != nil {
			return err
		}
	}
	return nil
}

// wakePartition wakes the actors of partition p that have a wake mark.
func (h *Service) wakePartition(p int) error {
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
		return fmt.Errorf("scan wake marks of partition %d: %w", p, err)
	}
	for _, m := range marks {
		h.Send(m[0], m[1], &wire.Wake{Id: m[1]})
	}
	return nil
}

// Stop stops every actor, after they finish the messages already queued,
// and waits for them.
func (h *Service) Stop() {
	select {
	case <-h.stop:
	default:
		close(h.stop)
	}
	h.rt.Stop()
}

// Runtime returns the host the actors run on, for the kinds of
// Options.Kinds that need it after New (to send, or to post to themselves).
func (h *Service) Runtime() *host.Host { return h.rt }

// Partition returns the partition of an identity.
func (h *Service) Partition(id string) int { return h.rt.Partition(id) }

// partitionName is partition p's name in storage keys.
func partitionName(p int) string { return host.PartitionKey(p) }

// Request sends msg to the actor kind/id and waits for its answer, at most
// until ctx ends or 30 s pass. A room's answer to a write tells the node's
// later /sync tokens to cover it (stream_written.go).
func (h *Service) Request(ctx context.Context, kind, id string, msg proto.Message) (proto.Message, error) {
	reply, err := h.rt.Request(ctx, kind, id, msg)
	if err == nil && kind == KindRoom {
		h.stream.wroteThrough(id, reply)
	}
	return reply, err
}

// Send delivers msg to the actor kind/id without waiting.
func (h *Service) Send(kind, id string, msg proto.Message) { h.rt.Send(kind, id, msg) }

// idle answers an actor's host.IdleTimeout (host.Host.Idle).
func (h *Service) idle(ctx actor.Context, w *host.IdleWatch, busy bool) { h.rt.Idle(ctx, w, busy) }

// stayActive answers host.StopWhenIdle for a busy actor (host.Host.StayActive).
func (h *Service) stayActive(ctx actor.Context, w *host.IdleWatch) { h.rt.StayActive(ctx, w) }

// urgentForRoom puts a room's next turn in the workers' fast lane for a
// client's request or the commit a client waits on; propagation and
// membership acks, outbox acks, other servers' events and the servers
// asked for by a profile update's fan-out wait their turn.
func urgentForRoom(m any) bool {
	switch m := m.(type) {
	case *wire.ProfileUpdates, *wire.MembershipAck, *wire.OutboundAck, *wire.ReceivePDU, *wire.GetServers:
		return false
	case *committed:
		return m.client
	case *streamReady: // held writes, a client's among them
		return true
	case proto.Message:
		return true
	}
	return false
}

// GetPriority puts the news that a write is durable first in a user's
// mailbox (protoactor's default is 4), since a client waits on its answer;
// rooms' acks go last (wire.UpdateAcks.GetPriority).
func (*committed) GetPriority() int8 { return 7 }

// Authenticate checks an access token's hash for user, from the node's cache
// or the user's actor. The actor drops a token from the cache when its
// device is removed; only tokens of the partitions this node owns are
// cached.
func (h *Service) Authenticate(ctx context.Context, user string, hash []byte) (*wire.AuthReply, error) {
	cached, version := h.tokens.get(string(hash))
	if cached != nil {
		return cached, nil
	}
	reply, err := h.Request(ctx, KindUser, user, &wire.Authenticate{UserId: user, TokenHash: hash})
	if err != nil {
		return nil, err
	}
	a, ok := reply.(*wire.AuthReply)
	if !ok {
		return &wire.AuthReply{}, nil
	}
	if p := h.rt.Partition(user); a.Ok && h.rt.Local(p) {
		h.tokens.put(string(hash), version, cachedToken{reply: a, partition: p})
	}
	return a, nil
}
