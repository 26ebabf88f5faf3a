package main

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"persona/api"
	"persona/cluster"
	"persona/host"
)

// splitList splits a flag's comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// widenClient lets the bench keep n idle connections to each node,
// keeping the dialer the client has.
func widenClient(n int) {
	t, ok := httpClient.Transport.(*http.Transport)
	if ok {
		t = t.Clone()
	} else {
		t = &http.Transport{}
	}
	t.MaxIdleConns, t.MaxIdleConnsPerHost = 4*n, n
	httpClient.Transport = t
}

// nodesCPU returns the CPU seconds each node at the metrics listeners
// addrs has used (process_cpu_seconds_total).
func nodesCPU(addrs []string) ([]float64, error) {
	return nodesSample(addrs, "process_cpu_seconds_total")
}

// leaderChanges returns how many times the nodes at the metrics listeners
// addrs learned of a new leader of a partition, summed; false outside a
// cluster.
func leaderChanges(addrs []string) (float64, bool) {
	vs, err := nodesSample(addrs, "persona_cluster_leader_changes_total")
	if err != nil || len(vs) == 0 {
		return 0, false
	}
	sum := 0.0
	for _, v := range vs {
		sum += v
	}
	return sum, true
}

// nodesSample reads an unlabelled sample from each node at the metrics
// listeners addrs.
func nodesSample(addrs []string, name string) ([]float64, error) {
	out := make([]float64, len(addrs))
	for i, a := range addrs {
		body, err := scrape(a)
		if err != nil {
			return nil, err
		}
		v, ok := sample(body, name)
		if !ok {
			return nil, fmt.Errorf("%s: no %s in /metrics", a, name)
		}
		out[i] = v
	}
	return out, nil
}

// sample reads an unlabelled sample's value from a /metrics text.
func sample(body, name string) (float64, bool) {
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// cpuMeter measures the CPU the nodes use between its start and a reading.
type cpuMeter struct {
	addrs []string
	start []float64
	at    time.Time
}

// startCPU reads the nodes' CPU now; with no addresses it measures nothing.
func startCPU(addrs []string) (*cpuMeter, error) {
	start, err := nodesCPU(addrs)
	return &cpuMeter{addrs: addrs, start: start, at: time.Now()}, err
}

// since returns the CPU seconds each node used since start, their sum,
// and the time since start.
func (m *cpuMeter) since() (per []float64, sum float64, elapsed time.Duration, err error) {
	now, err := nodesCPU(m.addrs)
	if err != nil {
		return nil, 0, 0, err
	}
	elapsed = time.Since(m.at)
	per = make([]float64, len(now))
	for i := range now {
		per[i] = now[i] - m.start[i]
		sum += per[i]
	}
	return per, sum, elapsed, nil
}

// idleCPU returns the CPU the nodes use with nothing asked of them (raft
// heartbeats, gossip, the runtime), in cores, measured over d; 0 at once
// with no nodes to measure.
func idleCPU(addrs []string, d time.Duration) (float64, error) {
	if len(addrs) == 0 {
		return 0, nil
	}
	m, err := startCPU(addrs)
	if err != nil {
		return 0, err
	}
	time.Sleep(d)
	_, sum, elapsed, err := m.since()
	return sum / elapsed.Seconds(), err
}

// cpuFigure describes CPU seconds spent on n operations of a kind, e.g.
// "2.31 s (1.20 + 0.61 + 0.50), 462 µs a room update, 2,164 room updates per CPU-second".
func cpuFigure(per []float64, sum float64, n int, what string) string {
	parts := make([]string, len(per))
	for i, v := range per {
		parts[i] = strconv.FormatFloat(v, 'f', 2, 64)
	}
	s := fmt.Sprintf("%.2f s", sum)
	if len(per) > 1 {
		s += " (" + strings.Join(parts, " + ") + ")"
	}
	if n > 0 && sum > 0 {
		s += fmt.Sprintf(", %.0f µs a %s, %.0f %ss per CPU-second", sum/float64(n)*1e6, what, float64(n)/sum, what)
	}
	return s
}

// leadership is which node leads each partition, as one node sees it.
type leadership struct {
	self   string         // the node asked
	alive  []string       // the members alive
	leader map[int]string // partition → the member that leads it
}

// settled reports whether each of partitions has a leader, the replica
// placement prefers: where leadership goes once a cluster is formed.
func (l *leadership) settled(partitions int) bool {
	for p := range partitions {
		if l.leader[p] == "" || l.leader[p] != cluster.Replicas(p, l.alive, 1)[0] {
			return false
		}
	}
	return true
}

// clusterLeadership reads the members of the cluster of the node at base
// through its admin API.
func clusterLeadership(base, secret string) (*leadership, error) {
	req, err := http.NewRequest(http.MethodGet, base+"/_persona/admin/v1/cluster/members", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(api.SecretHeader, secret)
	var out struct {
		Self    string          `json:"self"`
		Members []clusterMember `json:"members"`
	}
	if err := do(req, &out); err != nil {
		return nil, fmt.Errorf("cluster members: %w", err)
	}
	l := &leadership{self: out.Self, leader: map[int]string{}}
	for _, m := range out.Members {
		if m.State != "alive" {
			continue
		}
		l.alive = append(l.alive, m.Name)
		for _, p := range m.Led {
			l.leader[p] = m.Name
		}
	}
	return l, nil
}

// placement says where a bench puts the rooms of its user, whose partition
// the node it talks to leads: "any" node, the "local" one, or "remote" ones.
type placement struct {
	where      string
	partitions int
	lead       *leadership
}

func newPlacement(where string, partitions int, base, secret string) (*placement, error) {
	pl := &placement{where: where, partitions: partitions}
	switch where {
	case "any":
		return pl, nil
	case "local", "remote":
	default:
		return nil, fmt.Errorf("bench: --placement %q: want any, local or remote", where)
	}
	// A cluster just formed still hands leaderships to their preferred
	// replicas for a few seconds.
	var l *leadership
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var err error
		if l, err = clusterLeadership(base, secret); err != nil {
			return nil, err
		}
		if l.settled(partitions) || time.Now().After(deadline) && len(l.leader) == partitions {
			break
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("bench: %d of %d partitions have a leader; is the cluster ready?", len(l.leader), partitions)
		}
	}
	others := 0
	for _, name := range l.leader {
		if name != l.self {
			others++
		}
	}
	if where == "remote" && others == 0 || where == "local" && others == partitions {
		return nil, fmt.Errorf("bench: --placement %s: %s leads %d of %d partitions", where, l.self, partitions-others, partitions)
	}
	pl.lead = l
	return pl, nil
}

// userName returns prefix, or with --placement local or remote the first
// prefix_<i> whose user ID on server is in a partition this node leads.
func (pl *placement) userName(prefix, server string) string {
	if pl.lead == nil {
		return prefix
	}
	for i := 0; ; i++ {
		name := prefix + "_" + strconv.Itoa(i)
		if pl.lead.leader[host.PartitionOf("@"+name+":"+server, pl.partitions)] == pl.lead.self {
			return name
		}
	}
}

// wants reports whether a room belongs where the placement puts rooms.
func (pl *placement) wants(roomID string) bool {
	if pl.lead == nil {
		return true
	}
	local := pl.lead.leader[host.PartitionOf(roomID, pl.partitions)] == pl.lead.self
	return local == (pl.where == "local")
}

// moved counts the partitions whose leader differs between pl's reading
// and now, as the node at base sees it.
func (pl *placement) moved(base, secret string) (int, error) {
	if pl.lead == nil {
		return 0, nil
	}
	now, err := clusterLeadership(base, secret)
	if err != nil {
		return 0, err
	}
	n := 0
	for p, name := range pl.lead.leader {
		if now.leader[p] != name {
			n++
		}
	}
	return n, nil
}
