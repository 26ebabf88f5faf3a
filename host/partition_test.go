package host

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"go.uber.org/goleak"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"persona/metrics"
)

// newTestHost starts a host with one kind, "test", made by newActor.
func newTestHost(t *testing.T, passivateAfter time.Duration, newActor func(h *Host, idle *IdleWatch) actor.Actor) (*Host, *metrics.Metrics) {
	t.Helper()
	m := metrics.New(nil)
	var h *Host
	h, err := New(Options{Partitions: 4, PassivateAfter: passivateAfter, Metrics: m},
		Kind{Name: "test", New: func(_ string, idle *IdleWatch) actor.Actor { return newActor(h, idle) }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(h.Stop)
	return h, m
}

// ping asks the test actor id and fails the test unless it answers.
func ping(t *testing.T, h *Host, id string, timeout time.Duration) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := h.Request(ctx, "test", id, wrapperspb.String("ping")); err != nil {
		t.Fatalf("ping %s: %v", id, err)
	}
}

// An actor busy when its idle timeout fires is passivated once it is idle:
// the watch fires once, so the actor must arm it again.
func TestBusyActorPassivatesOnceIdle(t *testing.T) {
	t.Parallel()
	stopped := make(chan struct{})
	h, _ := newTestHost(t, 50*time.Millisecond, func(h *Host, idle *IdleWatch) actor.Actor { return &busyOnce{h: h, idle: idle, stopped: stopped} })
	ping(t, h, "busy", 5*time.Second)
	select {
	case <-stopped:
	case <-time.After(5 * time.Second):
		t.Fatal("an actor busy at its first idle timeout never passivated")
	}
}

// busyOnce is busy when its first idle timeout fires, idle at the next.
type busyOnce struct {
	h        *Host
	idle     *IdleWatch
	timeouts int
	stopped  chan struct{}
}

func (a *busyOnce) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		a.idle.Set(a.h.PassivateAfter())
	case *IdleTimeout:
		a.timeouts++
		a.h.Idle(ctx, a.idle, a.timeouts == 1)
	case *StopWhenIdle:
		ctx.Stop(ctx.Self())
		close(a.stopped)
	case *wrapperspb.StringValue:
		ctx.Respond(wrapperspb.String("pong"))
	}
}

// An actor that turned busy after asking to stop, waiting on a message the
// partition now holds, asks to be routed to again: the message reaches it,
// and a request to it is answered.
func TestActorBusyWhenToldToStopResumes(t *testing.T) {
	t.Parallel()
	h, _ := newTestHost(t, 50*time.Millisecond, func(h *Host, idle *IdleWatch) actor.Actor { return &awaitsHeld{h: h, idle: idle} })
	ping(t, h, "await", 5*time.Second)
	time.Sleep(200 * time.Millisecond) // the actor asks to stop, then turns busy
	ping(t, h, "await", 2*time.Second)
}

// awaitsHeld asks to stop at its first idle timeout and at once turns busy
// until its next message, which comes through the partition.
type awaitsHeld struct {
	h     *Host
	idle  *IdleWatch
	asked bool
	busy  bool
}

func (a *awaitsHeld) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		a.idle.Set(a.h.PassivateAfter())
	case *IdleTimeout:
		if !a.asked {
			a.asked, a.busy = true, true
			a.h.Idle(ctx, a.idle, false)
		}
	case *StopWhenIdle:
		if a.busy {
			a.h.StayActive(ctx, a.idle)
		} else {
			ctx.Stop(ctx.Self())
		}
	case *wrapperspb.StringValue:
		a.busy = false
		ctx.Respond(wrapperspb.String("pong"))
	}
}

// Options are checked before anything starts.
func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, o := range []Options{
		{},
		{Partitions: 0, PassivateAfter: time.Second},
		{Partitions: 1 << 17, PassivateAfter: time.Second},
		{Partitions: 4},
		{Partitions: 4, PassivateAfter: time.Second, Workers: -1},
		{Partitions: 4, PassivateAfter: time.Second, NetYieldEvery: -time.Millisecond},
		{Partitions: 4, PassivateAfter: time.Second, WorkerThroughput: -1},
		{Partitions: 4, PassivateAfter: time.Second, RequestTimeout: -time.Second},
	} {
		if h, err := New(o); err == nil {
			h.Stop()
			t.Errorf("New(%+v) = nil error", o)
		}
	}
	if _, err := New(Options{Partitions: 4, PassivateAfter: time.Second}, Kind{Name: "a", New: func(string, *IdleWatch) actor.Actor { return nil }},
		Kind{Name: "a", New: func(string, *IdleWatch) actor.Actor { return nil }}); err == nil {
		t.Error("a kind registered twice was accepted")
	}
}

// A stopped host leaves no goroutine behind: its partitions, actors,
// workers, network-yield reader, metrics sampler and idle timers all end
// with Stop. protoactor's dead-letter throttle goroutine is left out: it
// ends by itself one throttle interval after a message met a stopped actor.
func TestStopLeavesNoGoroutines(t *testing.T) {
	defer goleak.VerifyNone(t, goleak.IgnoreCurrent(),
		goleak.IgnoreTopFunction("github.com/asynkron/protoactor-go/actor.NewDeadLetter.NewThrottle.func4.1"))
	var h *Host
	h, err := New(Options{Partitions: 4, PassivateAfter: 20 * time.Millisecond, Metrics: metrics.New(nil)},
		Kind{Name: "test", New: func(_ string, idle *IdleWatch) actor.Actor {
			return &busyOnce{h: h, idle: idle, stopped: make(chan struct{})}
		}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		ping(t, h, fmt.Sprint("a", i), 5*time.Second)
	}
	time.Sleep(50 * time.Millisecond) // some idle timers fire, others are armed
	h.Stop()
}
