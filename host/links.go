package host

import (
	"net"
	"sync"
	"time"

	"github.com/asynkron/protoactor-go/actor"
	"github.com/asynkron/protoactor-go/remote"
)

// links keeps protoactor's remote from dialling a node that is down.
// Once a connection attempt fails, protoactor's endpoint writer for that
// address sleeps 2 s with what is sent there queued, then drops it all: a
// node back within those 2 s is not reached until they end, and what was
// sent to it meanwhile is lost. So the host hands remote a message for
// another node only while remote holds a connection to it, or once a
// connection of the host's own (a probe) reached it since remote's last
// one ended; until then it probes, probeGap after a probe that failed,
// and the partition actors hold their messages (Options.HoldFor).
type links struct {
	mu     sync.Mutex
	state  map[string]*link
	probe  func(addr string) error
	opened func(addr string)          // after a probe reached addr, outside mu
	queued map[string][]queued        // broadcasts waiting on a probe, by address, in order
	send   func(to *actor.PID, m any) // hands a message to remote
}

// queued is a message that waits for its address to be usable.
type queued struct {
	to *actor.PID
	m  any
}

// link is what the host knows of its way to one address.
type link struct {
	open    bool      // remote is connected, or a probe reached the node since remote's last connection ended
	probing bool      // a probe runs
	next    time.Time // no probe before
}

const (
	// probeGap is how long after a failed probe of an address the next
	// one may start.
	probeGap = 50 * time.Millisecond
	// probeTimeout bounds a probe's connection attempt.
	probeTimeout = time.Second
	// maxQueued is how many broadcasts wait on one address's probe; beyond
	// it the oldest are dropped.
	maxQueued = 64
)

func newLinks(send func(*actor.PID, any), opened func(string)) *links {
	return &links{state: map[string]*link{}, queued: map[string][]queued{},
		probe: dialProbe, opened: opened, send: send}
}

// dialProbe reaches addr over TCP and hangs up.
func dialProbe(addr string) error {
	c, err := net.DialTimeout("tcp", addr, probeTimeout)
	if err != nil {
		return err
	}
	return c.Close()
}

// usable reports whether a message may go to addr now; if not, it starts
// a probe unless one runs or ran less than probeGap ago.
func (l *links) usable(addr string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.usableLocked(addr)
}

func (l *links) usableLocked(addr string) bool {
	k := l.link(addr)
	if k.open {
		return true
	}
	if !k.probing && !time.Now().Before(k.next) {
		k.probing = true
		go func() { l.probed(addr, l.probe(addr)) }()
	}
	return false
}

// sendOrQueue sends m to pid if its address is usable, else queues it
// until a probe reaches the address (dropping the oldest beyond
// maxQueued, and all when the probe fails): a broadcast to a node that
// starts reaches it at once, in order.
func (l *links) sendOrQueue(pid *actor.PID, m any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.usableLocked(pid.Address) {
		l.flushLocked(pid.Address)
		l.send(pid, m)
		return
	}
	q := l.queued[pid.Address]
	if len(q) == maxQueued {
		q = q[1:]
	}
	l.queued[pid.Address] = append(q, queued{pid, m})
}

// probed records a probe's outcome; a node reached gets the broadcasts
// queued for it, and opened is told.
func (l *links) probed(addr string, err error) {
	l.mu.Lock()
	k := l.state[addr]
	k.probing = false
	if err != nil {
		k.next = time.Now().Add(probeGap)
		delete(l.queued, addr)
		l.mu.Unlock()
		return
	}
	k.open = true
	l.flushLocked(addr)
	l.mu.Unlock()
	l.opened(addr)
}

// flushLocked sends what waits on addr, in order.
func (l *links) flushLocked(addr string) {
	for _, q := range l.queued[addr] {
		l.send(q.to, q.m)
	}
	delete(l.queued, addr)
}

// event follows remote's connections: a connection made opens the link,
// one ended (broken, or an attempt that failed) closes it.
func (l *links) event(e any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch e := e.(type) {
	case *remote.EndpointConnectedEvent:
		l.link(e.Address).open = true
	case *remote.EndpointTerminatedEvent:
		l.link(e.Address).open = false
	}
}

func (l *links) link(addr string) *link {
	k := l.state[addr]
	if k == nil {
		k = &link{}
		l.state[addr] = k
	}
	return k
}
