package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"persona/internal/netns"
	"persona/internal/testnode"
)

// remoteName is the server name of the homeserver a cluster federates
// with in these tests.
const remoteName = "remote.test"

// remoteServer makes, on host h (or loopback ports), the config of a
// single persona named remoteName that reaches the cluster's server
// through entry's federation listener; it is not started.
func remoteServer(t *testing.T, nt *netns.Net, h *netns.Host) *clusterProc {
	t.Helper()
	p := &clusterProc{name: "remote", host: h, bin: personaBinary(t)}
	if nt.Isolated {
		at := func(port int) string { return net.JoinHostPort(h.Addr.String(), strconv.Itoa(port)) }
		p.client, p.metrics, p.federation = at(8008), at(9108), at(8448)
	} else {
		a := freeLoopbackAddrs(t, 3)
		p.client, p.metrics, p.federation = a[0], a[1], a[2]
	}
	t.Cleanup(func() {
		if p.child != nil && t.Failed() {
			t.Logf("%s: %s", p.name, p.child.out.tail())
		}
	})
	return p
}

// configureRemote writes the remote server's config: its federation requests
// for the cluster's server go to entry.
func (p *clusterProc) configureRemote(t *testing.T, entry *clusterProc) {
	t.Helper()
	p.file = filepath.Join(t.TempDir(), "remote.yaml")
	cfg := fmt.Sprintf(`server_name: %q
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: %q
registration:
  open: true
  shared_secret: %q
federation:
  insecure_skip_verify: true
  destinations: {"persona.test": "https://%s"}
  outbox_backoff_min: 50ms
  outbox_backoff_max: 500ms
`, remoteName, filepath.Join(t.TempDir(), "remote-data"), p.client, p.metrics, p.federation, clusterSecret, entry.federation)
	if err := os.WriteFile(p.file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// signedUp registers name through p and returns its client.
func signedUp(t *testing.T, ctx context.Context, p *clusterProc, name string) *mautrix.Client {
	t.Helper()
	cli := clientOf(t, p)
	resp, err := cli.RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		t.Fatalf("register %s through %s: %v", name, p.name, err)
	}
	cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
	return cli
}

// TestClusterOutboxResumesOnTheNewLeader runs a cluster of three nodes
// that federates with a fourth server, each process on a host of its own.
// A user of the remote server joins a room of a cluster user. With the
// remote server down, the cluster user renames twice: the PDUs wait in the
// outbox of the node that leads the remote server's partition, which is
// then SIGKILLed. The remote server, back up, gets both renames from the
// partition's new leader, in order and each once.
func TestClusterOutboxResumesOnTheNewLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("starts four servers and kills one")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	nt := netns.New(t, 4)
	remote := remoteServer(t, nt, nt.Hosts[3])
	fed := fmt.Sprintf(`federation:
  signing_key_file: %q
  insecure_skip_verify: true
  destinations: {%q: "https://%s"}
  outbox_backoff_min: 50ms
  outbox_backoff_max: 500ms
`, filepath.Join(t.TempDir(), "signing.key"), remoteName, remote.federation)
	procs := clusterOn(t, nt, nt.Hosts[:3], true, fed)
	startReady(t, procs, 30*time.Second) // the first makes the signing key the others read
	waitLeaders(t, procs)
	var victim, entry *clusterProc
	for _, p := range procs {
		if p.name == ownerOf(remoteName, procs) {
			victim = p
		} else if entry == nil {
			entry = p
		}
	}
	remote.configureRemote(t, entry)
	remote.start(t)

	alice, bob := signedUp(t, ctx, entry, "alice"), signedUp(t, ctx, remote, "bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{"persona.test"}}); err != nil {
		t.Fatalf("bob joins through %s: %v", entry.name, err)
	}
	nameOnRemote := func() string {
		var c event.MemberEventContent
		if err := bob.StateEvent(ctx, room, event.StateMember, string(alice.UserID), &c); err != nil {
			return ""
		}
		return c.Displayname
	}
	rename := func(name string) {
		t.Helper()
		if err := alice.SetDisplayName(ctx, name); err != nil {
			t.Fatalf("rename to %s: %v", name, err)
		}
	}
	rename("Alice 1")
	eventually(t, 30*time.Second, "the remote server to take the first rename", func() bool { return nameOnRemote() == "Alice 1" })

	if err := remote.child.terminate(20 * time.Second); err != nil {
		t.Fatalf("stop the remote server: %v", err)
	}
	rename("Alice 2")
	rename("Alice 3")
	queued := fmt.Sprintf(`persona_federation_outbox_queued{destination=%q}`, remoteName)
	eventually(t, 30*time.Second, victim.name+" to queue both renames for the remote server", func() bool {
		n, err := metricValue(victim.metrics, queued)
		return err == nil && n >= 2
	})
	victim.child.kill()
	t.Logf("%s, which led %s's outbox with both renames queued, SIGKILLed", victim.name, remoteName)

	remote.start(t)
	began := time.Now()
	eventually(t, 60*time.Second, "the remote server to get the last rename from the new leader", func() bool { return nameOnRemote() == "Alice 3" })
	t.Logf("the remote server had the last rename %s after it came back", time.Since(began).Round(time.Millisecond))
	names, err := testnode.MemberNames(ctx, bob, room, alice.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"Alice 1", "Alice 2", "Alice 3"}; !slices.Equal(names, want) {
		t.Fatalf("the remote server's timeline of alice's member events: %q, want %q (each once, in order)", names, want)
	}
}
