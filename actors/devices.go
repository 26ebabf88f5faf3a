package actors

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"slices"

	"github.com/asynkron/protoactor-go/actor"

	"persona/storage"
	"persona/wire"
)

// putFilter stores a filter under an id made from its content, so that the
// same filter uploaded twice has one id.
func (u *user) putFilter(ctx actor.Context, m *wire.PutFilter) {
	if !u.exists {
		ctx.Respond(&wire.FilterReply{Error: notFound(wire.Error_USER, "Unknown user.")})
		return
	}
	sum := sha256.Sum256(m.FilterJson)
	id := hex.EncodeToString(sum[:8])
	var b storage.Batch
	b.Set(u.key("filter", id), m.FilterJson)
	u.commit(ctx, &b, &wire.FilterReply{FilterId: id}, nil)
}

func (u *user) getFilter(ctx actor.Context, m *wire.GetFilter) {
	raw, err := u.h.store.Get(u.key("filter", m.FilterId))
	if errors.Is(err, storage.ErrNotFound) || m.FilterId == "" {
		ctx.Respond(&wire.FilterReply{Error: notFound(wire.Error_FILTER, "No such filter.")})
		return
	}
	if err != nil {
		ctx.Respond(&wire.FilterReply{Error: internal("read filter")})
		return
	}
	ctx.Respond(&wire.FilterReply{FilterId: m.FilterId, FilterJson: raw})
}

func (u *user) getDevices() *wire.DevicesReply {
	out := &wire.DevicesReply{}
	for id, d := range u.devices {
		out.Devices = append(out.Devices, &wire.DeviceInfo{DeviceId: id, DisplayName: d.DisplayName, CreatedMs: d.Created})
	}
	slices.SortFunc(out.Devices, func(a, b *wire.DeviceInfo) int {
		if a.DeviceId < b.DeviceId {
			return -1
		}
		return 1
	})
	return out
}

func (u *user) renameDevice(ctx actor.Context, m *wire.RenameDevice) {
	d, ok := u.devices[m.DeviceId]
	if !ok {
		ctx.Respond(&wire.Done{Error: notFound(wire.Error_DEVICE, "Unknown device.")})
		return
	}
	d.DisplayName = m.DisplayName
	u.devices[m.DeviceId] = d
	var b storage.Batch
	b.Set(u.key("dev", m.DeviceId), mustJSON(d))
	u.commit(ctx, &b, &wire.Done{}, nil)
}
