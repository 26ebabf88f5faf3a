package node_test

import (
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"persona/api"
	"persona/cluster"
	"persona/config"
	"persona/internal/testnode"
)

// inCluster puts a test node in a cluster: named name, membership on a
// free loopback port, joining seeds.
func inCluster(name, actorAddr string, seeds ...string) func(*config.Config) {
	return func(c *config.Config) {
		c.Listen.Federation = ""
		c.Cluster.Enabled = true
		c.Cluster.NodeName = name
		c.Cluster.Bind = "127.0.0.1:0"
		c.Cluster.ActorBind = actorAddr
		c.Cluster.RaftBind = "127.0.0.1:0"
		c.Cluster.Join = seeds
		c.Cluster.DrainDelay = 0 // the tests stop nodes without a load balancer
	}
}

// TestNodesFormACluster starts two nodes with cluster.enabled, the second
// joining the first: each lists both alive and ready with their actor
// addresses, and the admin API shows them. With one replica to a
// partition, a founds every partition's group alone, then hands b the
// groups placement puts on b: each ends leading the partitions placed on
// it, following none. A node stopped leaves: the other lists it as left,
// not dead, and counts it in its metrics (the partitions whose one
// replica it held wait for it). A node outside a cluster has no cluster,
// no cluster metrics and answers the admin API 404.
func TestNodesFormACluster(t *testing.T) {
	t.Parallel()
	const partitions = 16
	onePerPartition := func(tune func(*config.Config)) func(*config.Config) {
		return func(c *config.Config) {
			tune(c)
			c.Cluster.Partitions, c.Actors.Partitions, c.Cluster.ReplicationFactor = partitions, partitions, 1
		}
	}
	a := testnode.Start(t, "", onePerPartition(inCluster("a", "127.0.0.1:18090")))
	b := testnode.Start(t, "", onePerPartition(inCluster("b", ":18091", a.Cluster().Addr())))
	for _, n := range []*testnode.Node{a, b} {
		members := waitCluster(t, n, "both alive and ready", func(ms map[string]cluster.Member) bool {
			return len(ms) == 2 && ms["a"].State == cluster.StateAlive && ms["a"].Ready && ms["b"].State == cluster.StateAlive && ms["b"].Ready
		})
		if members["a"].ActorAddr != "127.0.0.1:18090" || members["b"].ActorAddr != "127.0.0.1:18091" {
			t.Fatalf("%s sees the actor addresses %q and %q", n.ClusterName(), members["a"].ActorAddr, members["b"].ActorAddr)
		}
	}
	// leading reports whether each member named leads the partitions Place
	// puts on it over them all, and follows none.
	leading := func(names ...string) func(map[string]cluster.Member) bool {
		return func(ms map[string]cluster.Member) bool {
			placed := cluster.Place(partitions, names, 1)
			for _, name := range names {
				var want []int
				for p, rs := range placed {
					if rs[0] == name {
						want = append(want, p)
					}
				}
				if !slices.Equal(ms[name].Led, want) || len(ms[name].Followed) != 0 {
					return false
				}
			}
			return true
		}
	}
	for _, n := range []*testnode.Node{a, b} {
		waitCluster(t, n, "each leading the partitions placed on it", leading("a", "b"))
	}

	var out struct {
		Self    string `json:"self"`
		Members []struct {
			Name     string `json:"name"`
			Address  string `json:"address"`
			Actor    string `json:"actor_address"`
			State    string `json:"state"`
			Ready    bool   `json:"ready"`
			Led      []int  `json:"led"`
			Followed []int  `json:"followed"`
		} `json:"members"`
	}
	if status := adminGet(t, b, "/_persona/admin/v1/cluster/members", &out); status != http.StatusOK {
		t.Fatalf("cluster members: %d", status)
	}
	if out.Self != "b" || len(out.Members) != 2 || out.Members[0].Name != "a" || out.Members[0].Address != a.Cluster().Addr() ||
		out.Members[0].Actor != "127.0.0.1:18090" || out.Members[0].State != "alive" || !out.Members[0].Ready ||
		out.Members[0].Led == nil || out.Members[1].Name != "b" {
		t.Fatalf("cluster members as b answers them: %+v", out)
	}

	b.Stop()
	waitCluster(t, a, "b left", func(ms map[string]cluster.Member) bool { return ms["b"].State == cluster.StateLeft })
	for _, sample := range []string{`persona_cluster_members{state="alive"} 1`, `persona_cluster_members{state="left"} 1`,
		`persona_cluster_members{state="dead"} 0`, `persona_cluster_events_total{kind="leave"} 1`, `persona_cluster_events_total{kind="fail"} 0`} {
		if m := metricsOf(t, a); !strings.Contains(m, "\n"+sample+"\n") {
			t.Errorf("a's metrics lack %s", sample)
		}
	}

	alone := testnode.Start(t, "", func(c *config.Config) { c.Listen.Federation = "" })
	if alone.Cluster() != nil || alone.ClusterName() != "" {
		t.Fatalf("cluster.enabled false, yet in a cluster as %q", alone.ClusterName())
	}
	if status := adminGet(t, alone, "/_persona/admin/v1/cluster/members", nil); status != http.StatusNotFound {
		t.Fatalf("cluster members of a node outside a cluster: %d, want 404", status)
	}
	if m := metricsOf(t, alone); strings.Contains(m, "persona_cluster_") {
		t.Fatalf("a node outside a cluster exports cluster metrics")
	}
}

// waitCluster polls n's members until ok holds, or fails after 10 s.
func waitCluster(t *testing.T, n *testnode.Node, what string, ok func(map[string]cluster.Member) bool) map[string]cluster.Member {
	t.Helper()
	const within = 30 * time.Second // groups moved one membership change at a time, on a busy machine
	deadline := time.Now().Add(within)
	for {
		ms := map[string]cluster.Member{}
		for _, m := range n.Cluster().Members() {
			ms[m.Name] = m
		}
		if ok(ms) {
			return ms
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not within %s: %+v", n.ClusterName(), what, within, ms)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// adminGet GETs path of n's admin API with the shared secret, decodes the
// answer into out (if not nil) and returns the status.
func adminGet(t *testing.T, n *testnode.Node, path string, out any) int {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, n.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set(api.SecretHeader, n.Config.Registration.SharedSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	return resp.StatusCode
}

// metricsOf returns n's /metrics.
func metricsOf(t *testing.T, n *testnode.Node) string {
	t.Helper()
	_, _, b := get(t, "http://"+n.MetricsAddr()+"/metrics")
	return string(b)
}
