package host

import (
	"bufio"
	"context"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"persona/metrics"
	"persona/wire"
)

// table is a Placement a test changes: one answer for every partition.
type table struct {
	mu           sync.Mutex
	addr         string
	local, known bool
}

func (t *table) Owner(int) (string, bool, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.addr, t.local, t.known
}

func (t *table) set(addr string, local, known bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.addr, t.local, t.known = addr, local, known
}

// echo answers "pong" to a string and passes every *Moved it gets to moved.
type echo struct{ moved chan<- *Moved }

func (e *echo) Receive(ctx actor.Context) {
	switch m := ctx.Message().(type) {
	case *wrapperspb.StringValue:
		ctx.Respond(wrapperspb.String("pong " + m.Value))
	case *Moved:
		e.moved <- m
	}
}

// newPlacedHost starts a host of 4 partitions placed by pl, with the kinds
// "moved" (told of moves) and "still" (not), both echo actors.
func newPlacedHost(t *testing.T, pl Placement, holdFor time.Duration) (*Host, *metrics.Metrics, chan *Moved) {
	t.Helper()
	m := metrics.New(nil)
	moved := make(chan *Moved, 16)
	h, err := New(Options{Partitions: 4, PassivateAfter: time.Minute, Metrics: m, Placement: pl, HoldFor: holdFor},
		Kind{Name: "moved", New: func(string, *IdleWatch) actor.Actor { return &echo{moved: moved} }, Moved: true},
		Kind{Name: "still", New: func(string, *IdleWatch) actor.Actor { return &echo{moved: moved} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h, m, moved
}

// sample reads one sample of m's exposition, 0 when absent.
func sample(t *testing.T, m *metrics.Metrics, name string) float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			return f
		}
	}
	return 0
}

func envelopes(outcome string) string {
	return `persona_cluster_envelopes_total{outcome="` + outcome + `"}`
}

// ask requests "ping" of kind/id and returns the answer.
func ask(h *Host, kind, id string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	res, err := h.Request(ctx, kind, id, wrapperspb.String("ping"))
	if err != nil {
		return "", err
	}
	return res.(*wrapperspb.StringValue).Value, nil
}

// askLater asks kind/id as ask does, on a goroutine; the channel gets
// an error unless the answer is "pong ping".
func askLater(h *Host, kind, id string, timeout time.Duration) <-chan error {
	answer := make(chan error, 1)
	go func() {
		got, err := ask(h, kind, id, timeout)
		if err == nil && got != "pong ping" {
			err = &unexpected{got}
		}
		answer <- err
	}()
	return answer
}

// waitEnvelopes waits up to 5 s until m counts at least n envelopes of
// outcome.
func waitEnvelopes(t *testing.T, m *metrics.Metrics, outcome string, n float64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for sample(t, m, envelopes(outcome)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("%s = %v, want %v or more", outcome, sample(t, m, envelopes(outcome)), n)
		}
		time.Sleep(time.Millisecond)
	}
}

// While no owner of a partition is known its messages wait in the
// partition actor; once one is, they go to it, and a request made
// meanwhile is answered.
func TestMessagesWaitForAnOwner(t *testing.T) {
	t.Parallel()
	pl := &table{}
	h, m, _ := newPlacedHost(t, pl, time.Minute)
	answer := askLater(h, "still", "a", 10*time.Second)
	waitEnvelopes(t, m, "held", 1)
	select {
	case err := <-answer:
		t.Fatalf("answered while no owner was known: %v", err)
	default:
	}
	pl.set("", true, true)
	h.PlacementChanged([]int{0, 1, 2, 3})
	if err := <-answer; err != nil {
		t.Fatalf("the held request: %v", err)
	}
}

type unexpected struct{ got string }

func (u *unexpected) Error() string { return "answered " + u.got }

// A message held longer than HoldFor is dropped and counted; messages sent
// once an owner is known arrive.
func TestMessagesHeldTooLongAreDropped(t *testing.T) {
	t.Parallel()
	pl := &table{}
	h, m, _ := newPlacedHost(t, pl, 50*time.Millisecond)
	h.Send("still", "a", wrapperspb.String("lost"))
	deadline := time.Now().Add(5 * time.Second)
	for sample(t, m, envelopes("dropped_no_owner")) != 1 {
		if time.Now().After(deadline) {
			t.Fatalf("dropped_no_owner = %v, want 1", sample(t, m, envelopes("dropped_no_owner")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	pl.set("", true, true)
	h.PlacementChanged(nil)
	if got, err := ask(h, "still", "a", 5*time.Second); err != nil || got != "pong ping" {
		t.Fatalf("after an owner is known: %q, %v", got, err)
	}
}

// encode wraps msg for kind/id as another node's partition actor does.
func encode(t *testing.T, kind, id string, msg proto.Message, hops uint32) *wire.Envelope {
	t.Helper()
	b, err := proto.Marshal(msg)
	if err != nil {
		t.Fatal(err)
	}
	return &wire.Envelope{Kind: kind, Id: id, Type: string(msg.ProtoReflect().Descriptor().FullName()), Payload: b, Hops: hops}
}

// An envelope from another node for a partition this node owns reaches its
// actor, and the answer reaches the requester; one of a type this node
// does not know is dropped and counted, and the partition goes on.
func TestEnvelopesFromAnotherNode(t *testing.T) {
	t.Parallel()
	h, m, _ := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
	p := h.Partition("b")
	unknown := encode(t, "still", "b", wrapperspb.String("x"), 0)
	unknown.Type = "persona.wire.NoSuchMessage"
	h.system.Root.Send(h.parts[p], unknown)
	res, err := h.system.Root.RequestFuture(h.parts[p], encode(t, "still", "b", wrapperspb.String("remote"), 1), 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if got := res.(*wrapperspb.StringValue).Value; got != "pong remote" {
		t.Fatalf("answer %q", got)
	}
	if got := sample(t, m, envelopes("dropped_unknown_type")); got != 1 {
		t.Errorf("dropped_unknown_type = %v, want 1", got)
	}
	if got := sample(t, m, envelopes("received")); got != 1 {
		t.Errorf("received = %v, want 1", got)
	}
}

// A node that does not own a partition forwards what it gets for it to the
// owner it knows, one hop further, and drops an envelope that already made
// MaxHops hops.
func TestEnvelopesForwardedAtMostMaxHops(t *testing.T) {
	t.Parallel()
	h, m, _ := newPlacedHost(t, &table{addr: "198.18.0.250:1", known: true}, time.Minute)
	p := h.Partition("c")
	h.system.Root.Send(h.parts[p], encode(t, "still", "c", wrapperspb.String("x"), uint32(h.opts.MaxHops)))
	h.system.Root.Send(h.parts[p], encode(t, "still", "c", wrapperspb.String("x"), 0))
	h.Send("still", "c", wrapperspb.String("y"))
	deadline := time.Now().Add(5 * time.Second)
	for sample(t, m, envelopes("sent")) < 1 || sample(t, m, envelopes("forwarded")) < 1 || sample(t, m, envelopes("dropped_hops")) < 1 {
		if time.Now().After(deadline) {
			t.Fatalf("sent %v, forwarded %v, dropped_hops %v; want 1 each", sample(t, m, envelopes("sent")),
				sample(t, m, envelopes("forwarded")), sample(t, m, envelopes("dropped_hops")))
		}
		time.Sleep(10 * time.Millisecond)
	}
	if got := sample(t, m, envelopes("received")); got != 0 {
		t.Errorf("received = %v on a node that owns nothing", got)
	}
}

// PlacementChanged tells the active actors of kinds with Kind.Moved which
// partitions moved, and no other actor.
func TestMovedReachesTheKindsThatAsk(t *testing.T) {
	t.Parallel()
	h, _, moved := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
	for _, kind := range []string{"moved", "still"} {
		if _, err := ask(h, kind, "d", 5*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	h.PlacementChanged([]int{1, 3})
	select {
	case m := <-moved:
		if !m.Has(1) || !m.Has(3) || m.Has(0) || m.Has(2) {
			t.Fatalf("moved %v, want [1 3]", m.Partitions)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the actor of a kind with Moved was not told")
	}
	if _, err := ask(h, "still", "d", 5*time.Second); err != nil { // after the partitions' news, in order
		t.Fatal(err)
	}
	select {
	case m := <-moved:
		t.Fatalf("a second actor was told %v", m.Partitions)
	case <-time.After(100 * time.Millisecond):
	}
}

// numbered answers a string with the number of its activation.
type numbered struct{ n int64 }

func (a *numbered) Receive(ctx actor.Context) {
	if _, ok := ctx.Message().(*wrapperspb.StringValue); ok {
		ctx.Respond(wrapperspb.String(strconv.FormatInt(a.n, 10)))
	}
}

// A partition that moves to another node has its active actors stopped:
// should it come back, its actors start afresh from storage rather than
// from what they held in memory before the move.
func TestMovedAwayPartitionReleasesItsActors(t *testing.T) {
	t.Parallel()
	pl := &table{local: true, known: true}
	var activations atomic.Int64
	h, err := New(Options{Partitions: 4, PassivateAfter: time.Minute, Placement: pl},
		Kind{Name: "numbered", New: func(string, *IdleWatch) actor.Actor { return &numbered{n: activations.Add(1)} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	ask := func() string {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		res, err := h.Request(ctx, "numbered", "a", wrapperspb.String("which"))
		if err != nil {
			t.Fatal(err)
		}
		return res.(*wrapperspb.StringValue).Value
	}
	if got := ask(); got != "1" {
		t.Fatalf("first activation answered %q", got)
	}
	h.PlacementChanged([]int{0, 1, 2, 3}) // still local: the actor stays
	if got := ask(); got != "1" {
		t.Fatalf("an actor of a partition that stayed was restarted: %q", got)
	}
	pl.set("", false, false)
	h.PlacementChanged([]int{0, 1, 2, 3})
	pl.set("", true, true)
	h.PlacementChanged([]int{0, 1, 2, 3})
	if got := ask(); got != "2" {
		t.Fatalf("after its partition left and came back the actor answered %q, want a new activation", got)
	}
}

// An owner that becomes known without a PlacementChanged (a new leader
// whose lease begins to run) gets the messages held for it soon, not
// after HoldFor.
func TestHeldMessagesGoOnceAnOwnerIsKnownUntold(t *testing.T) {
	t.Parallel()
	pl := &table{}
	h, m, _ := newPlacedHost(t, pl, time.Minute)
	answer := askLater(h, "still", "g", 5*time.Second)
	waitEnvelopes(t, m, "held", 1)
	pl.set("", true, true) // and no PlacementChanged
	if err := <-answer; err != nil {
		t.Fatal(err)
	}
}
