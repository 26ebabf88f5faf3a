package host

import (
	"os"
	"runtime"
)

// netYield lets a goroutine that runs for long stretches give way to the
// network. runtime.Gosched does not: while every processor has work, Go
// polls the network only from its monitor thread, at most every 10 ms, so
// a client's request waits that long to be read. A yield makes the
// processor poll at once: it writes a byte to a pipe whose reading end the
// netpoller watches, and parks until the goroutine reading that pipe, woken
// by the poll, resumes it. The poll that wakes it also wakes every
// connection that is ready. It costs a few microseconds and never sleeps,
// unlike a short time.Sleep, which an idle processor rounds up to a
// millisecond.
type netYield struct {
	w      *os.File
	resume chan struct{}
	b      [1]byte
}

// newNetYield starts the pipe's reader; close stops it.
func newNetYield() (*netYield, error) {
	r, w, err := os.Pipe()
	if err != nil {
		return nil, err
	}
	y := &netYield{w: w, resume: make(chan struct{})}
	go func() {
		defer r.Close()
		buf := make([]byte, 1)
		for {
			if _, err := r.Read(buf); err != nil {
				return
			}
			y.resume <- struct{}{}
		}
	}()
	return y, nil
}

// yield returns after the network has been polled; without a pipe (it
// could not be opened) it is runtime.Gosched.
func (y *netYield) yield() {
	if y == nil {
		runtime.Gosched()
		return
	}
	if _, err := y.w.Write(y.b[:]); err != nil {
		runtime.Gosched()
		return
	}
	<-y.resume
}

// close ends the reader; the yield must not be used afterwards.
func (y *netYield) close() {
	if y != nil {
		y.w.Close()
	}
}
