//go:build !race

// These tests start protoactor's remote: see remote_test.go.

package host

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Nodes that share keys reach each other's actors, though each sends the
// token of another key of the file (a rotation under way); a node with
// another key, or none, cannot deliver a message.
func TestRemoteRefusesNodesWithoutAKey(t *testing.T) {
	t.Parallel()
	k1, k2, other := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32), bytes.Repeat([]byte{3}, 32)
	bAddr := freeAddr(t)
	b, bm, _ := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
	if err := b.StartRemote(bAddr, bAddr, [][]byte{k2, k1}); err != nil {
		t.Fatal(err)
	}
	for _, keys := range [][][]byte{{other}, nil} {
		addr := freeAddr(t)
		c, _, _ := newPlacedHost(t, &table{addr: bAddr, known: true}, time.Minute)
		if err := c.StartRemote(addr, addr, keys); err != nil {
			t.Fatal(err)
		}
		c.Send("still", "x", wrapperspb.String("one-way"))
		if got, err := ask(c, "still", "y", 2*time.Second); err == nil {
			t.Errorf("a node with keys %q reached another's actor: %q", keys, got)
		}
	}
	if got := sample(t, bm, envelopes("received")); got != 0 {
		t.Errorf("b received %v envelopes from nodes without its keys", got)
	}

	aAddr := freeAddr(t)
	a, _, _ := newPlacedHost(t, &table{addr: bAddr, known: true}, time.Minute)
	if err := a.StartRemote(aAddr, aAddr, [][]byte{k1, k2}); err != nil {
		t.Fatal(err)
	}
	if got, err := ask(a, "still", "z", 10*time.Second); err != nil || got != "pong ping" {
		t.Fatalf("request from a node with the keys: %q, %v", got, err)
	}
	if got := sample(t, bm, envelopes("received")); got != 1 {
		t.Errorf("b received %v envelopes, want the 1 of the node with its keys", got)
	}
}

// Remote's unary calls, whose protoactor handlers panic, are answered
// Unimplemented, with keys or without, and the node goes on serving.
func TestRemoteRefusesUnaryCalls(t *testing.T) {
	t.Parallel()
	for _, keys := range [][][]byte{nil, {bytes.Repeat([]byte{1}, 32)}} {
		bAddr := freeAddr(t)
		b, _, _ := newPlacedHost(t, &table{local: true, known: true}, time.Minute)
		if err := b.StartRemote(bAddr, bAddr, keys); err != nil {
			t.Fatal(err)
		}
		opts := []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if len(keys) > 0 {
			opts = append(opts, grpc.WithPerRPCCredentials(peerToken(peerTokens(keys)[0])))
		}
		cc, err := grpc.Dial(bAddr, opts...)
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err = remote.NewRemotingClient(cc).ListProcesses(ctx, &remote.ListProcessesRequest{})
		_, err2 := remote.NewRemotingClient(cc).GetProcessDiagnostics(ctx, &remote.GetProcessDiagnosticsRequest{})
		cancel()
		cc.Close()
		if status.Code(err) != codes.Unimplemented || status.Code(err2) != codes.Unimplemented {
			t.Fatalf("keys %d: ListProcesses %v, GetProcessDiagnostics %v; want Unimplemented", len(keys), err, err2)
		}
		aAddr := freeAddr(t)
		a, _, _ := newPlacedHost(t, &table{addr: bAddr, known: true}, time.Minute)
		if err := a.StartRemote(aAddr, aAddr, keys); err != nil {
			t.Fatal(err)
		}
		if got, err := ask(a, "still", "z", 10*time.Second); err != nil || got != "pong ping" {
			t.Fatalf("keys %d: a request after the unary calls: %q, %v", len(keys), got, err)
		}
	}
}
