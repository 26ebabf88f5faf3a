//go:build !race

// protoactor's remote has data races of its own (grpclog's global logger,
// set by every Remote.Start): tests that start it in this process run
// without -race (`make unit` runs them so).

package host

import (
	"net"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"persona/metrics"
)

// freeAddr returns a loopback address with a port free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// Two hosts over protoactor's remote on loopback: every partition is owned
// by b. A request through a reaches b's actor and its answer comes back,
// timed by a's remote request histogram; a message sent through a arrives
// in order after it; b counts what it received.
func TestRemoteOwner(t *testing.T) {
	t.Parallel()
	aAddr, bAddr := freeAddr(t), freeAddr(t)
	a, am, _ := newPlacedHost(t, &table{addr: bAddr, known: true}, time.Minute)
	b, bm, moved := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
	if err := a.StartRemote(aAddr, aAddr, nil); err != nil {
		t.Fatal(err)
	}
	if err := b.StartRemote(bAddr, bAddr, nil); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		id := string(rune('a' + i))
		if got, err := ask(a, "moved", id, 10*time.Second); err != nil || got != "pong ping" {
			t.Fatalf("request to %s through a: %q, %v", id, got, err)
		}
	}
	if got := sample(t, am, envelopes("sent")); got != 20 {
		t.Errorf("a sent %v envelopes, want 20", got)
	}
	if got := sample(t, bm, envelopes("received")); got != 20 {
		t.Errorf("b received %v envelopes, want 20", got)
	}
	if got := sample(t, am, `persona_cluster_remote_request_seconds_count{kind="moved"}`); got != 20 {
		t.Errorf("a timed %v remote requests, want 20", got)
	}
	b.PlacementChanged([]int{2})
	for range 20 {
		select {
		case m := <-moved:
			if !m.Has(2) {
				t.Fatalf("moved %v", m.Partitions)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("b's actors were not all told of the move")
		}
	}
	if err := b.StartRemote(bAddr, bAddr, nil); err == nil {
		t.Error("a second remote on a bound address started")
	}
	a.Send("still", "z", wrapperspb.String("one-way"))
	if got, err := ask(a, "still", "z", 10*time.Second); err != nil || got != "pong ping" {
		t.Fatalf("after a one-way message: %q, %v", got, err)
	}
}

// peerList is a fixed Peers.
type peerList []string

func (p peerList) Peers() []string { return p }

// Broadcast reaches every peer's OnBroadcast, in the order sent; a host
// without remote sends nothing.
func TestBroadcastReachesPeers(t *testing.T) {
	t.Parallel()
	aAddr, bAddr := freeAddr(t), freeAddr(t)
	newHost := func(peers Peers) *Host {
		h, err := New(Options{Partitions: 2, PassivateAfter: time.Minute, Peers: peers})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(h.Stop)
		return h
	}
	a, b := newHost(peerList{bAddr}), newHost(peerList{aAddr})
	got := make(chan string, 10)
	b.OnBroadcast(func(m proto.Message) { got <- m.(*wrapperspb.StringValue).Value })
	if err := a.Broadcast(wrapperspb.String("before remote")); err != nil {
		t.Fatal(err)
	}
	for _, h := range []struct {
		h    *Host
		addr string
	}{{a, aAddr}, {b, bAddr}} {
		if err := h.h.StartRemote(h.addr, h.addr, nil); err != nil {
			t.Fatal(err)
		}
	}
	for _, v := range []string{"one", "two", "three"} {
		if err := a.Broadcast(wrapperspb.String(v)); err != nil {
			t.Fatal(err)
		}
	}
	for _, want := range []string{"one", "two", "three"} {
		select {
		case v := <-got:
			if v != want {
				t.Fatalf("got %q, want %q", v, want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%q not broadcast", want)
		}
	}
}

// A node that comes back on its address is reached at once, even when a
// message went to it while it was down: a failed connection attempt must
// not hold what follows (protoactor's endpoint writer sleeps 2 s after
// one, then drops what it queued meanwhile). A broadcast to the node while
// it is down is as harmless.
func TestNodeBackIsReachedAtOnce(t *testing.T) {
	t.Parallel()
	aAddr, bAddr := freeAddr(t), freeAddr(t)
	m := metrics.New(nil)
	a, err := New(Options{Partitions: 4, PassivateAfter: time.Minute, Metrics: m,
		Placement: &table{addr: bAddr, known: true}, Peers: peerList{bAddr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Stop)
	if err := a.StartRemote(aAddr, aAddr, nil); err != nil {
		t.Fatal(err)
	}
	// b is down: what a sends it now is lost, and its request waits.
	a.Send("still", "x", wrapperspb.String("while down"))
	if err := a.Broadcast(wrapperspb.String("while down")); err != nil {
		t.Fatal(err)
	}
	early := askLater(a, "still", "y", 10*time.Second)
	time.Sleep(300 * time.Millisecond)

	b, _, _ := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
	if err := b.StartRemote(bAddr, bAddr, nil); err != nil {
		t.Fatal(err)
	}
	began := time.Now()
	if got, err := ask(a, "still", "z", 10*time.Second); err != nil || got != "pong ping" {
		t.Fatalf("request once b is up: %q, %v", got, err)
	}
	if took := time.Since(began); took > time.Second {
		t.Errorf("a request to b once it is up took %s", took)
	}
	select {
	case err := <-early:
		if err != nil {
			t.Errorf("request made while b was down: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Error("a request made while b was down not answered 5 s after b came up")
	}
}
