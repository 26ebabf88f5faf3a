package actors

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/config"
	"persona/storage"
	"persona/wire"
)

const server = "persona.test"

func hostFor(t *testing.T, dir string) *Service {
	t.Helper()
	h, st := newTestHost(t, dir, time.Minute)
	t.Cleanup(func() { h.Stop(); st.Close() })
	return h
}

func registerUser(t *testing.T, h *Service, name string) string {
	id := "@" + name + ":" + server
	ask[*wire.Done](t, h, id, &wire.Register{UserId: id, Displayname: name})
	return id
}

func profileOf(t *testing.T, h *Service, user string) ([]byte, uint64) {
	p := ask[*wire.ProfileReply](t, h, user, &wire.GetProfile{UserId: user})
	var f map[string]any
	_ = json.Unmarshal(p.FieldsJson, &f)
	out := map[string]any{}
	for _, k := range []string{"displayname", "avatar_url"} {
		if v, ok := f[k]; ok {
			out[k] = v
		}
	}
	b, _ := json.Marshal(out)
	return b, p.Version
}

func createRoom(t *testing.T, h *Service, creator string, i int) string {
	t.Helper()
	id := fmt.Sprintf("!room%d:%s", i, server)
	prof, v := profileOf(t, h, creator)
	r, err := h.Request(context.Background(), KindRoom, id, &wire.CreateRoom{RoomId: id, Creator: creator, RequestJson: []byte(`{"preset":"public_chat"}`), CreatorProfileJson: prof, CreatorProfileVersion: v})
	if err != nil || r.(*wire.SendReply).Error != nil {
		t.Fatalf("create %s: %v %v", id, err, r)
	}
	return id
}

// memberName is the displayname in user's member event in room.
func memberName(t *testing.T, h *Service, room, user string) string {
	r, err := h.Request(context.Background(), KindRoom, room, &wire.GetState{RoomId: room, UserId: user, Type: "m.room.member", StateKey: user})
	if err != nil {
		t.Fatal(err)
	}
	sr := r.(*wire.StateReply)
	if sr.Error != nil || len(sr.EventsJson) == 0 {
		t.Fatalf("state of %s: %v", room, sr.Error)
	}
	var ev struct {
		Content map[string]any `json:"content"`
	}
	_ = json.Unmarshal(sr.EventsJson[0], &ev)
	name, _ := ev.Content["displayname"].(string)
	return name
}

// waitPropagated waits until no joined room of each user is behind its
// profile.
func waitPropagated(t *testing.T, h *Service, users ...string) {
	t.Helper()
	for _, u := range users {
		eventually(t, "rooms of "+u+" caught up", func() bool {
			return ask[*wire.PendingReply](t, h, u, &wire.GetPending{UserId: u}).Behind == 0
		})
	}
}

// eventually waits for cond, up to a bound far above what it takes (a
// second or two for a fan-out of thousands of events under the race
// detector) so that a loaded machine does not fail it.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func setName(t *testing.T, h *Service, user, name string, mode wire.Propagate) {
	t.Helper()
	v, _ := json.Marshal(name)
	if w := ask[*wire.WriteReply](t, h, user, &wire.SetProfileField{UserId: user, Key: "displayname", ValueJson: v, Propagate: mode}); w.Error != nil {
		t.Fatal(w.Error)
	}
}

func TestRenamePropagatesToEveryRoom(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	alice := registerUser(t, h, "alice")
	var rooms []string
	for i := 0; i < 50; i++ {
		rooms = append(rooms, createRoom(t, h, alice, i))
	}
	eventually(t, "room list", func() bool {
		return len(ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms) == 50
	})
	for _, n := range []string{"A1", "A2", "A3"} {
		setName(t, h, alice, n, wire.Propagate_PROPAGATE_DEFAULT)
	}
	for _, r := range rooms {
		eventually(t, "rename in "+r, func() bool { return memberName(t, h, r, alice) == "A3" })
	}
	eventually(t, "nothing pending", func() bool {
		return len(ask[*wire.PendingReply](t, h, alice, &wire.GetPending{UserId: alice}).Rooms) == 0
	})
}

func TestOverridesAndModes(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	bob := registerUser(t, h, "bob")
	r1, r2 := createRoom(t, h, bob, 1), createRoom(t, h, bob, 2)
	eventually(t, "rooms", func() bool { return len(ask[*wire.RoomsReply](t, h, bob, &wire.GetRooms{UserId: bob}).Rooms) == 2 })
	prof, v := profileOf(t, h, bob)
	r, _ := h.Request(context.Background(), KindRoom, r1, &wire.SendEvent{RoomId: r1, Sender: bob, Type: "m.room.member", IsState: true, StateKey: bob,
		ContentJson: []byte(`{"membership":"join","displayname":"Bobby in r1"}`), GlobalProfileJson: prof, ProfileVersion: v})
	if r.(*wire.SendReply).Error != nil {
		t.Fatal(r.(*wire.SendReply).Error)
	}
	setName(t, h, bob, "Robert", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "r2 renamed", func() bool { return memberName(t, h, r2, bob) == "Robert" })
	if got := memberName(t, h, r1, bob); got != "Bobby in r1" {
		t.Fatalf("override clobbered: %q", got)
	}
	setName(t, h, bob, "Bert", wire.Propagate_PROPAGATE_UNCHANGED)
	eventually(t, "r2 unchanged-mode rename", func() bool { return memberName(t, h, r2, bob) == "Bert" })
	if got := memberName(t, h, r1, bob); got != "Bobby in r1" {
		t.Fatalf("unchanged mode touched an override: %q", got)
	}
	// none changes the global name only; unchanged then skips rooms that
	// kept the older name (MSC4466).
	setName(t, h, bob, "Rob", wire.Propagate_PROPAGATE_NONE)
	setName(t, h, bob, "Bo", wire.Propagate_PROPAGATE_UNCHANGED)
	waitPropagated(t, h, bob) // both rooms have the unchanged-mode version
	if got := memberName(t, h, r2, bob); got != "Bert" {
		t.Fatalf("none or unchanged reached r2: %q", got)
	}
	setName(t, h, bob, "Everywhere", wire.Propagate_PROPAGATE_ALL)
	eventually(t, "all-mode", func() bool { return memberName(t, h, r1, bob) == "Everywhere" })
}

func TestPropagationResumesAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	carol := registerUser(t, h, "carol")
	var rooms []string
	for i := 0; i < 20; i++ {
		rooms = append(rooms, createRoom(t, h, carol, i))
	}
	eventually(t, "rooms", func() bool { return len(ask[*wire.RoomsReply](t, h, carol, &wire.GetRooms{UserId: carol}).Rooms) == 20 })
	setName(t, h, carol, "Before stop", wire.Propagate_PROPAGATE_DEFAULT)
	h.Stop() // at once: deliveries may be in flight
	st.Close()
	h2 := hostFor(t, dir)
	for _, r := range rooms {
		eventually(t, "converged "+r, func() bool { return memberName(t, h2, r, carol) == "Before stop" })
	}
}

// Events are found by their ids, before and after a restart, and an id
// the room does not hold is not found.
func TestEventsAreFoundByID(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	send := func(h *Service, body string) string {
		t.Helper()
		r, err := h.Request(context.Background(), KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, DeviceId: "D", TxnId: body,
			Type: "m.room.message", ContentJson: []byte(`{"msgtype":"m.text","body":"` + body + `"}`)})
		if err != nil || r.(*wire.SendReply).Error != nil {
			t.Fatalf("send: %v %v", err, r)
		}
		return r.(*wire.SendReply).EventId
	}
	found := func(h *Service, id string) bool {
		t.Helper()
		r, err := h.Request(context.Background(), KindRoom, room, &wire.GetEvent{RoomId: room, UserId: alice, EventId: id})
		if err != nil {
			t.Fatal(err)
		}
		return r.(*wire.EventReply).Error == nil
	}
	var ids []string
	for i := range 3 {
		ids = append(ids, send(h, fmt.Sprint("m", i)))
	}
	for _, id := range ids {
		if !found(h, id) {
			t.Fatalf("event %s not found by id", id)
		}
	}
	if found(h, "$nosuchevent") {
		t.Fatal("an id the room does not hold was found")
	}
	h.Stop()
	st.Close()
	h, st = newTestHost(t, dir, time.Minute)
	defer func() { h.Stop(); st.Close() }()
	next := send(h, "after restart")
	if !found(h, ids[0]) || !found(h, next) {
		t.Fatal("events not found after a restart")
	}
}

// A client reads a room as far as its last durable event: a write still
// being committed (two of them here, the second replacing the first) stays
// invisible until it is on disk, since a crash could still lose it.
func TestReadsStopAtTheLastDurableEvent(t *testing.T) {
	// Not parallel: its sleeps let both writes reach the held committer,
	// which a loaded machine does not promise.
	h, st := newTestHost(t, t.TempDir(), time.Minute)
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	topic := func() string {
		t.Helper()
		r, err := h.Request(context.Background(), KindRoom, room, &wire.GetState{RoomId: room, UserId: alice, Type: "m.room.topic"})
		if err != nil {
			t.Fatal(err)
		}
		if sr := r.(*wire.StateReply); sr.Error == nil && len(sr.EventsJson) == 1 {
			var ev struct {
				Content struct{ Topic string } `json:"content"`
			}
			_ = json.Unmarshal(sr.EventsJson[0], &ev)
			return ev.Content.Topic
		}
		return ""
	}
	setTopic := func(s string) chan error {
		done := make(chan error, 1)
		go func() {
			r, err := h.Request(context.Background(), KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.topic", IsState: true, ContentJson: []byte(`{"topic":"` + s + `"}`)})
			if err == nil && r.(*wire.SendReply).Error != nil {
				err = fmt.Errorf("%v", r.(*wire.SendReply).Error)
			}
			done <- err
		}()
		return done
	}
	if err := <-setTopic("durable"); err != nil {
		t.Fatal(err)
	}

	// Hold the committer inside the report of a batch of our own.
	held, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	t.Cleanup(free) // before the host stops, should the test fail
	var b storage.Batch
	b.Set([]byte("test/hold"), []byte("1"))
	st.Commit(&b, func(error) { close(held); <-release })
	<-held
	first := setTopic("in flight 1")
	time.Sleep(50 * time.Millisecond)
	second := setTopic("in flight 2")
	time.Sleep(50 * time.Millisecond)
	if got := topic(); got != "durable" {
		t.Fatalf("topic while its writes are uncommitted = %q, want the durable %q", got, "durable")
	}
	free()
	for _, done := range []chan error{first, second} {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if got := topic(); got != "in flight 2" {
		t.Fatalf("topic once committed = %q, want %q", got, "in flight 2")
	}
}

// A room woken by propagation alone reads its member events only; the
// first client request finds the whole state read, and the power levels
// still decide who may change it.
func TestRoomWokenByPropagationAnswersWithItsWholeState(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice := registerUser(t, h, "alice")
	bob := registerUser(t, h, "bob")
	room := createRoom(t, h, alice, 1)
	if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: bob, Target: bob, Action: "join"}); r.Error != nil {
		t.Fatal(r.Error)
	}
	h.Stop()
	st.Close()

	h2 := hostFor(t, dir)
	setName(t, h2, alice, "Woken", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h2, alice)
	all := askKind[*wire.StateReply](t, h2, KindRoom, room, &wire.GetState{RoomId: room, UserId: bob, All: true})
	types := map[string]int{}
	for _, raw := range all.EventsJson {
		var ev struct {
			Type    string         `json:"type"`
			Content map[string]any `json:"content"`
		}
		_ = json.Unmarshal(raw, &ev)
		types[ev.Type]++
		if ev.Type == "m.room.member" && ev.Content["displayname"] == "alice" {
			t.Fatalf("a member event still shows the old name: %s", raw)
		}
	}
	for _, typ := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.history_visibility"} {
		if types[typ] != 1 {
			t.Fatalf("state after a propagation-only wake has %d %s, want 1 (%v)", types[typ], typ, types)
		}
	}
	if types["m.room.member"] != 2 {
		t.Fatalf("state has %d members, want 2", types["m.room.member"])
	}
	topic := func(sender string) *wire.Error {
		return askKind[*wire.SendReply](t, h2, KindRoom, room, &wire.SendEvent{RoomId: room, Sender: sender, Type: "m.room.power_levels", IsState: true, ContentJson: []byte(`{"users":{"` + sender + `":100}}`)}).Error
	}
	if e := topic(bob); e == nil || e.Kind != wire.Error_FORBIDDEN {
		t.Fatalf("bob changed the power levels: %v", e)
	}
	if e := topic(alice); e != nil {
		t.Fatalf("alice, the creator, may change the power levels: %v", e)
	}
}

// A room woken by propagation knows its members from the state index
// alone: it reads the renamed member's event, tells the other members'
// syncs, and reads every other event before its first client request. The
// room's last event, a member's join, load keeps as it passes it.
// An index entry of the position alone, without the membership, makes
// the room read that member's event at once.
func TestRoomWokenByPropagationKnowsMembersFromTheIndex(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	alice, bob, carol := registerUser(t, h, "alice"), registerUser(t, h, "bob"), registerUser(t, h, "carol")
	room := createRoom(t, h, alice, 1)
	for _, u := range []string{bob, carol} {
		prof, v := profileOf(t, h, u)
		if r := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: u, Target: u, Action: "join", ProfileJson: prof, ProfileVersion: v}); r.Error != nil {
			t.Fatal(r.Error)
		}
	}
	// bob's entry in its shortest stored form, the position alone; carol's
	// in the form without a profile version.
	h.Stop()
	bobKey, carolKey := currentIndexKey(t, h, st, room, bob), currentIndexKey(t, h, st, room, carol)
	raw, err := st.Get(bobKey)
	if err != nil || len(raw) != 25 {
		t.Fatalf("bob's index entry = %x, %v; want 25 bytes", raw, err)
	}
	carolRaw, err := st.Get(carolKey)
	if err != nil || len(carolRaw) != 25 {
		t.Fatalf("carol's index entry = %x, %v; want 25 bytes", carolRaw, err)
	}
	var old storage.Batch
	old.Set(bobKey, raw[len(raw)-8:])
	old.Set(carolKey, append(carolRaw[:9:9], carolRaw[17:]...))
	if err := st.CommitSync(&old); err != nil {
		t.Fatal(err)
	}
	st.Close()

	h2 := hostFor(t, dir)
	r := newRoom(h2, room) // a load of our own, to look inside
	if err := r.load(); err != nil {
		t.Fatal(err)
	}
	// bob's event is read for its old entry, carol's join is the room's last
	// event, which load has in hand; alice's stays in storage.
	if len(r.state) != 2 || r.state[stateKey{"m.room.member", bob}] == nil || r.state[stateKey{"m.room.member", carol}] == nil || len(r.unreadMembers) != 1 {
		t.Fatalf("load read %d events (want bob's and carol's) and indexed %d members (want alice alone)", len(r.state), len(r.unreadMembers))
	}
	sk := alice
	if got := r.audience(&evRecord{Type: "m.room.member", StateKey: &sk}); len(got) < 3 || !slices.Contains(got, carol) || !slices.Contains(got, bob) {
		t.Fatalf("audience of alice's member event = %v, want every member", got)
	}
	next := r.meta.NextPos
	if err := r.readUnread(); err != nil || r.meta.Creator != alice || r.meta.NextPos != next || len(r.state) < 7 {
		t.Fatalf("after readUnread: %v, creator %q, next %d (want %d), %d events", err, r.meta.Creator, r.meta.NextPos, next, len(r.state))
	}
	setName(t, h2, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	setName(t, h2, bob, "Bob 2", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h2, alice, bob)
	members := askKind[*wire.StateReply](t, h2, KindRoom, room, &wire.GetState{RoomId: room, UserId: carol, Members: true})
	names := map[string]string{}
	for _, raw := range members.EventsJson {
		var ev struct {
			StateKey string         `json:"state_key"`
			Content  map[string]any `json:"content"`
			Unsigned struct {
				PrevContent map[string]any `json:"prev_content"`
			} `json:"unsigned"`
		}
		_ = json.Unmarshal(raw, &ev)
		if ev.Content["membership"] != "join" {
			t.Fatalf("%s: membership %v, want join", ev.StateKey, ev.Content["membership"])
		}
		names[ev.StateKey], _ = ev.Content["displayname"].(string)
		if ev.StateKey == alice && ev.Unsigned.PrevContent["displayname"] != "alice" {
			t.Fatalf("alice's event has prev_content %v, want her old name", ev.Unsigned.PrevContent)
		}
	}
	if want := map[string]string{alice: "Alice 2", bob: "Bob 2", carol: "carol"}; !maps.Equal(names, want) {
		t.Fatalf("members after a propagation-only wake: %v, want %v", names, want)
	}
}

// currentIndexKey is the state index key of user's current member event
// in room.
func currentIndexKey(t *testing.T, h *Service, st *storage.Store, room, user string) []byte {
	t.Helper()
	run := newRoom(h, room).stateRun("m.room.member", user)
	var key []byte
	if err := st.ScanReverse(run, nil, func(k, _ []byte) error {
		key = bytes.Clone(k)
		return storage.ErrStopScan
	}); err != nil || key == nil {
		t.Fatalf("no state index entry for %s: %v", user, err)
	}
	return key
}

// A member's index entry ends with the position, as every state index
// entry does: whatever reads an entry's position from its last eight
// bytes (storage.ParseUint64, or a reader that knows entries of the
// position alone) reads a member's entry the same way.
func TestMemberIndexEndsWithThePosition(t *testing.T) {
	t.Parallel()
	m := memberIndex{pos: 7, stream: 1 << 40, membership: 1}
	v := m.encode()
	if got := storage.ParseUint64(v); got != 7 {
		t.Fatalf("ParseUint64 of an entry = %d, want its position 7", got)
	}
	if back, ok := parseMemberIndex(v); !ok || back != m {
		t.Fatalf("parseMemberIndex = %+v, %v; want %+v", back, ok, m)
	}
	if _, ok := parseMemberIndex(v[len(v)-8:]); ok {
		t.Fatal("an entry with the position alone parsed as a member index")
	}
}

// TestWokenUserWritesBeforeReadingItsRooms: a user's actor woken from
// storage leaves its room cursors there until a message needs them; a
// rename then reads them after its answer, and reaches every room.
func TestWokenUserWritesBeforeReadingItsRooms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Minute)
	dave := registerUser(t, h, "dave")
	var rooms []string
	for i := range 5 {
		rooms = append(rooms, createRoom(t, h, dave, i))
	}
	eventually(t, "rooms", func() bool { return len(ask[*wire.RoomsReply](t, h, dave, &wire.GetRooms{UserId: dave}).Rooms) == 5 })
	h.Stop()
	st.Close()

	h = hostFor(t, dir)
	u := newUser(h, dave)
	if err := u.load(); err != nil {
		t.Fatal(err)
	}
	if u.roomsLoaded || len(u.rooms) != 0 {
		t.Fatalf("loading read %d room cursors; they wait for a message that needs them", len(u.rooms))
	}
	if err := u.ensureRooms(); err != nil || len(u.rooms) != 5 || u.d.behind != 0 || len(u.d.current) != 5 {
		t.Fatalf("ensureRooms: %v, %d rooms, %d behind, %d current", err, len(u.rooms), u.d.behind, len(u.d.current))
	}

	setName(t, h, dave, "Woken", wire.Propagate_PROPAGATE_DEFAULT) // the actor's first message since the restart
	waitPropagated(t, h, dave)
	for _, r := range rooms {
		if got := memberName(t, h, r, dave); got != "Woken" {
			t.Fatalf("%s: member name %q, want Woken", r, got)
		}
	}
}

// A room a client used releases its state once idle and reads it again on
// the next request: the state, the timeline, sends (positions go on, a
// resent txn id answers the same event) and propagation are as before.
func TestIdleRoomReleasesItsState(t *testing.T) {
	// Not parallel: it sleeps for the room's 50 ms idle timeout to fire,
	// which under load races as in
	// TestProfileWritesSurvivePassivationAndRestart.
	const propagationIdle = 50 * time.Millisecond
	h, st := newHostOpts(t, t.TempDir(), config.Default(), Options{PropagationIdle: propagationIdle})
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	send := func(txn, typ, key string, content string) string {
		t.Helper()
		m := &wire.SendEvent{RoomId: room, Sender: alice, DeviceId: "D", TxnId: txn, Type: typ, ContentJson: []byte(content)}
		if key != "-" {
			m.IsState, m.StateKey = true, key
		}
		r := askKind[*wire.SendReply](t, h, KindRoom, room, m)
		if r.Error != nil {
			t.Fatal(r.Error)
		}
		return r.EventId
	}
	idle := func() { time.Sleep(4 * propagationIdle) }
	first := send("t1", "m.room.message", "-", `{"msgtype":"m.text","body":"one"}`)
	idle()
	send("", "m.room.name", "", `{"name":"Released"}`)
	idle()
	if again := send("t1", "m.room.message", "-", `{"msgtype":"m.text","body":"one"}`); again != first {
		t.Fatalf("a resent txn after release answered %s, want %s", again, first)
	}
	send("t2", "m.room.message", "-", `{"msgtype":"m.text","body":"two"}`)
	setName(t, h, alice, "Alice 2", wire.Propagate_PROPAGATE_DEFAULT)
	waitPropagated(t, h, alice)
	idle()
	state := askKind[*wire.StateReply](t, h, KindRoom, room, &wire.GetState{RoomId: room, UserId: alice, All: true})
	all := string(bytes.Join(state.EventsJson, []byte{'\n'}))
	for _, want := range []string{`"Released"`, `"Alice 2"`, `"m.room.create"`, `"m.room.power_levels"`} {
		if !strings.Contains(all, want) {
			t.Fatalf("state after release lacks %s:\n%s", want, all)
		}
	}
	msgs := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: alice, Dir: "f", Limit: 100})
	var last uint64
	var bodies []string
	for _, raw := range msgs.Chunk {
		var ev struct {
			ID      string `json:"event_id"`
			Content struct {
				Body string `json:"body"`
			} `json:"content"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil {
			t.Fatal(err)
		}
		pos := eventPos(t, h, room, ev.ID)
		if pos <= last && last != 0 {
			t.Fatalf("positions go back: %d after %d", pos, last)
		}
		last = pos
		if ev.Content.Body != "" {
			bodies = append(bodies, ev.Content.Body)
		}
	}
	if strings.Join(bodies, ",") != "one,two" {
		t.Fatalf("timeline after releases: %v", bodies)
	}
}

// eventPos is the position of event id in room, from the room's id index.
func eventPos(t testing.TB, h *Service, room, id string) uint64 {
	t.Helper()
	raw, err := h.store.Get(storage.Key("p", partitionName(h.Partition(room)), "r", room, "eid", id))
	if err != nil {
		t.Fatalf("position of %s: %v", id, err)
	}
	return storage.ParseUint64(raw)
}
