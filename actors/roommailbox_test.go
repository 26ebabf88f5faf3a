package actors

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// recorder is a MessageInvoker that records what a mailbox hands it and
// fails the test if two turns ever overlap.
type recorder struct {
	t        *testing.T
	mu       sync.Mutex
	user     []any
	sys      []any
	failures []any
	running  atomic.Int32
	panicOn  any
}

func (r *recorder) enter() func() {
	if r.running.Add(1) != 1 {
		r.t.Error("two turns of one mailbox ran at once")
	}
	return func() { r.running.Add(-1) }
}

func (r *recorder) InvokeSystemMessage(m any) {
	defer r.enter()()
	r.mu.Lock()
	r.sys = append(r.sys, m)
	r.mu.Unlock()
}

func (r *recorder) InvokeUserMessage(m any) {
	defer r.enter()()
	if m == r.panicOn {
		panic("boom")
	}
	r.mu.Lock()
	r.user = append(r.user, m)
	r.mu.Unlock()
}

func (r *recorder) EscalateFailure(_ any, m any) {
	r.mu.Lock()
	r.failures = append(r.failures, m)
	r.mu.Unlock()
}

func (r *recorder) count() (user, sys, failures int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.user), len(r.sys), len(r.failures)
}

func waitFor(t *testing.T, what string, ok func() bool) {
	t.Helper()
	for start := time.Now(); !ok(); time.Sleep(time.Millisecond) {
		if time.Since(start) > 5*time.Second {
			t.Fatalf("timed out waiting: %s", what)
		}
	}
}

// A room's mailbox hands every message over once, in the order each
// sender posted them, one turn at a time, across turns of roomThroughput
// messages; a suspended mailbox holds user messages until resumed; a
// panic goes to the supervisor and the messages after it still arrive; an
// idle mailbox keeps no buffer.
func TestRoomMailbox(t *testing.T) {
	w := newWorkers(2)
	defer w.stop()
	rec := &recorder{t: t, panicOn: "poison"}
	d := &depth{}
	mb := newRoomMailbox(w, d)
	mb.RegisterHandlers(rec, nil)

	const senders, each = 4, 1000
	type msg struct{ from, n int }
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := range each {
				mb.PostUserMessage(msg{s, n})
				if n%100 == 0 {
					mb.PostSystemMessage(n)
				}
			}
		}()
	}
	wg.Wait()
	waitFor(t, "every message handed over", func() bool { u, s, _ := rec.count(); return u == senders*each && s == senders*10 })
	next := make([]int, senders)
	for _, m := range rec.user {
		m := m.(msg)
		if m.n != next[m.from] {
			t.Fatalf("sender %d: got message %d, want %d", m.from, m.n, next[m.from])
		}
		next[m.from]++
	}

	mb.PostSystemMessage(&actor.SuspendMailbox{})
	mb.PostUserMessage("held")
	time.Sleep(20 * time.Millisecond)
	if u, _, _ := rec.count(); u != senders*each || mb.UserMessageCount() != 1 {
		t.Fatalf("a suspended mailbox handed over a user message (%d queued)", mb.UserMessageCount())
	}
	mb.PostSystemMessage(&actor.ResumeMailbox{})
	waitFor(t, "the held message after resume", func() bool { u, _, _ := rec.count(); return u == senders*each+1 })

	mb.PostUserMessage("poison")
	mb.PostUserMessage("after")
	waitFor(t, "the message after a panic", func() bool { u, _, f := rec.count(); return u == senders*each+2 && f == 1 })
	if rec.failures[0] != "poison" {
		t.Fatalf("escalated %v, want the poison message", rec.failures[0])
	}

	waitFor(t, "the mailbox idle", func() bool { mb.mu.Lock(); defer mb.mu.Unlock(); return !mb.scheduled })
	if mb.user.q != nil || mb.sys.q != nil || mb.UserMessageCount() != 0 || d.n.Load() != 0 {
		t.Fatalf("idle mailbox: user buffer %d, system buffer %d, %d counted, depth %d", cap(mb.user.q), cap(mb.sys.q), mb.UserMessageCount(), d.n.Load())
	}
}
