package outbox

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/matrix-org/gomatrixserverlib/spec"

	"persona/host"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// node is what a homeserver runs of the outbox: a real store in a
// directory, a host with the outbox's kind and a kind "room" that records
// the acks rooms get.
type node struct {
	t     *testing.T
	store *storage.Store
	rt    *host.Host
	svc   *Service
	m     *metrics.Metrics
	acks  *acks
	once  sync.Once
}

// startNode opens the store in dir and starts an outbox on it with opts
// (BackoffMin 20 ms unless set) and passivateAfter, and resumes it.
func startNode(t *testing.T, dir string, opts Options, passivateAfter time.Duration) *node {
	t.Helper()
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		t.Fatal(err)
	}
	n := &node{t: t, store: st, m: metrics.New(nil), acks: newAcks()}
	if opts.BackoffMin == 0 {
		opts.BackoffMin = 20 * time.Millisecond
	}
	opts.Metrics = n.m
	if n.svc, err = New(st, opts); err != nil {
		st.Close()
		t.Fatal(err)
	}
	n.rt, err = host.New(host.Options{Partitions: 4, PassivateAfter: passivateAfter, Metrics: n.m},
		n.svc.Kind(), n.acks.kind())
	if err != nil {
		st.Close()
		t.Fatal(err)
	}
	n.svc.Attach(n.rt)
	t.Cleanup(n.stop)
	if err := n.svc.Resume(); err != nil {
		t.Fatal(err)
	}
	return n
}

// stop stops the host, then the outbox's sends, then the store.
func (n *node) stop() {
	n.once.Do(func() {
		n.rt.Stop()
		n.svc.Close()
		if err := n.store.Close(); err != nil {
			n.t.Errorf("close store: %v", err)
		}
	})
}

// queue hands pdus of room to the outbox of dest, as a room does.
func (n *node) queue(dest spec.ServerName, room string, pdus ...*wire.OutboundPDU) {
	n.rt.Send(kind, string(dest), &wire.OutboundPDUs{Destination: string(dest), RoomId: room, Pdus: pdus})
}

// queueEDU hands an EDU to the outbox of dest.
func (n *node) queueEDU(dest spec.ServerName, typ string, content []byte) {
	n.rt.Send(kind, string(dest), &wire.OutboundEDU{Destination: string(dest), Type: typ, Content: content})
}

// state asks the outbox of dest for its state.
func (n *node) state(dest spec.ServerName) *wire.DestinationState {
	n.t.Helper()
	reply, err := n.rt.Request(context.Background(), kind, string(dest), &wire.GetDestinations{})
	if err != nil {
		n.t.Fatal(err)
	}
	return reply.(*wire.DestinationsReply).Destinations[0]
}

// metric returns the value of the sample named (with its labels) in the
// node's /metrics, or -1 when absent.
func (n *node) metric(name string) float64 {
	n.t.Helper()
	rec := httptest.NewRecorder()
	n.m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for line := range strings.Lines(rec.Body.String()) {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			if err != nil {
				n.t.Fatalf("metric %s: %v", name, err)
			}
			return f
		}
	}
	return -1
}

// acks records the OutboundAcks rooms get, per room in order.
type acks struct {
	mu  sync.Mutex
	got map[string][]uint64
}

func newAcks() *acks { return &acks{got: map[string][]uint64{}} }

// kind is an actor kind "room" that records its acks.
func (a *acks) kind() host.Kind {
	return host.Kind{Name: roomKind, New: func(string, *host.IdleWatch) actor.Actor {
		return actor.ReceiveFunc(func(c actor.Context) {
			if m, ok := c.Message().(*wire.OutboundAck); ok {
				a.mu.Lock()
				a.got[m.RoomId] = append(a.got[m.RoomId], m.Pos)
				a.mu.Unlock()
			}
		})
	}}
}

// of returns the acks room got.
func (a *acks) of(room string) []uint64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]uint64(nil), a.got[room]...)
}

// top returns the last ack room got, 0 if none.
func (a *acks) top(room string) uint64 {
	got := a.of(room)
	if len(got) == 0 {
		return 0
	}
	return got[len(got)-1]
}

// waitFor polls cond until it holds, or fails the test after limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testOrigin returns the origin's name and a fresh signing key.
func testOrigin(t *testing.T) (spec.ServerName, ed25519.PublicKey, ed25519.PrivateKey) {
	pub, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	return "origin.test", pub, key
}

// token returns n random bytes in hex.
func token(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// newRoom returns a fresh room ID on the origin.
func newRoom(origin spec.ServerName) string { return "!" + token(6) + ":" + string(origin) }

// pduAt is the PDU of room at pos: its event ID and content are random;
// its room and pos say which it is.
func pduAt(room string, pos uint64) *wire.OutboundPDU {
	js, _ := json.Marshal(map[string]any{
		"event_id": "$" + token(8), "room_id": room, "type": "m.room.message",
		"content": map[string]any{"pos": pos, "body": token(4)},
	})
	return &wire.OutboundPDU{Pos: pos, Json: js}
}

// pdus returns the PDUs of room at positions from..to.
func pdus(room string, from, to uint64) []*wire.OutboundPDU {
	var out []*wire.OutboundPDU
	for p := from; p <= to; p++ {
		out = append(out, pduAt(room, p))
	}
	return out
}

// sentPDU is what a PDU a peer got says of itself.
type sentPDU struct {
	Room    string `json:"room_id"`
	Content struct {
		Pos uint64 `json:"pos"`
	} `json:"content"`
}

// which returns the room and pos of a PDU a peer got.
func which(t *testing.T, raw json.RawMessage) (string, uint64) {
	t.Helper()
	var p sentPDU
	if err := json.Unmarshal(raw, &p); err != nil {
		t.Fatalf("PDU %s: %v", raw, err)
	}
	return p.Room, p.Content.Pos
}

// key names a PDU by room and pos.
func key(room string, pos uint64) string { return fmt.Sprintf("%s/%d", room, pos) }
