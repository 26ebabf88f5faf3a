package host

import (
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// workers runs mailboxes (of MailboxWorkers kinds: rooms) on a fixed number
// of goroutines, yielding the processor after each mailbox. A fan-out to
// thousands of rooms then keeps a few goroutines runnable instead of
// thousands, and a client's request, which runs on goroutines of its own,
// waits for one room's turn at most, not for every room's. Every netEvery a
// worker yields to the network (netYield), so that a request is read within
// that time even while every processor is busy. Actors with an urgent
// message waiting (a client's request) go in the fast lane, ahead of those
// with only background work (propagation). Such actors never block on
// another actor's answer, so a fixed number of goroutines cannot deadlock.
type workers struct {
	mu         sync.Mutex
	ready      sync.Cond
	fast, slow fifo
	stopped    bool
	wg         sync.WaitGroup
	net        *netYield
	netEvery   time.Duration // how long a worker runs mailboxes before it yields to the network
}

// newWorkers starts n worker goroutines that yield to the network every
// netEvery.
func newWorkers(n int, netEvery time.Duration) *workers {
	w := &workers{netEvery: netEvery}
	w.net, _ = newNetYield() // without it workers yield with Gosched alone
	w.ready.L = &w.mu
	w.wg.Add(n)
	for range n {
		go w.work()
	}
	return w
}

// schedule queues a mailbox run; it never blocks.
func (w *workers) schedule(fn func(), fast bool) {
	w.mu.Lock()
	if fast {
		w.fast.push(fn)
	} else {
		w.slow.push(fn)
	}
	w.mu.Unlock()
	w.ready.Signal()
}

func (w *workers) work() {
	defer w.wg.Done()
	polled := time.Now()
	for {
		fn := w.next()
		if fn == nil {
			return
		}
		fn()
		if now := time.Now(); now.Sub(polled) < w.netEvery {
			runtime.Gosched()
		} else {
			w.net.yield()
			polled = now
		}
	}
}

// next waits for a queued run, fast lane first; nil once stopped and
// drained.
func (w *workers) next() func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.fast.empty() && w.slow.empty() {
		if w.stopped {
			return nil
		}
		w.ready.Wait()
	}
	if !w.fast.empty() {
		return w.fast.pop()
	}
	return w.slow.pop()
}

// stop ends the workers once the queues are drained, and waits for them.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.ready.Broadcast()
	w.wg.Wait()
	w.net.close()
}

// fifo is a queue of mailbox runs.
type fifo struct {
	q    []func()
	head int
}

func (f *fifo) empty() bool    { return f.head == len(f.q) }
func (f *fifo) push(fn func()) { f.q = append(f.q, fn) }

func (f *fifo) pop() func() {
	fn := f.q[f.head]
	f.q[f.head] = nil
	f.head++
	switch {
	case f.head == len(f.q):
		f.q, f.head = f.q[:0], 0
	case f.head > 1024 && f.head*2 > len(f.q):
		// Move the waiting runs to the front and clear the slots they
		// leave: a stale run would keep its (passivated) actor in memory.
		n := copy(f.q, f.q[f.head:])
		clear(f.q[n:])
		f.q, f.head = f.q[:n], 0
	}
	return fn
}

// lane is one actor's dispatcher on the workers and a middleware of its
// mailbox: a message its kind calls urgent puts the actor's next turn in
// the fast lane.
type lane struct {
	w          *workers
	urgent     func(msg any) bool
	throughput int
	fast       atomic.Bool
}

// Schedule queues the actor's mailbox run in its lane.
func (l *lane) Schedule(fn func()) { l.w.schedule(fn, l.fast.Swap(false)) }

// Throughput is how many messages the mailbox processes before it yields.
func (l *lane) Throughput() int { return l.throughput }

// MessagePosted marks the actor fast for an urgent message.
func (l *lane) MessagePosted(m any) {
	if env, ok := m.(*actor.MessageEnvelope); ok {
		m = env.Message
	}
	if l.urgent != nil && l.urgent(m) {
		l.fast.Store(true)
	}
}

// MailboxStarted is part of actor.MailboxMiddleware.
func (l *lane) MailboxStarted() {}

// MessageReceived is part of actor.MailboxMiddleware.
func (l *lane) MessageReceived(any) {}

// MailboxEmpty is part of actor.MailboxMiddleware.
func (l *lane) MailboxEmpty() {}
