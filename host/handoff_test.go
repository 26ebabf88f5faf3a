package host

import (
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"persona/metrics"
	"persona/wire"
)

// gated answers "pong" to a string, the first one only once gate closes,
// telling taken when it takes it.
type gated struct {
	gate   <-chan struct{}
	taken  chan<- struct{}
	passed bool
}

func (g *gated) Receive(ctx actor.Context) {
	if m, ok := ctx.Message().(*wrapperspb.StringValue); ok {
		if !g.passed {
			g.taken <- struct{}{}
			<-g.gate
			g.passed = true
		}
		ctx.Respond(wrapperspb.String("pong " + m.Value))
	}
}

// An actor's partition moves away while requests wait in its mailbox:
// the one it is taking is answered by it, the queued ones are answered
// with a Reroute, sent again by their requesters' host, held while no
// owner is known and answered by the actor started where the partition
// is now.
func TestRequestsQueuedAtAMoveAreSentAgain(t *testing.T) {
	t.Parallel()
	pl := &table{}
	pl.set("", true, true)
	m := metrics.New(nil)
	gate, taken := make(chan struct{}), make(chan struct{}, 2)
	h, err := New(Options{Partitions: 1, PassivateAfter: time.Minute, Metrics: m, Placement: pl},
		Kind{Name: "gated", New: func(string, *IdleWatch) actor.Actor { return &gated{gate: gate, taken: taken} }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	answers := make(chan error, 3)
	request := func() {
		got, err := ask(h, "gated", "a", 10*time.Second)
		if err == nil && got != "pong ping" {
			err = &unexpected{got}
		}
		answers <- err
	}
	go request()
	select {
	case <-taken:
	case <-time.After(5 * time.Second):
		t.Fatal("the first request never reached the actor")
	}
	go request()
	go request()
	deadline := time.Now().Add(5 * time.Second)
	for h.depths["gated"].n.Load() < 2 { // both in the actor's mailbox
		if time.Now().After(deadline) {
			t.Fatal("the requests never queued")
		}
		time.Sleep(time.Millisecond)
	}
	pl.set("", false, false) // moving: no owner known
	h.PlacementChanged([]int{0})
	time.Sleep(200 * time.Millisecond) // the release reaches the partition
	close(gate)
	select {
	case err := <-answers:
		if err != nil {
			t.Fatalf("the request under way: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request under way was not answered")
	}
	deadline = time.Now().Add(5 * time.Second)
	for sample(t, m, envelopes("rerouted")) < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the queued requests were not rerouted")
		}
		time.Sleep(time.Millisecond)
	}
	pl.set("", true, true) // the partition is back: its owner here again
	h.PlacementChanged([]int{0})
	for range 2 {
		select {
		case err := <-answers:
			if err != nil {
				t.Fatalf("a queued request: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a queued request was not answered")
		}
	}
}

// A request the host drops, held too long for want of an owner, is
// answered with a Reroute and sent again by its requester's host, which
// holds it anew: once an owner is known, it is answered within its time.
func TestRequestsHeldTooLongAreSentAgain(t *testing.T) {
	t.Parallel()
	pl := &table{}
	h, m, _ := newPlacedHost(t, pl, 50*time.Millisecond)
	answer := askLater(h, "still", "e", 10*time.Second)
	waitEnvelopes(t, m, "dropped_no_owner", 2)
	waitEnvelopes(t, m, "rerouted", 2)
	pl.set("", true, true)
	h.PlacementChanged(nil)
	select {
	case err := <-answer:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the request was not answered once an owner was known")
	}
}

// A request forwarded MaxHops times is dropped with a Reroute to its
// requester, not left to wait out its time.
func TestRequestsForwardedTooOftenAreRefused(t *testing.T) {
	t.Parallel()
	h, _, _ := newPlacedHost(t, &table{addr: "198.18.0.250:1", known: true}, time.Minute)
	p := h.Partition("f")
	res, err := h.system.Root.RequestFuture(h.parts[p], encode(t, "still", "f", wrapperspb.String("x"), uint32(h.opts.MaxHops)), 5*time.Second).Result()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.(*wire.Reroute); !ok {
		t.Fatalf("answered %T, want *wire.Reroute", res)
	}
}
