package main

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/cluster"
	"persona/host"
)

// routePartitions is cluster.partitions (and actors.partitions) of the
// nodes newClusterOfProcesses makes: the defaults.
const routePartitions = 64

// ownerOf names the node that owns identity's partition among procs: its
// first replica by rendezvous, as every node computes it once all are
// alive and ready.
func ownerOf(identity string, procs []*clusterProc) string {
	return cluster.Replicas(host.PartitionOf(identity, routePartitions), procNames(procs), 1)[0]
}

// procNames names procs' nodes.
func procNames(procs []*clusterProc) []string {
	names := make([]string, len(procs))
	for i, p := range procs {
		names[i] = p.name
	}
	return names
}

// ledAsPlaced reports whether each of procs gossips leading exactly the
// partitions whose first replica it is (ownerOf), as ms shows them.
func ledAsPlaced(procs []*clusterProc) func(map[string]clusterMember) bool {
	want := map[string][]int{}
	for p := range routePartitions {
		first := cluster.Replicas(p, procNames(procs), 1)[0]
		want[first] = append(want[first], p)
	}
	return func(ms map[string]clusterMember) bool {
		for _, p := range procs {
			if !slices.Equal(slices.Sorted(slices.Values(ms[p.name].Led)), want[p.name]) {
				return false
			}
		}
		return true
	}
}

// userOwnedBy registers, through via, the first user named prefix<n>
// whose partition owner owns, and logs it in through every node; it
// returns the user and a client a node, by node name.
func userOwnedBy(t *testing.T, ctx context.Context, procs []*clusterProc, prefix, owner string, via *clusterProc) (id.UserID, map[string]*mautrix.Client) {
	t.Helper()
	name := ""
	for i := 0; name == ""; i++ {
		if c := prefix + strconv.Itoa(i); ownerOf("@"+c+":persona.test", procs) == owner {
			name = c
		}
	}
	user := id.UserID("@" + name + ":persona.test")
	if _, err := clientOf(t, via).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name}); err != nil {
		t.Fatalf("register %s through %s: %v", user, via.name, err)
	}
	clients := map[string]*mautrix.Client{}
	for _, p := range procs {
		cli := clientOf(t, p)
		resp, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword, Password: "password-" + name,
			Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: name}, StoreCredentials: true})
		if err != nil || resp.UserID != user {
			t.Fatalf("log in through %s: %v, %+v", p.name, err, resp)
		}
		clients[p.name] = cli
	}
	return user, clients
}

// clientOf is a Matrix client of p, through the test's hosts.
func clientOf(t *testing.T, p *clusterProc) *mautrix.Client {
	t.Helper()
	cli, err := mautrix.NewClient(p.base(), "", "")
	if err != nil {
		t.Fatal(err)
	}
	cli.Client = &http.Client{Transport: httpClient.Transport, Timeout: 30 * time.Second}
	return cli
}

// TestClusterRoutesAcrossNodes starts three `persona serve` processes with
// cluster.enabled on hosts of their own. A user whose partition n1 owns
// registers through n1 and logs in through n2 and n3; it creates rooms
// through each node until rooms owned by n2 and by n3 are among them, and
// renames through n1. Every room's member event for the user, read through
// each node, shows the new name, and the profile read through each node
// agrees. Then n3, the owner of some of the rooms, is SIGKILLed, declared
// dead, restarted on its data and ready again; a second rename through n1
// reaches every room, read through each node again.
func TestClusterRoutesAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes, one of them twice, and waits for failure detection")
	}
	start := time.Now()
	defer func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) }()
	procs, nt := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	startReady(t, procs, 20*time.Second)
	t.Logf("hosts of their own: %v; three nodes ready in %s", nt.Isolated, time.Since(start).Round(time.Millisecond))
	// Ready means every partition has a leader, not yet its preferred one:
	// until leadership has moved there, a room ownerOf names n3's may live
	// on n1, and n3 would receive nothing.
	phase := time.Now()
	for _, p := range procs {
		waitView(t, p, procs, "every partition led by its first replica", 30*time.Second, ledAsPlaced(procs))
	}
	t.Logf("every partition led by its first replica %s after ready", time.Since(phase).Round(time.Millisecond))
	ctx := context.Background()

	// A user n1 owns, registered through n1, logged in through n2 and n3.
	user, clients := userOwnedBy(t, ctx, procs, "route", n1.name, n1)

	// Rooms created through each node in turn, until n2 and n3 own some.
	var rooms []id.RoomID
	owned := map[string]int{}
	for i := 0; owned[n2.name] == 0 || owned[n3.name] == 0; i++ {
		if i == 60 {
			t.Fatalf("60 rooms and none owned by n2 or n3: %v", owned)
		}
		via := procs[i%len(procs)]
		resp, err := clients[via.name].CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "route " + strconv.Itoa(i)})
		if err != nil {
			t.Fatalf("create a room through %s: %v", via.name, err)
		}
		rooms = append(rooms, resp.RoomID)
		owned[ownerOf(string(resp.RoomID), procs)]++
	}
	t.Logf("user %s owned by n1; %d rooms owned by %v", user, len(rooms), owned)

	// converged waits until every room's member event for the user, read
	// through each node, shows want, and the profile through each node too.
	converged := func(want string, limit time.Duration) {
		t.Helper()
		began := time.Now()
		deadline := began.Add(limit)
		for _, p := range procs {
			for _, room := range rooms {
				for {
					var member event.MemberEventContent
					err := clients[p.name].StateEvent(ctx, room, event.StateMember, string(user), &member)
					if err == nil && member.Displayname == want && member.Membership == event.MembershipJoin {
						break
					}
					if time.Now().After(deadline) {
						t.Fatalf("%s through %s (owned by %s): member %+v, %v; want %q", room, p.name, ownerOf(string(room), procs), member, err, want)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}
			for {
				dn, err := clients[p.name].GetDisplayName(ctx, user)
				if err == nil && dn.DisplayName == want {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("profile through %s: %+v, %v; want %q", p.name, dn, err, want)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
		t.Logf("%q in every room and profile, read through each node, %s after the rename returned", want, time.Since(began).Round(time.Millisecond))
	}
	if err := clients[n1.name].SetDisplayName(ctx, "Across 1"); err != nil {
		t.Fatalf("rename through n1: %v", err)
	}
	converged("Across 1", 15*time.Second)
	for _, p := range procs {
		for _, s := range []string{`persona_cluster_envelopes_total{outcome="sent"}`, `persona_cluster_envelopes_total{outcome="received"}`} {
			if v, err := metricValue(p.metrics, s); err != nil || v == 0 {
				t.Errorf("%s's %s = %v, %v; want > 0", p.name, s, v, err)
			}
		}
		if v, err := metricValue(p.metrics, `persona_cluster_envelopes_total{outcome="dropped_unknown_type"}`); err != nil || v != 0 {
			t.Errorf("%s dropped %v envelopes of unknown types (%v)", p.name, v, err)
		}
	}

	// n3 SIGKILLed and declared dead; restarted on its data, it owns its
	// rooms again, and a rename reaches them.
	phase = time.Now()
	n3.child.kill()
	for _, p := range []*clusterProc{n1, n2} {
		waitView(t, p, procs, "n3 dead", deadBound, func(ms map[string]clusterMember) bool { return ms["n3"].State == "dead" })
	}
	t.Logf("n3 declared dead %s after its SIGKILL", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	n3.start(t)
	for _, p := range procs {
		waitView(t, p, procs, "n3 back, all three alive and ready", 20*time.Second, allReady(procs))
	}
	t.Logf("n3 ready again %s after its restart began", time.Since(phase).Round(time.Millisecond))
	// A message sent to n3 while it was down, or just back, may be lost
	// (protoactor's remote delivers at most once): the request waits out
	// its timeout, and a client asks again.
	for _, p := range procs {
		clients[p.name].Client.Timeout = 2 * time.Second
	}
	if err := clients[n1.name].SetDisplayName(ctx, "Across 2"); err != nil {
		t.Fatalf("rename through n1: %v", err)
	}
	converged("Across 2", 15*time.Second)

	// A device logged out through one node has its token refused through
	// every node, those that accepted it just before included.
	token := clients[n2.name].AccessToken
	for _, p := range procs {
		if _, err := withToken(t, p, user, token).Whoami(ctx); err != nil {
			t.Fatalf("whoami through %s before the logout: %v", p.name, err)
		}
	}
	if _, err := clients[n2.name].Logout(ctx); err != nil {
		t.Fatalf("logout through n2: %v", err)
	}
	for _, p := range procs {
		if _, err := withToken(t, p, user, token).Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
			t.Errorf("whoami through %s after the logout: %v, want M_UNKNOWN_TOKEN", p.name, err)
		}
	}
}

// withToken is a client of p acting as user with token.
func withToken(t *testing.T, p *clusterProc, user id.UserID, token string) *mautrix.Client {
	cli := clientOf(t, p)
	cli.UserID, cli.AccessToken = user, token
	return cli
}
