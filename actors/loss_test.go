package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/storage"
	"persona/wire"
)

// TestPropagationOverALossyNetworkConverges runs the delivery protocol
// through the real actors and storage over a network that drops, repeats
// and delays every one of its messages (the rooms' notices and acks too),
// while the user renames, joins rooms with a profile read before a rename,
// leaves and rejoins rooms, and the node restarts. Every joined room must
// end with the last name, having recorded names in order and none twice
// since each join; a room the user left must record nothing after the
// leave. LOSS_SEED=N picks another network.
func TestPropagationOverALossyNetworkConverges(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	seed := uint64(1)
	if s, err := strconv.ParseUint(os.Getenv("LOSS_SEED"), 10, 64); err == nil {
		seed = s
	}
	net := newLossyNetwork(seed)
	h, st := newLossyHost(t, dir, net)
	t.Cleanup(func() { h.Stop(); st.Close() })
	alice, bob := registerUser(t, h, "alice"), registerUser(t, h, "bob")
	var rooms []string
	for i := range 12 {
		rooms = append(rooms, createRoom(t, h, bob, i))
	}
	membership, joins := map[string]string{}, map[string]int{}
	change := func(room, action string, prof []byte, v uint64) {
		t.Helper()
		r, err := h.Request(context.Background(), KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: alice, Target: alice, Action: action, ProfileJson: prof, ProfileVersion: v})
		if err != nil || r.(*wire.SendReply).Error != nil {
			t.Fatalf("%s %s: %v %v", action, room, err, r)
		}
		membership[room] = action
		if action == "join" {
			joins[room]++
		}
	}
	for _, room := range rooms[:5] {
		prof, v := profileOf(t, h, alice)
		change(room, "join", prof, v)
	}
	next, last := 5, ""
	for step := 1; step <= 40; step++ {
		old, v := profileOf(t, h, alice) // read before the rename: a join racing it
		last = fmt.Sprintf("A-%03d", step)
		setName(t, h, alice, last, wire.Propagate_PROPAGATE_DEFAULT)
		switch {
		case step%5 == 0 && next < len(rooms):
			change(rooms[next], "join", old, v) // owed the new name: in order from the history, or as a snapshot
			next++
		case step%3 == 0:
			if room := rooms[step%next]; membership[room] == "join" {
				change(room, "leave", nil, 0)
			} else {
				change(room, "join", old, v)
			}
		case step == 13 || step == 26: // in-flight messages are lost with the node
			h.Stop()
			st.Close()
			h, st = newLossyHost(t, dir, net)
		}
	}
	for room, m := range membership {
		if m == "join" {
			eventually(t, last+" in "+room, func() bool { return memberName(t, h, room, alice) == last })
		}
	}
	waitPropagated(t, h, alice)
	for room, m := range membership {
		checkMemberHistory(t, h, room, bob, alice, joins[room], m)
	}
	if net.dropped() == 0 {
		t.Fatal("the network dropped nothing")
	}
	// Since the last restart: resends of both kinds are counted.
	for _, name := range []string{"persona_delivery_retries_total", "persona_membership_notices_resent_total"} {
		if v := metricValue(t, h, name); v == 0 {
			t.Errorf("%s = 0 over a lossy network", name)
		}
	}
}

// metricValue reads an unlabelled metric from the host's /metrics.
func metricValue(t *testing.T, h *Service, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	h.metrics.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	t.Fatalf("no %s in /metrics", name)
	return 0
}

// checkMemberHistory reads user's member events in room (as reader) and
// checks them: joins joins, each followed by names that only move forward
// ("A-NNN" numbered; another name is 0), and nothing but a join after a
// leave; the last membership is final.
func checkMemberHistory(t *testing.T, h *Service, room, reader, user string, joins int, final string) {
	t.Helper()
	var events []map[string]any
	from := ""
	for {
		r := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: reader, Dir: "f", From: from, Limit: 100})
		if r.Error != nil {
			t.Fatalf("messages of %s: %v", room, r.Error)
		}
		for _, raw := range r.Chunk {
			var ev map[string]any
			_ = json.Unmarshal(raw, &ev)
			if ev["type"] == "m.room.member" && ev["state_key"] == user {
				events = append(events, ev)
			}
		}
		if r.End == "" || len(r.Chunk) == 0 {
			break
		}
		from = r.End
	}
	var names []string
	seen, joined, membership := 0, 0, "leave"
	for _, ev := range events {
		content, _ := ev["content"].(map[string]any)
		m, _ := content["membership"].(string)
		name, _ := content["displayname"].(string)
		names = append(names, m+":"+name)
		n := 0
		if num, ok := strings.CutPrefix(name, "A-"); ok {
			n, _ = strconv.Atoi(num)
		}
		switch {
		case m == "join" && membership != "join": // a join
			joined++
		case m == "join" && n <= seen:
			t.Fatalf("%s: %q came after a later or equal name: %v", room, name, names)
		case m != "join" && m != "leave":
			t.Fatalf("%s: membership %s: %v", room, m, names)
		}
		seen, membership = n, m
	}
	if joined != joins || membership != final {
		t.Fatalf("%s: %d joins, ending in %s, want %d and %s: %v", room, joined, membership, joins, final, names)
	}
}

// lossyNetwork drops 30% of the delivery protocol's messages (profile
// updates, their acks, membership notices and their acks), repeats 10% and
// delays 20% by up to 15 ms, which reorders them. Other messages pass.
type lossyNetwork struct {
	mu   sync.Mutex
	rng  *rand.Rand
	lost int
}

func newLossyNetwork(seed uint64) *lossyNetwork {
	return &lossyNetwork{rng: rand.New(rand.NewPCG(seed, seed))}
}

func (n *lossyNetwork) carry(_, _ string, msg proto.Message, deliver func()) {
	switch msg.(type) {
	case *wire.ProfileUpdates, *wire.UpdateAcks, *wire.MembershipChanged, *wire.MembershipAck:
	default:
		deliver()
		return
	}
	n.mu.Lock()
	p, delay := n.rng.Float64(), time.Duration(n.rng.IntN(15))*time.Millisecond
	if p < 0.3 {
		n.lost++
	}
	n.mu.Unlock()
	switch {
	case p < 0.3:
	case p < 0.4:
		deliver()
		deliver()
	case p < 0.6:
		time.AfterFunc(delay, deliver)
	default:
		deliver()
	}
}

func (n *lossyNetwork) dropped() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.lost
}

// newLossyHost is a node whose actors talk over net, resending after 30 ms.
func newLossyHost(t *testing.T, dir string, net *lossyNetwork) (*Service, *storage.Store) {
	t.Helper()
	cfg := config.Default()
	cfg.Propagation.ResendAfter = 30 * time.Millisecond
	h, st := newHostWith(t, dir, cfg)
	carry := net.carry
	h.rt.SetNetwork(carry)
	return h, st
}

// TestAcknowledgedNoticesNeedNoWake: once every membership notice of a
// room is acknowledged, the room's resend timer is stopped: no Wake comes
// resend_after later (for a passivated room it would load it again).
func TestAcknowledgedNoticesNeedNoWake(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.Propagation.ResendAfter = time.Second // far longer than an ack takes, even under -race
	h, st := newHostWith(t, t.TempDir(), cfg)
	t.Cleanup(func() { h.Stop(); st.Close() })
	var wakes atomic.Int32
	network := func(kind, id string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.Wake); ok && kind == KindRoom {
			wakes.Add(1)
		}
		deliver()
	}
	h.rt.SetNetwork(network)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 0)
	eventually(t, "the room in alice's list", func() bool {
		rooms := ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms
		return len(rooms) == 1 && rooms[0].RoomId == room
	})
	time.Sleep(cfg.Propagation.ResendAfter * 3 / 2)
	if n := wakes.Load(); n != 0 {
		t.Fatalf("%d Wakes sent to a room whose notices were acknowledged", n)
	}
}
