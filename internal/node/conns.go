package node

import (
	"context"
	"errors"
	"net"
	"net/http"
	"sync"
	"time"
)

// A stopping node closes the client listener's connections one by one:
// every answer while stopping says "Connection: close", the listener
// closes, each connection ends after its answer, and only then does the
// server shut down. net/http's Shutdown alone drops a request read after
// it began (on a connection it had just accepted, or one idle that a
// client took again), and that client cannot tell whether its write was
// applied.

// freshGrace is how long a stop waits for the request of a connection
// accepted just before the listener closed.
const freshGrace = 500 * time.Millisecond

// conns tracks the client listener's connections: each one's state and
// since when.
type conns struct {
	mu   sync.Mutex
	open map[net.Conn]connState
}

type connState struct {
	state http.ConnState
	since time.Time
}

// track is the server's ConnState hook.
func (c *conns) track(conn net.Conn, s http.ConnState) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if s == http.StateClosed || s == http.StateHijacked {
		delete(c.open, conn)
		return
	}
	c.open[conn] = connState{s, time.Now()}
}

// busy reports whether a connection is serving a request, or was
// accepted less than freshGrace ago and may be sending one.
func (c *conns) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, st := range c.open {
		if st.state == http.StateActive || (st.state == http.StateNew && time.Since(st.since) < freshGrace) {
			return true
		}
	}
	return false
}

// closeFresh closes the connections that never sent a request (a
// client's spare connection, dialed for a request another one took):
// net/http would wait five seconds for each. Shutdown runs it.
func (c *conns) closeFresh() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for conn, st := range c.open {
		if st.state == http.StateNew {
			_ = conn.Close()
		}
	}
}

// closingWhileStopping answers every request with "Connection: close"
// once the node is stopping.
func (n *Node) closingWhileStopping(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.phase.Load() == phaseStopping {
			w.Header().Set("Connection", "close")
		}
		h.ServeHTTP(w, r)
	})
}

// closeClient closes the client listener, waits (up to ctx) until no
// connection serves or may be sending a request, then shuts the server
// down: the connections left idle since before the stop are closed.
func (n *Node) closeClient(ctx context.Context) error {
	if err := n.clientLn.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for n.conns.busy() {
		select {
		case <-ctx.Done():
			_ = n.client.Close()
			return ctx.Err()
		case <-tick.C:
		}
	}
	if err := n.client.Shutdown(ctx); err != nil && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

// closedByStop reports whether err is a listener's, closed by Stop.
func (n *Node) closedByStop(err error) bool {
	return n.phase.Load() == phaseStopping && errors.Is(err, net.ErrClosed)
}
