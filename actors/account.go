package actors

import (
	"encoding/json"

	"github.com/asynkron/protoactor-go/actor"

	"persona/storage"
	"persona/wire"
)

// register creates the account, the profile (displayname) and the first device.
func (u *user) register(ctx actor.Context, m *wire.Register) {
	if u.exists {
		ctx.Respond(&wire.Done{Error: conflict(wire.Error_USER, "User ID already taken.")})
		return
	}
	u.exists = true
	u.account = accountRecord{PasswordHash: m.PasswordHash, Admin: m.Admin, Created: now()}
	fields := map[string]json.RawMessage{}
	if m.Displayname != "" {
		fields["displayname"] = mustJSON(m.Displayname)
	}
	prof := profileRecord{Version: 1, Fields: fields}
	u.profile = prof
	var b storage.Batch
	b.Set(u.key("account"), mustJSON(u.account))
	b.Set(u.key("profile"), mustJSON(prof))
	if m.Device != nil {
		u.putDevice(&b, m.Device)
	}
	u.commit(ctx, &b, &wire.Done{}, func() {
		u.committed, u.committedJSON = prof, nil
		u.publishEntry()
	})
}

func (u *user) addDevice(ctx actor.Context, m *wire.AddDevice) {
	if !u.exists {
		ctx.Respond(&wire.Done{Error: notFound(wire.Error_USER, "Unknown user.")})
		return
	}
	var b storage.Batch
	u.putDevice(&b, m.Device)
	u.commit(ctx, &b, &wire.Done{}, nil)
}

// putDevice records a device; a device id that exists gets a new token.
func (u *user) putDevice(b *storage.Batch, d *wire.NewDevice) {
	if old, ok := u.devices[d.DeviceId]; ok {
		delete(u.tokens, string(old.TokenHash))
		u.h.tokens.forget(string(old.TokenHash))
		if d.DisplayName == "" {
			d.DisplayName = old.DisplayName
		}
	}
	rec := deviceRecord{TokenHash: d.TokenHash, DisplayName: d.DisplayName, Created: now()}
	u.devices[d.DeviceId] = rec
	u.tokens[string(d.TokenHash)] = d.DeviceId
	b.Set(u.key("dev", d.DeviceId), mustJSON(rec))
}

func (u *user) authenticate(ctx actor.Context, m *wire.Authenticate) {
	dev, ok := u.tokens[string(m.TokenHash)]
	if !ok || !u.exists {
		ctx.Respond(&wire.AuthReply{})
		return
	}
	ctx.Respond(&wire.AuthReply{Ok: true, DeviceId: dev, Admin: u.account.Admin})
}

// removeDevices logs devices out. Their tokens stop working at once; the
// answer waits until the removal is durable.
func (u *user) removeDevices(ctx actor.Context, m *wire.RemoveDevices) {
	ids := m.DeviceIds
	if m.All {
		ids = ids[:0]
		for id := range u.devices {
			ids = append(ids, id)
		}
	}
	var b storage.Batch
	for _, id := range ids {
		d, ok := u.devices[id]
		if !ok {
			continue
		}
		delete(u.tokens, string(d.TokenHash))
		u.h.tokens.forget(string(d.TokenHash))
		delete(u.devices, id)
		b.Delete(u.key("dev", id))
	}
	if b.Len() == 0 {
		ctx.Respond(&wire.Done{})
		return
	}
	u.commit(ctx, &b, &wire.Done{}, nil)
}
