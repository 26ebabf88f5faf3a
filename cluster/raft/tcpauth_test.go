package raft

import (
	"bytes"
	"io"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"
)

// syncBuffer is a bytes.Buffer safe for a logger and a test at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// A transport with keys receives frames only from peers that hold one of
// them: the first key or a later one, as during a rotation. A peer with
// another key, or none, gets nothing delivered, and the refusal is logged
// at warn.
func TestTCPTransportAuthenticatesPeers(t *testing.T) {
	t.Parallel()
	k1, k2, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	logs := &syncBuffer{}
	b, err := ListenTCP(TCPOptions{NodeID: 1, Listen: "127.0.0.1:0", Keys: [][]byte{k1, k2},
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	rb := &recorder{from: map[uint64]int{}}
	if err := b.Start(rb); err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	senders := map[uint64][][]byte{
		2: {other},  // another cluster's key
		3: nil,      // no key
		4: {k1},     // the first key
		5: {k2, k1}, // the second key, first in this node's file
	}
	for id, keys := range senders {
		a, err := ListenTCP(TCPOptions{NodeID: id, Listen: "127.0.0.1:0", Keys: keys, WriteTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Start(&recorder{from: map[uint64]int{}}); err != nil {
			t.Fatal(err)
		}
		defer a.Close()
		a.SetPeer(1, b.Addr().String())
		go func() {
			for i := range 20 {
				a.Send(1, []Envelope{randomMessage(i)})
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rb.mu.Lock()
		done := rb.from[4] == 20 && rb.from[5] == 20
		rb.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("messages from peers with a key: %v, want 20 from 4 and 5", rb.from)
		}
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	rb.mu.Lock()
	defer rb.mu.Unlock()
	if rb.from[2] != 0 || rb.from[3] != 0 {
		t.Errorf("received %d messages from a peer with another key, %d from one with none", rb.from[2], rb.from[3])
	}
	if !strings.Contains(logs.String(), "level=WARN") {
		t.Errorf("no warning of a refused peer in:\n%s", logs)
	}
}

// A proof is good for its own challenge only: one made for another nonce
// (a recorded handshake replayed) is refused.
func TestTCPTransportRefusesReplayedProof(t *testing.T) {
	t.Parallel()
	key := bytes.Repeat([]byte{7}, 32)
	tr, r := listenRecording(t, TCPOptions{NodeID: 1, Listen: "127.0.0.1:0", Keys: [][]byte{key}})
	conn, err := net.Dial("tcp", tr.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var nonce [nonceSize]byte
	if _, err := io.ReadFull(conn, nonce[:]); err != nil {
		t.Fatal(err)
	}
	peer := &TCPTransport{opts: TCPOptions{NodeID: 2}}
	hs := peer.handshake()
	stale := make([]byte, nonceSize) // not the nonce sent
	hs = append(hs, proof(peerKeys([][]byte{key})[0], stale, hs)...)
	frame, err := appendFrame(nil, []Envelope{randomMessage(1)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Write(append(hs, frame...)); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the connection was not closed: %v", err)
	}
	if n, _ := r.counts(); n != 0 {
		t.Fatalf("%d messages received with a replayed proof", n)
	}
}
