package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/remote"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// noKeyWarning starts what a node in a cluster without a key file logs.
const noKeyWarning = "cluster.gossip_key_file is empty"

// TestClusterAuthenticatesPeers starts two `persona serve` processes
// sharing cluster.gossip_key_file (so neither warns of open channels).
// They form the cluster, replicate and route a user's writes between them
// (raft and actor peers authenticated with the key). A stranger that reaches the raft port is challenged and
// cut off at its wrong answer, and the node logs the refusal; a gRPC call
// to the actor port without a token is refused Unauthenticated.
func TestClusterAuthenticatesPeers(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two nodes")
	}
	keyFile := filepath.Join(t.TempDir(), "gossip.key")
	key := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{42}, 32))
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Indented: a key of the cluster mapping, which the config ends with.
	procs, nt := newClusterOfProcesses(t, 2, "  gossip_key_file: "+strconv.Quote(keyFile)+"\n")
	n1, n2 := procs[0], procs[1]
	startReady(t, procs, 30*time.Second)
	if strings.Contains(n1.child.out.String(), noKeyWarning) {
		t.Errorf("n1 warned %q with a key file", noKeyWarning)
	}

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	user, clients := userOwnedBy(t, ctx, procs, "auth", "n1", n2)
	if err := clients["n2"].SetDisplayName(ctx, "Authenticated"); err != nil {
		t.Fatalf("rename through n2: %v", err)
	}
	for _, p := range procs {
		if resp, err := clients[p.name].GetDisplayName(ctx, user); err != nil || resp.DisplayName != "Authenticated" {
			t.Fatalf("display name through %s: %+v, %v", p.name, resp, err)
		}
	}

	conn, err := nt.DialContext(ctx, "tcp", n1.raft)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var nonce [32]byte
	if _, err := io.ReadFull(conn, nonce[:]); err != nil {
		t.Fatalf("no challenge from the raft port: %v", err)
	}
	answer := append([]byte("praf\x01"), make([]byte, 8+32)...) // node 0, a proof of no key
	if _, err := conn.Write(answer); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadAll(conn); err != nil {
		t.Fatalf("the raft port kept a stranger's connection: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(n1.child.out.String(), "refused a connection that holds no key") {
		if time.Now().After(deadline) {
			t.Fatal("n1 logged no refused raft connection")
		}
		time.Sleep(20 * time.Millisecond)
	}

	cc, err := grpc.DialContext(ctx, n2.actor, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return nt.DialContext(ctx, "tcp", addr) }))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = remote.NewRemotingClient(cc).ListProcesses(ctx, &remote.ListProcessesRequest{})
	if status.Code(err) != codes.Unauthenticated {
		t.Fatalf("a call to the actor port without a token: %v, want Unauthenticated", err)
	}
}
