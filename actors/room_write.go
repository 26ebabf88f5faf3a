package actors

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"reflect"
	"strconv"

	"github.com/asynkron/protoactor-go/actor"

	"persona/internal/pdu"
	"persona/storage"
	"persona/wire"
)

// createRequest is the part of the /createRoom body the room reads.
type createRequest struct {
	Name                      string            `json:"name"`
	RoomVersion               string            `json:"room_version"`
	Topic                     string            `json:"topic"`
	Preset                    string            `json:"preset"`
	Visibility                string            `json:"visibility"`
	Invite                    []string          `json:"invite"`
	IsDirect                  bool              `json:"is_direct"`
	InitialState              []json.RawMessage `json:"initial_state"`
	CreationContent           map[string]any    `json:"creation_content"`
	PowerLevelContentOverride map[string]any    `json:"power_level_content_override"`
}

func (r *room) create(ctx actor.Context, m *wire.CreateRoom) {
	if r.exists {
		ctx.Respond(&wire.SendReply{Error: conflict(wire.Error_ROOM, "Room already exists.")})
		return
	}
	var req createRequest
	if err := json.Unmarshal(m.RequestJson, &req); err != nil {
		ctx.Respond(&wire.SendReply{Error: malformed(wire.Error_ROOM, "Bad /createRoom body.")})
		return
	}
	if req.Preset == "" {
		req.Preset = "private_chat"
		if req.Visibility == "public" {
			req.Preset = "public_chat"
		}
	}
	if req.RoomVersion == "" {
		req.RoomVersion = "10"
	}
	r.exists = true
	r.meta = roomMeta{Creator: m.Creator, Version: req.RoomVersion}
	var b storage.Batch
	add := func(typ, key string, content any) error {
		sk := key
		ev := &evRecord{Type: typ, StateKey: &sk, Sender: m.Creator, Content: mustJSON(content)}
		if typ == "m.room.create" {
			ev.TS = m.CreatedMs
		}
		return r.append(&b, ev)
	}
	create := createContent(m.Creator, req)
	member := profileContent(m.CreatorProfileJson)
	member["membership"] = "join"
	creatorLevel := map[string]any{m.Creator: 100}
	if versionAtLeast(req.RoomVersion, 12) { // creators hold unlimited power outside the power levels (MSC4289)
		creatorLevel = map[string]any{}
	}
	pl := map[string]any{
		"users":          creatorLevel,
		"users_default":  0,
		"events":         map[string]any{"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100, "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100, "m.room.server_acl": 100, "m.room.encryption": 100},
		"events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
		"notifications": map[string]any{"room": 50},
	}
	if req.Preset == "trusted_private_chat" {
		users := pl["users"].(map[string]any)
		for _, u := range req.Invite {
			users[u] = 100
		}
	}
	maps.Copy(pl, req.PowerLevelContentOverride)
	joinRule := "invite"
	if req.Preset == "public_chat" {
		joinRule = "public"
	}
	err := errors.Join(
		add("m.room.create", "", create),
		add("m.room.member", m.Creator, member),
		add("m.room.power_levels", "", pl),
		add("m.room.join_rules", "", map[string]any{"join_rule": joinRule}),
		add("m.room.history_visibility", "", map[string]any{"history_visibility": "shared"}),
	)
	if req.Preset != "public_chat" {
		err = errors.Join(err, add("m.room.guest_access", "", map[string]any{"guest_access": "can_join"}))
	}
	for _, raw := range req.InitialState {
		var ev struct {
			Type     string          `json:"type"`
			StateKey string          `json:"state_key"`
			Content  json.RawMessage `json:"content"`
		}
		if json.Unmarshal(raw, &ev) != nil || ev.Type == "" || ev.Type == "m.room.create" || ev.Type == "m.room.member" {
			continue
		}
		var c map[string]any
		if json.Unmarshal(ev.Content, &c) != nil || c == nil {
			c = map[string]any{}
		}
		err = errors.Join(err, add(ev.Type, ev.StateKey, c))
	}
	if req.Name != "" {
		err = errors.Join(err, add("m.room.name", "", map[string]any{"name": req.Name}))
	}
	if req.Topic != "" {
		err = errors.Join(err, add("m.room.topic", "", topicContent(req.Topic)))
	}
	for _, u := range req.Invite {
		c := map[string]any{}
		_ = json.Unmarshal(m.InviteeProfilesJson[u], &c) // the invitee's displayname and avatar_url
		c["membership"] = "invite"
		if req.IsDirect {
			c["is_direct"] = true
		}
		err = errors.Join(err, add("m.room.member", u, c))
	}
	if err != nil {
		r.exists = false
		r.abort() // back to no room
		ctx.Respond(&wire.SendReply{Error: appendError(err)})
		return
	}
	rec := r.member(m.Creator)
	rec.Version = m.CreatorProfileVersion
	r.putMember(&b, m.Creator)
	r.commitMembership(ctx, &b, &wire.SendReply{}, append([]string{m.Creator}, req.Invite...))
}

// createContent is the content of a room's create event.
func createContent(creator string, req createRequest) map[string]any {
	create := map[string]any{}
	maps.Copy(create, req.CreationContent)
	create["room_version"] = req.RoomVersion
	if !versionAtLeast(req.RoomVersion, 11) { // from v11 the sender is the creator (MSC2175)
		create["creator"] = creator
	}
	return create
}

// versionAtLeast reports whether room version v is n or later.
func versionAtLeast(v string, n int) bool {
	k, err := strconv.Atoi(v)
	return err == nil && k >= n
}

// RoomIDForVersion12 is the id of the room of version 12 that creator's
// /createRoom body (request) makes at createdMs on server: the hash of
// its create event, which the room then builds alike.
func RoomIDForVersion12(server, creator string, request []byte, createdMs int64) (string, error) {
	var req createRequest
	if err := json.Unmarshal(request, &req); err != nil {
		return "", err
	}
	content, err := pdu.Canonical(mustJSON(createContent(creator, req)))
	if err != nil {
		return "", fmt.Errorf("%w: %v", errBadContent, err)
	}
	sk := ""
	h, err := pdu.Hash(&pdu.Event{Sender: creator, Origin: server, Type: "m.room.create", StateKey: &sk, Content: content,
		PrevEvents: []string{}, AuthEvents: []string{}, Depth: 1, OriginServerTS: createdMs}, "12")
	if err != nil {
		return "", err
	}
	return pdu.RoomIDFor(h.EventID), nil
}

// topicContent is a topic with its m.topic form (rich topics, spec v1.15).
func topicContent(topic string) map[string]any {
	return map[string]any{"topic": topic, "m.topic": map[string]any{"m.text": []map[string]any{{"mimetype": "text/plain", "body": topic}}}}
}

// profileContent decodes {"displayname","avatar_url"} into member content.
func profileContent(raw []byte) map[string]any {
	out := map[string]any{}
	var p map[string]any
	_ = json.Unmarshal(raw, &p)
	for _, k := range []string{"displayname", "avatar_url"} {
		if v, ok := p[k].(string); ok && v != "" {
			out[k] = v
		}
	}
	return out
}

// member returns (creating) the propagation record of user.
func (r *room) member(user string) *memberRec {
	rec := r.members[user]
	if rec == nil {
		rec = &memberRec{}
		r.members[user] = rec
	}
	return rec
}

// putMember writes user's propagation record with the last profile
// version durable: a write under way that applies a later one may fail,
// and this batch may land nonetheless.
func (r *room) putMember(b *storage.Batch, user string) {
	rec := r.members[user]
	if w, ok := r.applying[user]; ok {
		durable := *rec
		durable.Version = w.from
		rec = &durable
	}
	b.Set(r.key("mr", user), mustJSON(rec))
}

// send appends a client's event after the checks that matter for it.
func (r *room) send(ctx actor.Context, m *wire.SendEvent) {
	if m.Type == "m.room.member" && m.IsState {
		r.memberEvent(ctx, m)
		return
	}
	if m.TxnId != "" {
		if id, err := r.h.store.Get(r.txnKey(false, m.Sender, m.DeviceId, m.TxnId)); err == nil {
			ctx.Respond(&wire.SendReply{EventId: string(id)})
			return
		}
	}
	if r.membership(m.Sender) != "join" {
		ctx.Respond(&wire.SendReply{Error: forbidden("You are not joined to this room.")})
		return
	}
	if m.Type == "m.room.create" {
		ctx.Respond(&wire.SendReply{Error: malformed(wire.Error_EVENT, "A room has one create event: it cannot be sent again.")})
		return
	}
	if r.powerLevel(m.Sender) < r.required("", m.Type, m.IsState) {
		ctx.Respond(&wire.SendReply{Error: forbidden("Your power level is too low to send this event.")})
		return
	}
	if m.IsState && len(m.StateKey) > 0 && m.StateKey[0] == '@' && m.StateKey != m.Sender {
		ctx.Respond(&wire.SendReply{Error: forbidden("You may not set state keyed by another user.")})
		return
	}
	if m.Type == "m.room.power_levels" {
		if e := r.checkPowerLevels(m.Sender, m.ContentJson); e != nil {
			ctx.Respond(&wire.SendReply{Error: e})
			return
		}
	}
	if m.IsState {
		if cur := r.state[stateKey{m.Type, m.StateKey}]; cur != nil && cur.Sender == m.Sender && jsonEqual(cur.Content, m.ContentJson) {
			ctx.Respond(&wire.SendReply{EventId: cur.ID}) // the same state again: nothing new
			return
		}
	}
	ev := &evRecord{Type: m.Type, Sender: m.Sender, Content: m.ContentJson, Txn: m.TxnId, Device: m.DeviceId}
	if m.IsState {
		sk := m.StateKey
		ev.StateKey = &sk
	}
	var b storage.Batch
	if err := r.append(&b, ev); err != nil {
		ctx.Respond(&wire.SendReply{Error: appendError(err)})
		return
	}
	r.commit(ctx, &b, &wire.SendReply{EventId: ev.ID}, nil)
}

// checkPowerLevels refuses a power-levels change that gives or takes more
// power than the sender has.
func (r *room) checkPowerLevels(sender string, content []byte) *wire.Error {
	var next struct {
		Users map[string]float64 `json:"users"`
	}
	if json.Unmarshal(content, &next) != nil {
		return malformed(wire.Error_EVENT, "Bad power levels.")
	}
	for u := range next.Users {
		if versionAtLeast(r.meta.Version, 12) && r.isCreator(u) {
			return forbidden("A creator's power is above the power levels: they cannot name " + u + ".")
		}
	}
	mine := r.powerLevel(sender)
	old := r.stateContent("m.room.power_levels", "")
	oldUsers, _ := old["users"].(map[string]any)
	for u, lvl := range next.Users {
		prev, had := oldUsers[u].(float64)
		if had && prev == lvl {
			continue
		}
		if int64(lvl) > mine || (had && int64(prev) >= mine && u != sender) {
			return forbidden("You cannot change a power level above your own.")
		}
	}
	return nil
}

// jsonEqual reports whether two JSON documents hold the same value.
func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
