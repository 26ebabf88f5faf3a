package actors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/asynkron/protoactor-go/actor"

	"persona/storage"
)

// Each partition indexes its aliases by room: p/<partition>/ar/<room>/<alias>,
// written in the same batch as the alias's record, so the index is exactly
// as durable as the aliases. A partition actor answers for its own index.

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

// answerRoomAliases is the partition's answer to ListRoomAliases.
func (p *partition) answerRoomAliases(m *ListRoomAliases) *RoomAliasList {
	if m.RoomId == "" || strings.ContainsRune(m.RoomId, 0) {
		return &RoomAliasList{Error: badValue(Error_ROOM, "Bad room ID.")}
	}
	aliases, err := roomAliasesIn(p.h.store, p.index, m.RoomId)
	if err != nil {
		p.h.log.Error("read alias index", "room", m.RoomId, "err", err)
		return &RoomAliasList{Error: internal("internal storage error")}
	}
	return &RoomAliasList{Aliases: aliases}
}

// RoomAliases lists the local aliases that point to room, sorted: it asks
// every partition for its part of the index. A partition's error is the
// answer's Error.
func (h *Host) RoomAliases(ctx context.Context, room string) (*RoomAliasList, error) {
	timeout := 30 * time.Second
	if dl, ok := ctx.Deadline(); ok {
		timeout = time.Until(dl)
	}
	futures := make([]*actor.Future, len(h.parts))
	for i, p := range h.parts {
		futures[i] = h.system.Root.RequestFuture(p, &ListRoomAliases{RoomId: room}, timeout)
	}
	out := &RoomAliasList{Aliases: []string{}}
	for _, f := range futures {
		res, err := f.Result()
		if errors.Is(err, actor.ErrTimeout) {
			return nil, ErrTimeout
		}
		if err != nil {
			return nil, err
		}
		list, ok := res.(*RoomAliasList)
		if !ok {
			return nil, fmt.Errorf("actors: partition answered %T", res)
		}
		if list.Error != nil {
			return list, nil
		}
		out.Aliases = append(out.Aliases, list.Aliases...)
	}
	slices.Sort(out.Aliases)
	return out, nil
}

// indexAliases builds the index from the alias records of a store written
// before it existed, once (the mark aliasIndexMark says it is done).
func indexAliases(store *storage.Store, partitions int) error {
	if _, err := store.Get(aliasIndexMark); err == nil || !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	var b storage.Batch
	for p := range partitions {
		prefix := storage.Prefix("p", partitionName(p), "a")
		err := store.Scan(prefix, nil, func(k, v []byte) error {
			var rec aliasRecord
			if err := json.Unmarshal(v, &rec); err != nil {
				return fmt.Errorf("decode alias: %w", err)
			}
			b.Set(aliasIndexKey(p, rec.RoomID, string(k[len(prefix):])), []byte{})
			return nil
		})
		if err != nil {
			return fmt.Errorf("index aliases: %w", err)
		}
	}
	b.Set(aliasIndexMark, []byte{})
	return store.CommitSync(&b)
}

var aliasIndexMark = []byte("migrated/alias-index")
