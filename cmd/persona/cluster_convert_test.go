package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"
)

// TestSingleNodeBecomesCluster runs one `persona serve` without a
// cluster (on each commit path) and fills it: users with display names,
// rooms they all joined. Stopped with SIGTERM, it starts again on the same
// data directory with cluster.enabled and no seeds, and two more nodes
// join it. Once every partition has its three replicas caught up, every
// profile and every room's members read the same through each node; a
// rename through the third node reaches every room; and with the first
// node SIGKILLed, the other two still read it all: the data was
// replicated, not only kept where it was written.
func TestSingleNodeBecomesCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node, then three in a cluster")
	}
	for _, path := range []string{"log", "raft"} {
		t.Run(path, func(t *testing.T) { singleToCluster(t, path) })
	}
}

// convertUsers and convertRooms size what the single node holds.
const (
	convertUsers = 3
	convertRooms = 6
)

func singleToCluster(t *testing.T, commitPath string) {
	start := time.Now()
	defer func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) }()
	procs, _ := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	storage := "storage:\n  commit_path: " + commitPath + "\n"
	rewriteCluster(t, n1, false, nil, storage)
	ctx := context.Background()

	// 1. One node, no cluster: users with names, rooms they all joined.
	n1.start(t)
	users := make([]id.UserID, convertUsers)
	tokens := make([]string, convertUsers)
	for i := range users {
		name := "convert-" + strconv.Itoa(i)
		resp, err := clientOf(t, n1).RegisterDummy(ctx, &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
		if err != nil {
			t.Fatalf("register %s: %v", name, err)
		}
		users[i], tokens[i] = resp.UserID, resp.AccessToken
		if err := withToken(t, n1, users[i], tokens[i]).SetDisplayName(ctx, "name "+strconv.Itoa(i)); err != nil {
			t.Fatalf("set %s's name: %v", users[i], err)
		}
	}
	rooms := make([]id.RoomID, convertRooms)
	for r := range rooms {
		creator := withToken(t, n1, users[r%convertUsers], tokens[r%convertUsers])
		resp, err := creator.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "convert " + strconv.Itoa(r)})
		if err != nil {
			t.Fatalf("create room %d: %v", r, err)
		}
		rooms[r] = resp.RoomID
		for i := range users {
			if i != r%convertUsers {
				if _, err := withToken(t, n1, users[i], tokens[i]).JoinRoomByID(ctx, rooms[r]); err != nil {
					t.Fatalf("%s joins %s: %v", users[i], rooms[r], err)
				}
			}
		}
	}
	want := map[id.UserID]string{}
	for i, u := range users {
		want[u] = "name " + strconv.Itoa(i)
	}
	reader := func(p *clusterProc) *mautrix.Client { return withToken(t, p, users[0], tokens[0]) }
	waitHolds(t, ctx, []*clusterProc{n1}, reader, users, rooms, want, 30*time.Second)
	if err := n1.child.terminate(30 * time.Second); err != nil {
		t.Fatalf("n1 after SIGTERM: %v\n%s", err, n1.child.out.tail())
	}

	// 2. The same data directory founds a cluster; two nodes join it.
	phase := time.Now()
	rewriteCluster(t, n1, true, nil, storage)
	for _, p := range []*clusterProc{n2, n3} {
		rewriteCluster(t, p, true, []string{n1.gossip}, "")
	}
	n1.start(t)
	waitView(t, n1, procs[:1], "n1 alive and ready", 60*time.Second, allReady(procs[:1]))
	waitHolds(t, ctx, []*clusterProc{n1}, reader, users, rooms, want, 30*time.Second)
	if !strings.Contains(n1.child.out.String(), "founding every partition's group with the data this node holds") {
		t.Errorf("n1 did not found the partitions with its data:\n%s", n1.child.out.tail())
	}
	t.Logf("n1 clustered and serving its data %s after its start", time.Since(phase).Round(time.Millisecond))
	phase = time.Now()
	n2.start(t)
	n3.start(t)
	for _, p := range procs {
		waitView(t, p, procs, "all three alive and ready", 60*time.Second, allReady(procs))
	}
	for _, p := range []*clusterProc{n2, n3} {
		waitCaughtUp(t, procs, p, 120*time.Second)
	}
	t.Logf("n2 and n3 hold every partition, caught up, %s after their start", time.Since(phase).Round(time.Millisecond))
	waitHolds(t, ctx, procs, reader, users, rooms, want, 60*time.Second)

	// 3. A rename through n3 reaches every room, as every node reads it.
	want[users[1]] = "renamed through n3"
	if err := withToken(t, n3, users[1], tokens[1]).SetDisplayName(ctx, want[users[1]]); err != nil {
		t.Fatalf("rename through n3: %v", err)
	}
	waitHolds(t, ctx, procs, reader, users, rooms, want, 60*time.Second)

	// 4. Without n1, the others still hold it all.
	phase = time.Now()
	n1.child.kill()
	waitHolds(t, ctx, []*clusterProc{n2, n3}, reader, users, rooms, want, 90*time.Second)
	t.Logf("n2 and n3 serve every profile and room %s after n1's SIGKILL", time.Since(phase).Round(time.Millisecond))
}

// rewriteCluster writes p's config again: cluster.enabled as clustered,
// seeds to join, and extra (top-level YAML) at the end.
func rewriteCluster(t *testing.T, p *clusterProc, clustered bool, seeds []string, extra string) {
	t.Helper()
	quoted := make([]string, len(seeds))
	for i, s := range seeds {
		quoted[i] = strconv.Quote(s)
	}
	cfg := fmt.Sprintf(`server_name: "persona.test"
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: ""
registration:
  open: true
  shared_secret: %q
cluster:
  enabled: %v
  node_name: %q
  bind: %q
  actor_bind: %q
  raft_bind: %q
  join: [%s]
`, p.data, p.client, p.metrics, clusterSecret, clustered, p.name, p.gossip, p.actor, p.raft, strings.Join(quoted, ", ")) + extra
	if err := os.WriteFile(p.file, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
}

// waitHolds waits until, through each of procs, every user's display name
// is want's and every room lists every user joined under that name, or
// fails after limit with what differs.
func waitHolds(t *testing.T, ctx context.Context, procs []*clusterProc, reader func(*clusterProc) *mautrix.Client,
	users []id.UserID, rooms []id.RoomID, want map[id.UserID]string, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		why := holds(ctx, procs, reader, users, rooms, want)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", limit, why)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// holds says what differs from want through procs, or "".
func holds(ctx context.Context, procs []*clusterProc, reader func(*clusterProc) *mautrix.Client,
	users []id.UserID, rooms []id.RoomID, want map[id.UserID]string) string {
	for _, p := range procs {
		cli := reader(p)
		for _, u := range users {
			dn, err := cli.GetDisplayName(ctx, u)
			if err != nil {
				return fmt.Sprintf("%s: %s's name: %v", p.name, u, err)
			}
			if dn.DisplayName != want[u] {
				return fmt.Sprintf("%s: %s's name reads %q, want %q", p.name, u, dn.DisplayName, want[u])
			}
		}
		for _, r := range rooms {
			resp, err := cli.JoinedMembers(ctx, r)
			if err != nil {
				return fmt.Sprintf("%s: %s's members: %v", p.name, r, err)
			}
			for _, u := range users {
				m, ok := resp.Joined[u]
				if !ok || m.DisplayName != want[u] {
					return fmt.Sprintf("%s: %s lists %s as %+v (joined %v), want %q", p.name, r, u, m, ok, want[u])
				}
			}
		}
	}
	return ""
}
