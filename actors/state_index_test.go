package actors

import (
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"
	"time"

	"persona/storage"
	"persona/wire"
)

// The room's answers at past positions (each event's unsigned.membership,
// which events a page shows under changing history visibility, the state
// and members at a token, one state event at a token) equal those
// computed from the event log alone, after random interleavings of
// renames, joins, leaves, invites, kicks, bans, messages and state
// changes (some keyed with NUL and 0x01), across a restart.
func TestStateAtPositionsMatchesTheEventLog(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h := newHistoryOps(t, dir)
	h.run(150)
	h.restart()
	h.run(150)
	h.settle()
	h.check()
}

// historyOps makes a room's history at random and checks what the room
// answers of it against the event log.
type historyOps struct {
	t       *testing.T
	dir     string
	h       *Service
	st      *storage.Store
	rng     *rand.Rand
	room    string
	creator string
	readers []string
	// oldTypes keeps NUL out of event types, as the per-key form of the
	// index cannot tell them apart
	oldTypes bool
}

func newHistoryOps(t *testing.T, dir string) *historyOps {
	seed := rand.Uint64()
	t.Logf("seed %d", seed)
	o := &historyOps{t: t, dir: dir, rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))}
	o.h, o.st = newTestHost(t, dir, time.Minute)
	t.Cleanup(func() { o.h.Stop(); o.st.Close() })
	o.creator = registerUser(t, o.h, "creator")
	for _, name := range []string{"bob", "carol", "dave"} {
		o.readers = append(o.readers, registerUser(t, o.h, name))
	}
	o.room = createRoom(t, o.h, o.creator, 1)
	return o
}

// restart stops the node and opens it again on the same store.
func (o *historyOps) restart() {
	o.h.Stop()
	o.st.Close()
	o.h, o.st = newTestHost(o.t, o.dir, time.Minute)
}

// run makes n random changes; the room refuses some (a leave of one not
// in the room), which changes nothing.
func (o *historyOps) run(n int) {
	for i := range n {
		u := o.readers[o.rng.IntN(len(o.readers))]
		switch k := o.rng.IntN(100); {
		case k < 30:
			o.rename(u, i)
		case k < 33: // a burst of renames
			for j := range 20 {
				o.rename(u, i*100+j)
			}
		case k < 52:
			sender := o.creator
			if o.rng.IntN(2) == 0 {
				sender = u
			}
			o.send(&wire.SendEvent{Sender: sender, Type: "m.room.message", TxnId: fmt.Sprint("t", i),
				ContentJson: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))})
		case k < 80:
			actions := []string{"join", "leave", "invite", "kick", "ban", "unban"}
			a := actions[o.rng.IntN(len(actions))]
			sender := u
			if a != "join" && a != "leave" {
				sender = o.creator
			}
			o.change(sender, u, a)
		case k < 88:
			settings := []string{"shared", "joined", "invited", "world_readable"}
			o.state("m.room.history_visibility", "", map[string]any{"history_visibility": settings[o.rng.IntN(len(settings))]})
		case k < 93:
			o.state("m.room.topic", "", map[string]any{"topic": fmt.Sprint("topic ", i)})
		default: // state keys and types that hold the bytes the index escapes
			types := []string{"org.example.state", "org.example\x01", "org.example\x00state"}
			if o.oldTypes {
				types = types[:2]
			}
			keys := []string{"", "a", "a\x00", "a\x00b", "a\x01", "a\x01\x01b", "\x00"}
			o.state(types[o.rng.IntN(len(types))], keys[o.rng.IntN(len(keys))], map[string]any{"n": i})
		}
	}
}

func (o *historyOps) rename(u string, i int) {
	content, _ := json.Marshal(map[string]any{"membership": "join", "displayname": fmt.Sprint(u, " ", i)})
	o.send(&wire.SendEvent{Sender: u, Type: "m.room.member", IsState: true, StateKey: u, ContentJson: content, GlobalProfileJson: []byte(`{}`)})
}

func (o *historyOps) state(typ, key string, content map[string]any) {
	c, _ := json.Marshal(content)
	o.send(&wire.SendEvent{Sender: o.creator, Type: typ, IsState: true, StateKey: key, ContentJson: c})
}

func (o *historyOps) send(m *wire.SendEvent) {
	m.RoomId = o.room
	askKind[*wire.SendReply](o.t, o.h, KindRoom, o.room, m)
}

func (o *historyOps) change(sender, target, action string) {
	askKind[*wire.SendReply](o.t, o.h, KindRoom, o.room, &wire.ChangeMembership{RoomId: o.room, Sender: sender, Target: target, Action: action,
		ProfileJson: []byte(`{}`)})
}

// settle joins every reader, so that each may read the whole room.
func (o *historyOps) settle() {
	for _, u := range o.readers {
		o.change(o.creator, u, "unban")
		o.change(u, u, "join")
	}
}

// eventLog is the room's events, in order, read from storage.
func (o *historyOps) eventLog() []*evRecord {
	var log []*evRecord
	err := o.st.Scan(storage.Prefix("p", partitionName(o.h.Partition(o.room)), "r", o.room, "ev"), nil, func(_, v []byte) error {
		ev := new(evRecord)
		log = append(log, ev)
		return json.Unmarshal(v, ev)
	})
	if err != nil {
		o.t.Fatal(err)
	}
	for i, ev := range log {
		if ev.Pos != uint64(i) {
			o.t.Fatalf("event %d has position %d", i, ev.Pos)
		}
	}
	return log
}

// stateLog answers from the event log alone: the state after each
// position, by a walk of the whole log.
type stateLog struct {
	events []*evRecord
	after  []map[stateKey]*evRecord
}

func newStateLog(events []*evRecord) *stateLog {
	s := &stateLog{events: events}
	cur := map[stateKey]*evRecord{}
	for _, ev := range events {
		if ev.StateKey != nil {
			cur = maps.Clone(cur)
			cur[stateKey{ev.Type, *ev.StateKey}] = ev
		}
		s.after = append(s.after, cur)
	}
	return s
}

func (s *stateLog) membership(user string, pos uint64) string {
	if ev := s.after[pos][stateKey{"m.room.member", user}]; ev != nil {
		var c struct {
			Membership string `json:"membership"`
		}
		_ = json.Unmarshal(ev.Content, &c)
		return c.Membership
	}
	return "leave"
}

// visible is whether reader sees ev, by the spec's rules on the settings
// and memberships the log gives.
func (s *stateLog) visible(reader string, ev *evRecord) bool {
	if ev.Type == "m.room.member" && *ev.StateKey == reader {
		return true
	}
	setting := "shared"
	if ev.Pos > 0 {
		if hv := s.after[ev.Pos-1][stateKey{"m.room.history_visibility", ""}]; hv != nil {
			setting = historySetting(hv)
		}
	}
	switch m := s.membership(reader, ev.Pos); setting {
	case "joined":
		return m == "join"
	case "invited":
		return m == "join" || m == "invite"
	}
	return true
}

// check compares the room's answers with the log's: every reader's pages
// forwards and backwards, and the state at positions all through the room.
func (o *historyOps) check() {
	log := newStateLog(o.eventLog())
	for _, reader := range o.readers {
		var want []string
		for _, ev := range log.events {
			if log.visible(reader, ev) {
				want = append(want, ev.ID)
			}
		}
		for _, dir := range []string{"f", "b"} {
			got := o.pages(reader, dir, log)
			if dir == "b" {
				slices.Reverse(got)
			}
			if !slices.Equal(got, want) {
				o.t.Fatalf("%s's pages (%s) show %d events, the log %d:\n%q\n%q", reader, dir, len(got), len(want), got, want)
			}
		}
	}
	o.checkStreamTokens(log)
	reader := o.readers[0]
	for range 60 {
		pos := uint64(o.rng.IntN(len(log.events)))
		at := posToken(pos + 1)
		var all, members []string
		for sk, ev := range log.after[pos] {
			all = append(all, ev.ID)
			if sk.typ == "m.room.member" {
				members = append(members, ev.ID)
			}
		}
		if got := o.stateIDs(&wire.GetState{All: true, At: at}); !sameSet(got, all) {
			o.t.Fatalf("state at %d: %q, the log's %q", pos, got, all)
		}
		if got := o.stateIDs(&wire.GetState{Members: true, At: at}); !sameSet(got, members) {
			o.t.Fatalf("members at %d: %q, the log's %q", pos, got, members)
		}
		for sk := range log.after[len(log.events)-1] {
			r := askKind[*wire.StateReply](o.t, o.h, KindRoom, o.room, &wire.GetState{RoomId: o.room, UserId: reader, Type: sk.typ, StateKey: sk.key, At: at})
			want := log.after[pos][sk]
			switch {
			case want == nil && r.Error == nil:
				o.t.Fatalf("%s %q at %d: an event, the log has none", sk.typ, sk.key, pos)
			case want != nil && (r.Error != nil || len(r.EventsJson) != 1 || eventID(o.t, r.EventsJson[0]) != want.ID):
				o.t.Fatalf("%s %q at %d: %v %d events, the log's %s", sk.typ, sk.key, pos, r.Error, len(r.EventsJson), want.ID)
			}
		}
	}
}

// checkStreamTokens checks that a /sync token names the gap before the
// first event above it.
func (o *historyOps) checkStreamTokens(log *stateLog) {
	r := newRoom(o.h, o.room)
	if err := r.load(); err != nil {
		o.t.Fatal(err)
	}
	for range 40 { // at, just below and just above an event's stream position
		n := log.events[o.rng.IntN(len(log.events))].Stream + o.rng.Uint64N(3) - 1
		want, _ := slices.BinarySearchFunc(log.events, n, func(ev *evRecord, n uint64) int {
			if ev.Stream <= n {
				return -1
			}
			return 1
		})
		if got, ok := r.parseToken(fmt.Sprint("s", n)); !ok || got != uint64(want) {
			o.t.Fatalf("token s%d names position %d, want %d", n, got, want)
		}
	}
}

// pages reads the whole room as reader in pages of random sizes, in
// direction dir, checks each event's unsigned.membership against the
// log's and returns the event ids in the order read.
func (o *historyOps) pages(reader, dir string, log *stateLog) []string {
	var ids []string
	from := ""
	for range len(log.events) + 1 {
		r := askKind[*wire.MessagesReply](o.t, o.h, KindRoom, o.room, &wire.GetMessages{RoomId: o.room, UserId: reader, From: from, Dir: dir, Limit: uint32(1 + o.rng.IntN(40))})
		if r.Error != nil {
			o.t.Fatal(r.Error)
		}
		for _, raw := range r.Chunk {
			var ev struct {
				ID       string `json:"event_id"`
				Unsigned struct {
					Membership string `json:"membership"`
				} `json:"unsigned"`
			}
			if err := json.Unmarshal(raw, &ev); err != nil {
				o.t.Fatal(err)
			}
			pos := eventPos(o.t, o.h, o.room, ev.ID)
			if want := log.membership(reader, pos); ev.Unsigned.Membership != want {
				o.t.Fatalf("%s's membership at %d: %q, the log's %q", reader, pos, ev.Unsigned.Membership, want)
			}
			ids = append(ids, ev.ID)
		}
		if r.End == "" {
			return ids
		}
		from = r.End
	}
	o.t.Fatalf("%s's pages (%s) do not end", reader, dir)
	return nil
}

func (o *historyOps) stateIDs(m *wire.GetState) []string {
	m.RoomId, m.UserId = o.room, o.readers[0]
	r := askKind[*wire.StateReply](o.t, o.h, KindRoom, o.room, m)
	if r.Error != nil {
		o.t.Fatal(r.Error)
	}
	var ids []string
	for _, raw := range r.EventsJson {
		ids = append(ids, eventID(o.t, raw))
	}
	return ids
}

func eventID(t *testing.T, raw []byte) string {
	var ev struct {
		ID string `json:"event_id"`
	}
	if err := json.Unmarshal(raw, &ev); err != nil {
		t.Fatal(err)
	}
	return ev.ID
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}
