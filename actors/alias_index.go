package actors

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"

	"persona/host"
	"persona/storage"
	"persona/wire"
)

// Each partition indexes its aliases by room: p/<partition>/ar/<room>/<alias>,
// written in the same batch as the alias's record, so the index is exactly
// as durable as the aliases. An aliasIndex actor, one per partition, answers
// for its index.

func aliasIndexKey(partition int, room, alias string) []byte {
	return storage.Key("p", partitionName(partition), "ar", room, alias)
}

// roomAliasesIn lists partition p's aliases of room, sorted.
func roomAliasesIn(store *storage.Store, p int, room string) ([]string, error) {
	prefix := storage.Prefix("p", partitionName(p), "ar", room)
	var out []string
	err := store.Scan(prefix, nil, func(k, _ []byte) error {
		out = append(out, string(k[len(prefix):]))
		return nil
	})
	return out, err
}

// aliasIndex is the actor of kind kindAliasIndex that answers for one
// partition's index (its id is the partition's number); it keeps no state.
type aliasIndex struct {
	h    *Service
	part int
	idle *host.IdleWatch
}

func newAliasIndex(h *Service, id string, idle *host.IdleWatch) actor.Actor {
	p, _ := strconv.Atoi(id)
	return &aliasIndex{h: h, part: p, idle: idle}
}

func (a *aliasIndex) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *actor.Started, *host.IdleTimeout:
		a.idle.Set(a.h.rt.PassivateAfter())
		if _, timeout := m.(*host.IdleTimeout); timeout {
			a.h.idle(ctx, a.idle, false)
		}
	case *host.StopWhenIdle:
		ctx.Stop(ctx.Self())
	case *wire.ListRoomAliases:
		ctx.Respond(a.list(m))
	}
}

// list answers ListRoomAliases from the partition's index.
func (a *aliasIndex) list(m *wire.ListRoomAliases) *wire.RoomAliasList {
	if m.RoomId == "" || strings.ContainsRune(m.RoomId, 0) {
		return &wire.RoomAliasList{Error: badValue(wire.Error_ROOM, "Bad room ID.")}
	}
	aliases, err := roomAliasesIn(a.h.store, a.part, m.RoomId)
	if err != nil {
		a.h.log.Error("read alias index", "room", m.RoomId, "err", err)
		return &wire.RoomAliasList{Error: internal("internal storage error")}
	}
	return &wire.RoomAliasList{Aliases: aliases}
}

// RoomAliases lists the local aliases that point to room, sorted: it asks
// every partition's index for its part. A partition's error is the
// answer's Error.
func (h *Service) RoomAliases(ctx context.Context, room string) (*wire.RoomAliasList, error) {
	n := h.rt.Partitions()
	type answer struct {
		list proto.Message
		err  error
	}
	answers := make([]chan answer, n)
	for p := range n {
		answers[p] = make(chan answer, 1)
		go func() {
			list, err := h.rt.RequestIn(ctx, p, kindAliasIndex, strconv.Itoa(p), &wire.ListRoomAliases{RoomId: room})
			answers[p] <- answer{list, err}
		}()
	}
	out := &wire.RoomAliasList{Aliases: []string{}}
	var failed error
	for _, c := range answers {
		a := <-c
		list, ok := a.list.(*wire.RoomAliasList)
		switch {
		case a.err != nil:
			failed = cmp.Or(failed, a.err)
		case !ok:
			failed = cmp.Or(failed, fmt.Errorf("actors: alias index answered %T", a.list))
		case list.Error != nil && out.Error == nil:
			out.Error = list.Error
		default:
			out.Aliases = append(out.Aliases, list.Aliases...)
		}
	}
	if failed != nil {
		return nil, failed
	}
	if out.Error != nil {
		return &wire.RoomAliasList{Error: out.Error}, nil
	}
	slices.Sort(out.Aliases)
	return out, nil
}
