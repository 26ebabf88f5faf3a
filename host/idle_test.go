package host

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// idleProbe sets its watch to start on Started, then does what its string
// messages say ("set <duration>", "stop", anything else: answer), and
// reports each IdleTimeout with the time since it last began a message.
type idleProbe struct {
	idle     *IdleWatch
	start    []time.Duration // Set in this order on Started
	last     time.Time       // when the probe last began a message
	maxGap   time.Duration   // the longest time between two strings
	timeouts chan<- time.Duration
	self     chan<- *actor.PID
}

func (p *idleProbe) Receive(ctx actor.Context) {
	now := time.Now()
	switch m := ctx.Message().(type) {
	case *actor.Started:
		for _, d := range p.start {
			p.idle.Set(d)
		}
		if p.self != nil {
			p.self <- ctx.Self()
		}
	case *IdleTimeout:
		p.timeouts <- now.Sub(p.last)
		return
	case *wrapperspb.StringValue:
		if !p.last.IsZero() {
			p.maxGap = max(p.maxGap, now.Sub(p.last))
		}
		if s, ok := strings.CutPrefix(m.Value, "set "); ok {
			d, _ := time.ParseDuration(s)
			p.idle.Set(d)
		}
		if m.Value == "stop" {
			ctx.Stop(ctx.Self())
			return
		}
		ctx.Respond(wrapperspb.Int64(int64(p.maxGap)))
	}
	p.last = now
}

// newProbeHost starts a host whose test actors are idle probes setting
// start on Started; it returns their IdleTimeouts and their PIDs as they
// start.
func newProbeHost(t *testing.T, start ...time.Duration) (*Host, <-chan time.Duration, <-chan *actor.PID) {
	t.Helper()
	timeouts, self := make(chan time.Duration, 16), make(chan *actor.PID, 16)
	h, _ := newTestHost(t, time.Hour, func(_ *Host, idle *IdleWatch) actor.Actor {
		return &idleProbe{idle: idle, start: start, timeouts: timeouts, self: self}
	})
	return h, timeouts, self
}

// say sends s to the probe id and returns the longest time it saw between
// two strings.
func say(t *testing.T, h *Host, id, s string) time.Duration {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	res, err := h.Request(ctx, "test", id, wrapperspb.String(s))
	if err != nil {
		t.Fatalf("say %q to %s: %v", s, id, err)
	}
	return time.Duration(res.(*wrapperspb.Int64Value).Value)
}

// waitTimeout returns the next IdleTimeout's time since the last message,
// failing the test if none comes within 5 s.
func waitTimeout(t *testing.T, timeouts <-chan time.Duration) time.Duration {
	t.Helper()
	select {
	case gap := <-timeouts:
		return gap
	case <-time.After(5 * time.Second):
		t.Fatal("no IdleTimeout")
		return 0
	}
}

// noTimeout fails the test if an IdleTimeout comes within wait.
func noTimeout(t *testing.T, timeouts <-chan time.Duration, wait time.Duration) {
	t.Helper()
	select {
	case gap := <-timeouts:
		t.Fatalf("IdleTimeout %v after the last message", gap)
	case <-time.After(wait):
	}
}

// An actor that gets no message for the duration set gets IdleTimeout,
// once: the watch is disarmed until the actor sets it again.
func TestIdleTimeoutAfterQuiet(t *testing.T) {
	t.Parallel()
	const d = 50 * time.Millisecond
	h, timeouts, _ := newProbeHost(t, d)
	say(t, h, "a", "ping")
	if gap := waitTimeout(t, timeouts); gap < d {
		t.Fatalf("IdleTimeout %v after the last message, want >= %v", gap, d)
	}
	noTimeout(t, timeouts, 5*d)
	say(t, h, "a", "set 50ms")
	if gap := waitTimeout(t, timeouts); gap < d {
		t.Fatalf("IdleTimeout %v after the last message once set again, want >= %v", gap, d)
	}
}

// An actor whose messages come more often than the duration set gets no
// IdleTimeout while they come, and gets one once they stop.
func TestIdleTimeoutWaitsWhileMessagesCome(t *testing.T) {
	t.Parallel()
	const d = 250 * time.Millisecond
	h, timeouts, _ := newProbeHost(t, d)
	var maxGap time.Duration
	for end := time.Now().Add(4 * d); time.Now().Before(end); {
		maxGap = say(t, h, "a", "ping")
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case gap := <-timeouts:
		// Only a stall of the machine longer than d allows this.
		if gap < d || maxGap < d {
			t.Fatalf("IdleTimeout %v after the last message while messages came at most %v apart, d = %v", gap, maxGap, d)
		}
	default:
	}
	if gap := waitTimeout(t, timeouts); gap < d {
		t.Fatalf("IdleTimeout %v after the last message, want >= %v", gap, d)
	}
}

// Set replaces the duration set before, longer or shorter.
func TestIdleSetReplacesDuration(t *testing.T) {
	t.Parallel()
	h, timeouts, _ := newProbeHost(t, 20*time.Millisecond, time.Hour)
	say(t, h, "a", "ping")
	noTimeout(t, timeouts, 300*time.Millisecond)
	say(t, h, "a", "set 50ms")
	if gap := waitTimeout(t, timeouts); gap < 50*time.Millisecond {
		t.Fatalf("IdleTimeout %v after the last message, want >= 50ms", gap)
	}
}

// A tick of an arming that Set replaced gives no IdleTimeout and does not
// move the one due: the actor gets a single IdleTimeout, after the duration
// it set last.
func TestIdleStaleTickIgnored(t *testing.T) {
	t.Parallel()
	h, timeouts, self := newProbeHost(t, time.Hour)
	say(t, h, "a", "ping")
	pid := <-self
	h.Post(pid, &idleTick{gen: 0}) // older than the arming on Started
	say(t, h, "a", "set 50ms")
	for gen := range uint64(2) { // the arming on Started and the one before
		h.Post(pid, &idleTick{gen: gen})
	}
	if gap := waitTimeout(t, timeouts); gap < 50*time.Millisecond {
		t.Fatalf("IdleTimeout %v after the last message, want >= 50ms", gap)
	}
	noTimeout(t, timeouts, 300*time.Millisecond)
}

// An actor that stops with its watch armed leaves no timer behind: nothing
// is posted to it once it is gone.
func TestIdleWatchStopsWithActor(t *testing.T) {
	t.Parallel()
	h, _, _ := newProbeHost(t, 100*time.Millisecond)
	say(t, h, "a", "ping")
	h.Send("test", "a", wrapperspb.String("stop"))
	time.Sleep(400 * time.Millisecond) // the timer would have fired
	if n := h.DeadLetters(); n > 0 {
		t.Fatalf("%d dead letters", n)
	}
}
