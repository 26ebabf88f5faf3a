package raft

import (
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"time"

	pb "go.etcd.io/raft/v3/raftpb"
	"google.golang.org/protobuf/proto"
)

// recorder is a Receiver that keeps what it is given.
type recorder struct {
	mu          sync.Mutex
	got         []Envelope
	from        map[uint64]int
	unreachable int
}

func (r *recorder) Receive(from uint64, msgs []Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.got = append(r.got, msgs...)
	r.from[from] += len(msgs)
}

func (r *recorder) Unreachable(_ uint64, msgs []Envelope) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.unreachable += len(msgs)
}

func (r *recorder) counts() (got, unreachable int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.got), r.unreachable
}

// waitFor waits up to 10 s until r has received as many messages as
// sent, then checks they are sent, equal and in order, and no more.
func (r *recorder) waitFor(t *testing.T, sent []Envelope) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for n, _ := r.counts(); n < len(sent); n, _ = r.counts() {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d messages arrived", n, len(sent))
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.got) != len(sent) {
		t.Fatalf("%d messages arrived, want %d", len(r.got), len(sent))
	}
	for i := range sent {
		if r.got[i].Group != sent[i].Group || !proto.Equal(r.got[i].Msg, sent[i].Msg) {
			t.Fatalf("message %d differs", i)
		}
	}
}

func randomMessage(i int) Envelope {
	m := &pb.Message{
		Type:   pb.MessageType(rand.IntN(19)).Enum(),
		To:     new(uint64(2)),
		From:   new(uint64(1)),
		Term:   new(rand.Uint64()),
		Index:  new(uint64(i)),
		Commit: new(rand.Uint64N(1 << 40)),
	}
	for range rand.IntN(4) {
		data := make([]byte, rand.IntN(2000))
		for j := range data {
			data[j] = byte(rand.Uint32())
		}
		m.Entries = append(m.Entries, &pb.Entry{Index: new(rand.Uint64()), Term: new(rand.Uint64()), Type: pb.EntryNormal.Enum(), Data: data})
	}
	return Envelope{Group: rand.Uint64N(1 << 20), Msg: m}
}

// TestTCPTransportDeliversInOrder sends random batches from one node to
// another over loopback and checks every message arrives, equal and in
// order; once the receiver is gone, batches come back unreachable.
func TestTCPTransportDeliversInOrder(t *testing.T) {
	t.Parallel()
	a, err := ListenTCP(TCPOptions{NodeID: 1, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := ListenTCP(TCPOptions{NodeID: 2, Listen: "127.0.0.1:0"})
	if err != nil {
		t.Fatal(err)
	}
	a.SetPeer(2, b.Addr().String())
	ra, rb := &recorder{from: map[uint64]int{}}, &recorder{from: map[uint64]int{}}
	if err := a.Start(ra); err != nil {
		t.Fatal(err)
	}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	var sent []Envelope
	for i := 0; len(sent) < 500; i++ {
		var batch []Envelope
		for range 1 + rand.IntN(8) {
			batch = append(batch, randomMessage(len(sent)+len(batch)))
		}
		if err := a.Send(2, batch); err != nil {
			time.Sleep(time.Millisecond) // the queue is full: the writer catches up
			continue
		}
		sent = append(sent, batch...)
	}
	if err := a.Send(3, []Envelope{randomMessage(0)}); err == nil {
		t.Error("a send to a node with no address was taken")
	}
	rb.waitFor(t, sent)
	rb.mu.Lock()
	if rb.from[1] != len(sent) {
		t.Errorf("messages from node 1: %d, want %d", rb.from[1], len(sent))
	}
	rb.mu.Unlock()

	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for _, u := ra.counts(); u == 0; _, u = ra.counts() {
		if time.Now().After(deadline) {
			t.Fatal("no batch reported unreachable after the peer closed")
		}
		_ = a.Send(2, []Envelope{randomMessage(0)})
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTCPTransportRefusesStrangers checks that a connection that does
// not open with the handshake is closed, and nothing of it is received.
func TestTCPTransportRefusesStrangers(t *testing.T) {
	t.Parallel()
	tr, r := listenRecording(t, TCPOptions{NodeID: 1, Listen: "127.0.0.1:0"})
	conn, err := net.Dial("tcp", tr.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
	if n, _ := r.counts(); n != 0 {
		t.Fatalf("%d messages received from a stranger", n)
	}
}

// listenRecording starts a transport with opts whose receiver records
// what it receives; the test's end closes it.
func listenRecording(t *testing.T, opts TCPOptions) (*TCPTransport, *recorder) {
	t.Helper()
	tr, err := ListenTCP(opts)
	if err != nil {
		t.Fatal(err)
	}
	r := &recorder{from: map[uint64]int{}}
	if err := tr.Start(r); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tr.Close() })
	return tr, r
}

// messageOf returns a message of group whose one entry holds size bytes.
func messageOf(group uint64, index, size int) Envelope {
	m := &pb.Message{Type: pb.MsgApp.Enum(), To: new(uint64(2)), From: new(uint64(1)), Index: new(uint64(index)),
		Entries: []*pb.Entry{{Index: new(uint64(index)), Data: make([]byte, size)}}}
	return Envelope{Group: group, Msg: m}
}

// TestTCPTransportSplitsWhatWasQueued queues at once far more for a peer
// than one frame may hold (as a leader does for a follower back from a
// cut): the writer sends it in frames the reader takes, so that every
// message arrives in order and none is reported unreachable. A message
// over the limit alone is reported unreachable, and those around it
// still arrive.
func TestTCPTransportSplitsWhatWasQueued(t *testing.T) {
	t.Parallel()
	const limit = 64 << 10
	a, ra := listenRecording(t, TCPOptions{NodeID: 1, Listen: "127.0.0.1:0", MaxFrameBytes: limit})
	b, rb := listenRecording(t, TCPOptions{NodeID: 2, Listen: "127.0.0.1:0", MaxFrameBytes: limit})
	a.SetPeer(2, b.Addr().String())
	var sent []Envelope
	for i := range 64 {
		batch := []Envelope{messageOf(uint64(i%4), i, 8<<10), messageOf(uint64(i%4), i, 100)}
		if i == 40 {
			batch = append(batch, messageOf(9, i, limit)) // with its header, over the limit
		}
		if err := a.Send(2, batch); err != nil {
			t.Fatalf("batch %d: %v", i, err)
		}
		sent = append(sent, batch[:2]...)
	}
	rb.waitFor(t, sent)
	if _, u := ra.counts(); u != 1 {
		t.Errorf("%d messages reported unreachable, want the one over the limit", u)
	}
}
