package host

import (
	"fmt"
	"net"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"persona/wire"
)

// StartRemote starts protoactor's remote on bind (host:port), so that the
// partition actors of other nodes reach this node's at advertise, the
// address they know it by (the actor address it gossips). Call it once,
// before the first message to a partition another node owns and while no
// actor is being activated (protoactor sets the actor system's address
// without a lock; a Placement that knows no owner yet holds every
// message); Stop stops it. With keys (the cluster's, of
// cluster.gossip_key_file), it serves only nodes that hold one of them
// (remoteauth.go). protoactor's remote has data races of its own: do not
// start two in one process built with -race.
func (h *Host) StartRemote(bind, advertise string, keys [][]byte) (err error) {
	host, port, err := net.SplitHostPort(bind)
	if err != nil {
		return fmt.Errorf("host: remote bind %q: %w", bind, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return fmt.Errorf("host: remote bind %q: %w", bind, err)
	}
	// remote.Start panics when it cannot listen: find out first.
	l, err := net.Listen("tcp", bind)
	if err != nil {
		return fmt.Errorf("host: remote listen %s: %w", bind, err)
	}
	_ = l.Close()
	cfg := remote.Configure(host, n, append([]remote.ConfigOption{remote.WithAdvertisedHost(advertise),
		// protoactor preallocates the queues: its default of a million
		// entries is 16 MB per peer.
		remote.WithEndpointWriterQueueSize(h.opts.RemoteQueue), remote.WithEndpointManagerQueueSize(h.opts.RemoteQueue)},
		remoteAuth(keys, h.opts.Log)...)...)
	// protoactor tries a connection to a node that is down five times, 2 s
	// apart, holding what is sent to that node meanwhile; tried once, the
	// writer gives up at once and the next message dials afresh. What was
	// sent meanwhile is lost either way, as a move loses it.
	cfg.MaxRetryCount = 1
	h.system.EventStream.SubscribeWithPredicate(h.links.event, func(e any) bool {
		switch e.(type) {
		case *remote.EndpointConnectedEvent, *remote.EndpointTerminatedEvent:
			return true
		}
		return false
	})
	r := remote.NewRemote(h.system, cfg)
	defer func() {
		if v := recover(); v != nil {
			err = fmt.Errorf("host: start remote on %s: %v", bind, v)
		}
	}()
	r.Start()
	h.remote = r
	h.remoteUp.Store(true)
	h.opts.Log.Info("actors reachable across nodes", "bind", bind, "advertise", advertise)
	return nil
}

// reachable reports whether a message may be handed to remote for the
// node at addr now (links); it starts a probe of the node if not. Without
// remote every address is: what is sent there is a dead letter.
func (h *Host) reachable(addr string) bool {
	return !h.remoteUp.Load() || h.links.usable(addr)
}

// send sends m to the partition actor of the same partition on the node
// at addr, as an envelope one hop further than the one received, keeping
// its sender so that the answer of a request goes straight back to it.
func (p *partition) send(ctx actor.Context, addr string, m pending) {
	env := m.env
	outcome := "forwarded"
	if env == nil {
		msg, ok := m.msg.(proto.Message)
		if !ok {
			p.h.opts.Log.Error("a message to an actor on another node is not protobuf: dropped", "kind", m.kind, "type", fmt.Sprintf("%T", m.msg))
			p.h.opts.Metrics.Envelope("dropped_unknown_type")
			return
		}
		payload, err := proto.Marshal(msg)
		if err != nil {
			p.h.opts.Log.Error("encode a message to an actor on another node: dropped", "kind", m.kind, "err", err)
			p.h.opts.Metrics.Envelope("dropped_unknown_type")
			return
		}
		env = &wire.Envelope{Kind: m.kind, Id: m.id, Type: string(msg.ProtoReflect().Descriptor().FullName()), Payload: payload}
		outcome = "sent"
	} else {
		if env.Hops >= uint32(p.h.opts.MaxHops) {
			p.h.opts.Metrics.Envelope("dropped_hops")
			p.h.opts.Log.Warn("a message forwarded too often between nodes that disagree on its partition's owner: dropped",
				"partition", p.index, "kind", env.Kind, "hops", env.Hops, "owner", addr)
			p.refuse(ctx, m)
			return
		}
		env = &wire.Envelope{Kind: env.Kind, Id: env.Id, Type: env.Type, Payload: env.Payload, Hops: env.Hops + 1}
	}
	to := p.remotes[addr]
	if to == nil {
		to = actor.NewPID(addr, partitionName(p.index))
		p.remotes[addr] = to
	}
	p.h.opts.Metrics.Envelope(outcome)
	forward(ctx, to, env, m.sender)
}

// decode returns the message an envelope carries; an error names a type
// this node does not know, or a payload it cannot read.
func decode(env *wire.Envelope) (proto.Message, error) {
	mt, err := protoregistry.GlobalTypes.FindMessageByName(protoreflect.FullName(env.Type))
	if err != nil {
		return nil, fmt.Errorf("message type %q: %w", env.Type, err)
	}
	msg := mt.New().Interface()
	if err := proto.Unmarshal(env.Payload, msg); err != nil {
		return nil, fmt.Errorf("decode %s: %w", env.Type, err)
	}
	return msg, nil
}

// partitionName is the name of partition p's actor, on every node.
func partitionName(p int) string { return "partition/" + strconv.Itoa(p) }
