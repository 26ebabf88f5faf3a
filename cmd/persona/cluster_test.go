package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/api"
	"persona/internal/netns"
)

const clusterSecret = "cluster-secret"

// deadBound is how soon after a SIGKILL the others must list the node
// dead: measured at 5.1-6.5 s with memberlist's LAN timings on three
// nodes (docs/BENCHMARKS.md), given slack for a busy machine.
const deadBound = 12 * time.Second

// clusterProc is one node of a cluster of processes: its host, its
// addresses and its process.
type clusterProc struct {
	name                                                   string
	host                                                   *netns.Host
	client, metrics, gossip, actor, raft, federation, file string
	data                                                   string // data_dir
	bin                                                    string // persona built without -race
	child                                                  *crashChild
}

func (p *clusterProc) base() string { return "http://" + p.client }

func (p *clusterProc) start(t *testing.T) {
	t.Helper()
	p.child = startChild(t, p.host.Command(p.bin, "serve", "--config", p.file), p.file, p.base())
}

var (
	buildOnce sync.Once
	built     string
	buildErr  error
)

// personaBinary builds persona once per test binary, without -race: the
// nodes of a cluster start protoactor's remote, which a race build leaves
// out (internal/node), and a test run with -race stays valid.
func personaBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "persona-bin-")
		if err != nil {
			buildErr = err
			return
		}
		built = filepath.Join(dir, "persona")
		out, err := exec.Command("go", "build", "-o", built, ".").CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return built
}

// newClusterOfProcesses makes n nodes with cluster.enabled and open
// registration (extra: more of their config, top-level YAML), each on a host of its own (a network namespace with its
// own address; loopback ports where namespaces cannot be made), joining
// each other; none is started. The test's HTTP client reaches the hosts
// until it ends; a node's log is shown when the test fails.
func newClusterOfProcesses(t *testing.T, n int, extra ...string) ([]*clusterProc, *netns.Net) {
	t.Helper()
	nt := netns.New(t, n)
	return clusterOn(t, nt, nt.Hosts, false, extra...), nt
}

// clusterOn is newClusterOfProcesses on the hosts given of nt; with
// federation, each node also has a federation listener (proc.federation).
func clusterOn(t *testing.T, nt *netns.Net, hosts []*netns.Host, federation bool, extra ...string) []*clusterProc {
	t.Helper()
	bin := personaBinary(t)
	saved := httpClient.Transport
	httpClient.Transport = nt.Transport() // the test's requests reach the hosts; not parallel
	t.Cleanup(func() { httpClient.Transport = saved })

	procs := make([]*clusterProc, len(hosts))
	var loopback []string
	if !nt.Isolated {
		loopback = freeLoopbackAddrs(t, 6*len(hosts))
	}
	for i, h := range hosts {
		p := &clusterProc{name: "n" + strconv.Itoa(i+1), host: h, bin: bin}
		if nt.Isolated { // hosts of their own: the same ports everywhere
			at := func(port int) string { return net.JoinHostPort(h.Addr.String(), strconv.Itoa(port)) }
			p.client, p.metrics, p.gossip, p.actor, p.raft, p.federation = at(8008), at(9108), at(7946), at(8090), at(8190), at(8448)
		} else {
			a := loopback[6*i:]
			p.client, p.metrics, p.gossip, p.actor, p.raft, p.federation = a[0], a[1], a[2], a[3], a[4], a[5]
		}
		if !federation {
			p.federation = ""
		}
		procs[i] = p
	}
	seeds := make([]string, len(procs))
	for i, p := range procs {
		seeds[i] = strconv.Quote(p.gossip)
	}
	for _, p := range procs {
		p.file, p.data = filepath.Join(t.TempDir(), "persona.yaml"), filepath.Join(t.TempDir(), "data")
		cfg := fmt.Sprintf(`server_name: "persona.test"
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: %q
registration:
  open: true
  shared_secret: %q
cluster:
  enabled: true
  node_name: %q
  bind: %q
  actor_bind: %q
  raft_bind: %q
  join: [%s]
`, p.data, p.client, p.metrics, p.federation, clusterSecret, p.name, p.gossip, p.actor, p.raft, strings.Join(seeds, ", ")) +
			strings.Join(extra, "")
		if err := os.WriteFile(p.file, []byte(cfg), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		for _, p := range procs {
			if p.child == nil {
				continue
			}
			if strings.Contains(p.child.out.tail(), "DATA RACE") {
				t.Errorf("%s reported a data race:\n%s", p.name, p.child.out.tail())
			} else if t.Failed() {
				t.Logf("%s: %s", p.name, p.child.out.tail())
			}
		}
	})
	return procs
}

// startReady starts procs, in order, and waits until each one's view
// lists them all alive and ready, up to limit per node.
func startReady(t *testing.T, procs []*clusterProc, limit time.Duration) {
	t.Helper()
	for _, p := range procs {
		p.start(t)
	}
	for _, p := range procs {
		waitView(t, p, procs, "all alive and ready", limit, allReady(procs))
	}
}

// allReady reports whether ms lists every one of procs alive and ready,
// with its addresses, and no other.
func allReady(procs []*clusterProc) func(map[string]clusterMember) bool {
	return func(ms map[string]clusterMember) bool {
		for _, p := range procs {
			m := ms[p.name]
			if m.State != "alive" || !m.Ready || m.Address != p.gossip || m.ActorAddr != p.actor {
				return false
			}
		}
		return len(ms) == len(procs)
	}
}

// TestClusterOfProcesses starts three `persona serve` processes with
// cluster.enabled, each on a host of its own (a network namespace with its
// own address; loopback ports where namespaces cannot be made). Each lists
// all three alive and ready, with each one's addresses (and each, without
// a key file, warns that its channels are open). SIGKILL one: the
// others declare it dead, within the bound logged. Restarted, it rejoins.
// SIGTERM another: the others list it as left, not dead, and it exits 0.
// `persona cluster members` shows the cluster through any node.
func TestClusterOfProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes, one of them twice, and waits for failure detection")
	}
	start := time.Now()
	defer func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) }()
	procs, nt := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	t.Logf("hosts of their own: %v; gossip at %s, %s, %s", nt.Isolated, n1.gossip, n2.gossip, n3.gossip)

	// 1. All three see each other alive and ready, with each one's addresses.
	phase := time.Now()
	for _, p := range procs {
		p.start(t)
	}
	everyone := allReady(procs)
	for _, p := range procs {
		waitView(t, p, procs, "all three alive and ready with their addresses", 20*time.Second, everyone)
	}
	t.Logf("three nodes started and see each other in %s", time.Since(phase).Round(time.Millisecond))
	if !strings.Contains(n1.child.out.String(), noKeyWarning) {
		t.Errorf("n1, in a cluster without a key file, did not warn %q", noKeyWarning)
	}

	// 2. SIGKILL n3: n1 and n2 declare it dead. With memberlist's LAN
	// timings a probe finds n3 silent within about 1.5 s (1 s interval, 0.5
	// s timeout, then indirect probes), and with three members the
	// suspicion runs its 4 s minimum: about 5-7 s in all.
	phase = time.Now()
	n3.child.kill()
	for _, p := range []*clusterProc{n1, n2} {
		waitView(t, p, procs, "n3 dead", deadBound, func(ms map[string]clusterMember) bool { return ms["n3"].State == "dead" })
		t.Logf("%s declared n3 dead %s after its SIGKILL", p.name, time.Since(phase).Round(time.Millisecond))
	}

	// 3. n3 restarted on its data and addresses rejoins.
	phase = time.Now()
	n3.start(t)
	for _, p := range procs {
		waitView(t, p, procs, "n3 back, all three alive and ready", 20*time.Second, everyone)
	}
	t.Logf("n3 rejoined %s after its restart began", time.Since(phase).Round(time.Millisecond))

	// 4. SIGTERM n2: it leaves, and n1 and n3 list it as left.
	phase = time.Now()
	if err := n2.child.terminate(20 * time.Second); err != nil {
		t.Fatalf("n2 after SIGTERM: %v\n%s", err, n2.child.out.tail())
	}
	t.Logf("n2 exited %s after its SIGTERM", time.Since(phase).Round(time.Millisecond))
	for _, p := range []*clusterProc{n1, n3} {
		waitView(t, p, procs, "n2 left", 10*time.Second, func(ms map[string]clusterMember) bool {
			return ms["n2"].State == "left" && ms["n1"].State == "alive" && ms["n3"].State == "alive"
		})
	}
	t.Logf("n1 and n3 list n2 as left %s after its SIGTERM", time.Since(phase).Round(time.Millisecond))
	for sample, want := range map[string]float64{`persona_cluster_members{state="alive"}`: 2, `persona_cluster_members{state="left"}`: 1,
		`persona_cluster_members{state="dead"}`: 0, `persona_cluster_events_total{kind="leave"}`: 1} {
		if got, err := metricValue(n1.metrics, sample); err != nil || got != want {
			t.Errorf("n1's %s = %v, %v; want %v", sample, got, err, want)
		}
	}
	if fails, err := metricValue(n1.metrics, `persona_cluster_events_total{kind="fail"}`); err != nil || fails < 1 {
		t.Errorf("n1 counted %v failures (%v), want n3's at least", fails, err)
	}

	// 5. persona cluster members through n3. Three replicas over three
	// nodes: n2 handed its leadership over before it left, so n1 and n3
	// lead every partition between them, each following those the other
	// leads, once the gossip of the last changes reached n3.
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, err := clusterMembersOf(t, n3)
		if err != nil {
			t.Fatalf("persona cluster members: %v", err)
		}
		problem := splitLeadership(t, out, n1, n2, n3)
		if problem == "" {
			t.Logf("persona cluster members through n3:\n%s", out)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("persona cluster members through n3:\n%s\n%s", out, problem)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// splitLeadership returns what is wrong in the members table out, or "":
// n1 and n3 alive and ready, leading every partition between them and each
// following what the other leads; n2 left, leading none.
func splitLeadership(t *testing.T, out string, n1, n2, n3 *clusterProc) string {
	row := func(pattern string) []string {
		m := regexp.MustCompile(`(?m)` + pattern).FindStringSubmatch(out)
		if m == nil {
			return nil
		}
		return m[1:]
	}
	r1 := row(`^n1 +` + regexp.QuoteMeta(n1.gossip) + ` +` + regexp.QuoteMeta(n1.actor) + ` +alive +yes +(\S+) +(\S+)$`)
	r3 := row(`^n3 \(this node\) +` + regexp.QuoteMeta(n3.gossip) + ` +` + regexp.QuoteMeta(n3.actor) + ` +alive +yes +(\S+) +(\S+)$`)
	if r1 == nil || r3 == nil || row(`^n2 +`+regexp.QuoteMeta(n2.gossip)+` +`+regexp.QuoteMeta(n2.actor)+` +left +no +(-) +\S+$`) == nil {
		return "rows not as wanted"
	}
	led1, led3 := parseRanges(t, r1[0]), parseRanges(t, r3[0])
	if all := append(slices.Clone(led1), led3...); len(all) != 64 || len(slices.Compact(slices.Sorted(slices.Values(all)))) != 64 ||
		!slices.Equal(parseRanges(t, r1[1]), led3) || !slices.Equal(parseRanges(t, r3[1]), led1) {
		return "not every partition led by one of n1 and n3 and followed by the other"
	}
	return ""
}

// parseRanges reads a list of partitions as persona cluster members
// prints it ("0,4-10,12", or "-" for none), ascending.
func parseRanges(t *testing.T, s string) []int {
	t.Helper()
	var out []int
	if s == "-" {
		return out
	}
	for _, part := range strings.Split(s, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.Atoi(lo)
		b := a
		if isRange {
			b, err = strconv.Atoi(hi)
		}
		if err != nil {
			t.Fatalf("partitions %q: %v", s, err)
		}
		for p := a; p <= b; p++ {
			out = append(out, p)
		}
	}
	return out
}

// waitView polls p's cluster members until ok holds, or fails after limit.
func waitView(t *testing.T, p *clusterProc, procs []*clusterProc, what string, limit time.Duration, ok func(map[string]clusterMember) bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		ms, err := membersOf(p)
		if err == nil && ok(ms) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not within %s: %+v, %v", p.name, what, limit, ms, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// membersOf reads p's cluster members from its admin API, by name.
func membersOf(p *clusterProc) (map[string]clusterMember, error) {
	req, err := http.NewRequest(http.MethodGet, p.base()+"/_persona/admin/v1/cluster/members", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(api.SecretHeader, clusterSecret)
	var out struct {
		Members []clusterMember `json:"members"`
	}
	if err := do(req, &out); err != nil {
		return nil, err
	}
	ms := map[string]clusterMember{}
	for _, m := range out.Members {
		ms[m.Name] = m
	}
	return ms, nil
}

// clusterMembersOf runs `persona cluster members` against p.
func clusterMembersOf(t *testing.T, p *clusterProc) (string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := run([]string{"cluster", "members", "--config", p.file, "--url", p.base()}, &out, &errOut)
	return out.String(), err
}
