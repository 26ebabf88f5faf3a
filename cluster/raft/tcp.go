package raft

import (
	"bufio"
	"cmp"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// TCPOptions configure a TCPTransport. A zero field takes the default its
// comment names.
type TCPOptions struct {
	// NodeID is this node's id, told to every peer it connects to.
	// Required.
	NodeID uint64
	// Listen is the address to listen on; port 0 picks a free one (Addr
	// tells which). Required.
	Listen string
	// Peers maps the other nodes' ids to their addresses; SetPeer changes
	// it.
	Peers map[uint64]string
	// Logger receives connection errors at debug level, and refused
	// peers (Keys) at warn; nil discards them.
	Logger *slog.Logger
	// DialTimeout bounds a connection attempt, and the wait for the
	// challenge with Keys. Default 1 s.
	DialTimeout time.Duration
	// RedialAfter is how long after a failed attempt batches to that peer
	// are dropped before the next attempt. Default 100 ms.
	RedialAfter time.Duration
	// WriteTimeout bounds one write to a peer; a peer that does not read
	// loses its connection. Default 5 s.
	WriteTimeout time.Duration
	// QueueBatches is how many batches may wait for one peer's writer
	// before Send drops more. Default 256.
	QueueBatches int
	// MaxFrameBytes is the largest frame a reader accepts, and so the
	// largest message a writer sends (a snapshot travels in one frame;
	// others share frames of a few MiB). Default 256 MiB.
	MaxFrameBytes int
	// Keys are the cluster's shared keys (those of
	// cluster.gossip_key_file). With keys, a connection is read only once
	// its dialer proved it holds one of them, and this node proves it
	// holds the first (tcpauth.go). Without, connections are not
	// authenticated.
	Keys [][]byte
}

// TCPTransport is a Transport over TCP: one connection to each peer,
// which this node dials and writes, and one from each peer, which it
// reads. A writer writes everything queued for its peer as one frame.
type TCPTransport struct {
	opts TCPOptions
	keys [][]byte // derived from opts.Keys: peerKeys
	ln   net.Listener
	recv Receiver

	mu     sync.Mutex
	addrs  map[uint64]string
	peers  map[uint64]*peer
	conns  map[net.Conn]struct{} // accepted
	closed bool
	wg     sync.WaitGroup

	warned      time.Time // the last warning of a refused connection
	refused     int       // connections refused since
	warnedLarge time.Time // the last warning of a message over the frame limit
}

// peer is the writing side towards one node.
type peer struct {
	id    uint64
	queue chan []Envelope
	stop  chan struct{}
	conn  net.Conn // the writer's connection, under TCPTransport.mu
}

// end stops p's writer and breaks off a write under way. Under
// TCPTransport.mu.
func (p *peer) end() {
	close(p.stop)
	if p.conn != nil {
		p.conn.Close()
	}
}

// handshake opens every connection: a magic number, a version and the
// dialling node's id (tcpauth.go adds a challenge with keys).
const (
	tcpMagic   = 0x70726166 // "praf"
	tcpVersion = 1
)

// ListenTCP starts listening; messages are read once the Driver starts
// the transport.
func ListenTCP(opts TCPOptions) (*TCPTransport, error) {
	opts.DialTimeout = cmp.Or(opts.DialTimeout, time.Second)
	opts.RedialAfter = cmp.Or(opts.RedialAfter, 100*time.Millisecond)
	opts.WriteTimeout = cmp.Or(opts.WriteTimeout, 5*time.Second)
	opts.QueueBatches = cmp.Or(opts.QueueBatches, 256)
	opts.MaxFrameBytes = cmp.Or(opts.MaxFrameBytes, 256<<20)
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.NodeID == 0 || opts.Listen == "" {
		return nil, errors.New("raft tcp transport: NodeID and Listen must be set")
	}
	ln, err := net.Listen("tcp", opts.Listen)
	if err != nil {
		return nil, fmt.Errorf("raft tcp transport: %w", err)
	}
	t := &TCPTransport{opts: opts, keys: peerKeys(opts.Keys), ln: ln, addrs: map[uint64]string{}, peers: map[uint64]*peer{}, conns: map[net.Conn]struct{}{}}
	for id, addr := range opts.Peers {
		t.addrs[id] = addr
	}
	return t, nil
}

// Addr returns the address the transport listens on.
func (t *TCPTransport) Addr() net.Addr { return t.ln.Addr() }

// SetPeer sets node id's address; a connection to an old address is
// closed.
func (t *TCPTransport) SetPeer(id uint64, addr string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.addrs[id] == addr {
		return
	}
	t.addrs[id] = addr
	if p := t.peers[id]; p != nil {
		p.end()
		delete(t.peers, id)
	}
}

// Start starts accepting connections and handing their batches to r.
func (t *TCPTransport) Start(r Receiver) error {
	t.recv = r
	t.wg.Add(1)
	go t.accept()
	return nil
}

// Send queues msgs for node to's writer.
func (t *TCPTransport) Send(to uint64, msgs []Envelope) error {
	t.mu.Lock()
	p := t.peers[to]
	if p == nil {
		addr, ok := t.addrs[to]
		if !ok || t.closed {
			t.mu.Unlock()
			return fmt.Errorf("raft tcp transport: no address for node %d", to)
		}
		p = &peer{id: to, queue: make(chan []Envelope, t.opts.QueueBatches), stop: make(chan struct{})}
		t.peers[to] = p
		t.wg.Add(1)
		go t.write(p, addr)
	}
	t.mu.Unlock()
	select {
	case p.queue <- msgs:
		return nil
	default:
		return fmt.Errorf("raft tcp transport: the queue to node %d is full", to)
	}
}

// Close stops listening, closes every connection and waits for the
// readers and writers to end.
func (t *TCPTransport) Close() error {
	t.mu.Lock()
	if t.closed {
		t.mu.Unlock()
		return nil
	}
	t.closed = true
	err := t.ln.Close()
	for c := range t.conns {
		c.Close()
	}
	for id, p := range t.peers {
		p.end()
		delete(t.peers, id)
	}
	t.mu.Unlock()
	t.wg.Wait()
	return err
}

// write is peer p's writer: it dials addr when it has something to send
// and writes everything queued as one frame. A batch it cannot write is
// reported unreachable.
func (t *TCPTransport) write(p *peer, addr string) {
	defer t.wg.Done()
	var (
		conn    net.Conn
		buf     []byte
		retryAt time.Time
		batches [][]Envelope
	)
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	fail := func(err error) {
		t.opts.Logger.Debug("raft tcp transport: send", "peer", p.id, "addr", addr, "err", err)
		for _, b := range batches {
			t.recv.Unreachable(p.id, b)
		}
	}
	for {
		batches = batches[:0]
		select {
		case <-p.stop:
			return
		case b := <-p.queue:
			batches = append(batches, b)
		}
	more:
		for {
			select {
			case b := <-p.queue:
				batches = append(batches, b)
			default:
				break more
			}
		}
		if conn == nil {
			if time.Now().Before(retryAt) {
				fail(errors.New("waiting to dial again"))
				continue
			}
			var err error
			if conn, err = t.dial(addr); err != nil {
				retryAt = time.Now().Add(t.opts.RedialAfter)
				fail(err)
				continue
			}
			t.mu.Lock()
			select {
			case <-p.stop:
				t.mu.Unlock()
				return // the deferred close ends conn
			default:
				p.conn = conn
			}
			t.mu.Unlock()
		}
		var msgs []Envelope
		for _, b := range batches {
			msgs = append(msgs, b...)
		}
		var err error
		if buf, err = t.writeFrames(conn, buf, p.id, msgs); err != nil {
			conn.Close()
			conn = nil
			fail(err)
		}
	}
}

// writeFrames writes msgs to conn in frames of about frameTarget at most,
// a few frames a write, each write within WriteTimeout, and returns buf
// for the next call. A message larger than the reader takes
// (MaxFrameBytes) is not written: it would cost the connection and
// everything behind it. It is reported unreachable instead.
func (t *TCPTransport) writeFrames(conn net.Conn, buf []byte, to uint64, msgs []Envelope) ([]byte, error) {
	buf = buf[:0]
	flush := func() error {
		if len(buf) == 0 {
			return nil
		}
		conn.SetWriteDeadline(time.Now().Add(t.opts.WriteTimeout))
		_, err := conn.Write(buf)
		buf = buf[:0]
		return err
	}
	target := min(frameTarget, t.opts.MaxFrameBytes)
	err := splitFrames(msgs, target, func(msgs []Envelope, sizes []int, payload int) error {
		if payload > t.opts.MaxFrameBytes {
			t.tooLarge(to, msgs, payload)
			return nil
		}
		var err error
		if buf, err = appendFrame(buf, msgs, sizes); err != nil {
			return err
		}
		if len(buf) >= target {
			return flush()
		}
		return nil
	})
	if err == nil {
		err = flush()
	}
	if cap(buf) > 2*frameTarget {
		buf = nil // a snapshot's frame: not kept for the small ones
	}
	return buf, err
}

// tooLarge reports msgs, one message over the frame limit, unreachable,
// and warns at most every 10 s: a snapshot that large cannot reach its
// follower.
func (t *TCPTransport) tooLarge(to uint64, msgs []Envelope, payload int) {
	t.mu.Lock()
	warn := time.Since(t.warnedLarge) >= 10*time.Second
	if warn {
		t.warnedLarge = time.Now()
	}
	t.mu.Unlock()
	if warn {
		t.opts.Logger.Warn("raft tcp transport: a message over the frame limit is not sent", "peer", to,
			"group", msgs[0].Group, "type", msgs[0].Msg.GetType().String(), "bytes", payload, "limit", t.opts.MaxFrameBytes)
	}
	t.recv.Unreachable(to, msgs)
}

// dial connects to addr and opens the connection (greet).
func (t *TCPTransport) dial(addr string) (net.Conn, error) {
	conn, err := net.DialTimeout("tcp", addr, t.opts.DialTimeout)
	if err != nil {
		return nil, err
	}
	if err := t.greet(conn); err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// accept takes connections until the listener closes.
func (t *TCPTransport) accept() {
	defer t.wg.Done()
	for {
		conn, err := t.ln.Accept()
		if err != nil {
			return
		}
		t.mu.Lock()
		if t.closed {
			t.mu.Unlock()
			conn.Close()
			return
		}
		t.conns[conn] = struct{}{}
		t.wg.Add(1)
		t.mu.Unlock()
		go t.read(conn)
	}
}

// read hands the frames of an accepted connection to the receiver until
// the connection ends or sends something that does not decode.
func (t *TCPTransport) read(conn net.Conn) {
	defer t.wg.Done()
	defer func() {
		t.mu.Lock()
		delete(t.conns, conn)
		t.mu.Unlock()
		conn.Close()
	}()
	r := bufio.NewReaderSize(conn, 64<<10)
	from, err := t.admit(conn, r)
	if err != nil {
		t.refuse(conn, err)
		return
	}
	var head [4]byte
	var payload []byte
	for {
		if _, err := io.ReadFull(r, head[:]); err != nil {
			return
		}
		size := int(binary.BigEndian.Uint32(head[:]))
		if size > t.opts.MaxFrameBytes {
			t.opts.Logger.Debug("raft tcp transport: frame too large", "peer", from, "bytes", size)
			return
		}
		if cap(payload) < size {
			payload = make([]byte, size)
		}
		payload = payload[:size]
		if _, err := io.ReadFull(r, payload); err != nil {
			return
		}
		msgs, err := decodeFrame(payload)
		if err != nil {
			t.opts.Logger.Debug("raft tcp transport: read", "peer", from, "err", err)
			return
		}
		if size > 2*frameTarget {
			payload = nil // a snapshot's frame (decoding copied it): not kept for the small ones
		}
		t.recv.Receive(from, msgs)
	}
}
