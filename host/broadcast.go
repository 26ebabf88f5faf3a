package host

import (
	"fmt"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/wire"
)

// broadcastName is the name of the actor, on every node, that takes what
// other nodes broadcast.
const broadcastName = "broadcast"

// Peers names the other nodes of a cluster, by the actor-system address
// (host:port) they are reached at. The host asks it on every Broadcast:
// it must be cheap and must not block.
type Peers interface {
	Peers() []string
}

// listener is the actor that hands what other nodes broadcast to the
// function OnBroadcast set, one message at a time, in the order each
// node sent them.
type listener struct {
	h *Host
}

// Receive decodes an envelope another node broadcast.
func (l *listener) Receive(ctx actor.Context) {
	env, ok := ctx.Message().(*wire.Envelope)
	if !ok {
		return
	}
	msg, err := decode(env)
	if err != nil {
		l.h.opts.Log.Warn("a message broadcast by another node cannot be read: dropped", "err", err)
		return
	}
	if fn := l.h.onBroadcast.Load(); fn != nil {
		(*fn)(msg)
	}
}

// spawnListener starts the node's broadcast listener.
func (h *Host) spawnListener() {
	props := actor.PropsFromProducer(func() actor.Actor { return &listener{h: h} })
	if _, err := h.system.Root.SpawnNamed(props, broadcastName); err != nil {
		panic(fmt.Sprintf("spawn %s: %v", broadcastName, err)) // the name is unique: cannot happen
	}
}

// OnBroadcast sets the function that receives what other nodes broadcast.
// It runs on one goroutine, a message at a time, and must not block long.
func (h *Host) OnBroadcast(fn func(proto.Message)) { h.onBroadcast.Store(&fn) }

// Broadcast sends msg to every peer (Options.Peers) at most once: a peer
// that is down, or whose connection breaks, misses it; one not connected
// gets it once a probe reaches it (links). Without remote or peers it
// does nothing.
func (h *Host) Broadcast(msg proto.Message) error {
	if !h.remoteUp.Load() || h.opts.Peers == nil {
		return nil
	}
	peers := h.opts.Peers.Peers()
	if len(peers) == 0 {
		return nil
	}
	env, err := encodeBroadcast(msg)
	if err != nil {
		return err
	}
	for _, addr := range peers {
		h.links.sendOrQueue(actor.NewPID(addr, broadcastName), env)
	}
	return nil
}

// Tell sends msg to the node whose actor system is at addr, as Broadcast
// sends to each peer: at most once, to the function that node's
// OnBroadcast set. Without remote it does nothing.
func (h *Host) Tell(addr string, msg proto.Message) error {
	if !h.remoteUp.Load() {
		return nil
	}
	env, err := encodeBroadcast(msg)
	if err != nil {
		return err
	}
	h.links.sendOrQueue(actor.NewPID(addr, broadcastName), env)
	return nil
}

// encodeBroadcast encodes msg for another node's broadcast listener.
func encodeBroadcast(msg proto.Message) (*wire.Envelope, error) {
	payload, err := proto.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("host: encode a broadcast: %w", err)
	}
	return &wire.Envelope{Type: string(msg.ProtoReflect().Descriptor().FullName()), Payload: payload}, nil
}
