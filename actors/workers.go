package actors

import (
	"runtime"
	"sync"
)

// workers is a protoactor dispatcher that runs mailboxes on a fixed number
// of goroutines, first come first served, yielding the processor after
// each mailbox. Rooms run on it: a fan-out to thousands of rooms then keeps
// at most that many goroutines runnable instead of thousands, so a client's
// request, which runs on goroutines of its own, waits for one room's turn
// at most, not for every room's. Room work never blocks on another actor's
// answer, so a fixed number of goroutines cannot deadlock.
type workers struct {
	mu      sync.Mutex
	ready   sync.Cond
	queue   []func() // from head on
	head    int
	stopped bool
	wg      sync.WaitGroup
}

// newWorkers starts n worker goroutines.
func newWorkers(n int) *workers {
	w := &workers{}
	w.ready.L = &w.mu
	w.wg.Add(n)
	for range n {
		go w.work()
	}
	return w
}

// Schedule queues a mailbox run; it never blocks.
func (w *workers) Schedule(fn func()) {
	w.mu.Lock()
	w.queue = append(w.queue, fn)
	w.mu.Unlock()
	w.ready.Signal()
}

// Throughput is how many messages a mailbox processes before it yields.
func (w *workers) Throughput() int { return 300 }

func (w *workers) work() {
	defer w.wg.Done()
	for {
		fn := w.next()
		if fn == nil {
			return
		}
		fn()
		runtime.Gosched()
	}
}

// next waits for a queued run; nil once stopped and drained.
func (w *workers) next() func() {
	w.mu.Lock()
	defer w.mu.Unlock()
	for w.head == len(w.queue) {
		if w.stopped {
			return nil
		}
		w.ready.Wait()
	}
	fn := w.queue[w.head]
	w.queue[w.head] = nil
	w.head++
	if w.head == len(w.queue) {
		w.queue, w.head = w.queue[:0], 0
	} else if w.head > 1024 && w.head*2 > len(w.queue) {
		w.queue, w.head = append(w.queue[:0], w.queue[w.head:]...), 0
	}
	return fn
}

// stop ends the workers once the queue is drained, and waits for them.
func (w *workers) stop() {
	w.mu.Lock()
	w.stopped = true
	w.mu.Unlock()
	w.ready.Broadcast()
	w.wg.Wait()
}
