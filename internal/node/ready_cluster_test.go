package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"testing"
	"time"

	"persona/cluster"
	"persona/internal/testnode"
)

// readyStatus GETs n's /ready and returns its status: "ready" with 200,
// any other with 503.
func readyStatus(t *testing.T, n *testnode.Node) string {
	t.Helper()
	resp, err := http.Get(n.URL + "/ready")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("/ready: %d, body not JSON: %v", resp.StatusCode, err)
	}
	if (resp.StatusCode == http.StatusOK) != (body.Status == "ready") ||
		resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("/ready: %d %q", resp.StatusCode, body.Status)
	}
	return body.Status
}

// waitReady polls n's /ready until its status is want, or fails after
// 10 s; every status before must be one of before.
func waitReady(t *testing.T, n *testnode.Node, want string, before ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		status := readyStatus(t, n)
		if status == want {
			return
		}
		if !slices.Contains(before, status) {
			t.Fatalf("%s: /ready %q while waiting for %q", n.ClusterName(), status, want)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: /ready still %q after 10s, want %q", n.ClusterName(), status, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// selfMember returns how n's membership lists n.
func selfMember(t *testing.T, n *testnode.Node) cluster.Member {
	t.Helper()
	for _, m := range n.Cluster().Members() {
		if m.Name == n.ClusterName() {
			return m
		}
	}
	t.Fatalf("%s does not list itself", n.ClusterName())
	return cluster.Member{}
}

// TestReadyFollowsTheClusterMembership: with cluster.enabled, /ready
// answers 200 only once the node's membership lists it alive and ready:
// a node joining another answers 503 "not in the cluster" or 200, and
// when 200, it lists itself alive and ready; a node that tells the cluster
// it is not ready answers 503 "not in the cluster" until it is again.
func TestReadyFollowsTheClusterMembership(t *testing.T) {
	t.Parallel()
	a := testnode.Start(t, "", inCluster("a", "127.0.0.1:0"))
	waitReady(t, a, "ready", "not in the cluster")
	b := testnode.Start(t, "", inCluster("b", "127.0.0.1:0", a.Cluster().Addr()))
	waitReady(t, b, "ready", "not in the cluster")
	if m := selfMember(t, b); m.State != cluster.StateAlive || !m.Ready {
		t.Fatalf("b answers /ready 200 but lists itself %s, ready %v", m.State, m.Ready)
	}
	waitCluster(t, a, "b alive and ready", func(ms map[string]cluster.Member) bool {
		return ms["b"].State == cluster.StateAlive && ms["b"].Ready
	})

	local := b.Cluster().Local()
	local.Ready = false
	if err := b.Cluster().SetLocal(local); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b, "not in the cluster", "ready")
	local.Ready = true
	if err := b.Cluster().SetLocal(local); err != nil {
		t.Fatal(err)
	}
	waitReady(t, b, "ready", "not in the cluster")
}
