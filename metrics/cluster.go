package metrics

import (
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// Label values of the cluster collectors, each exported at 0 from the
// start: the states of a member and the kinds of membership events.
var (
	clusterStates = []string{"alive", "suspect", "dead", "left"}
	clusterEvents = []string{"join", "update", "fail", "leave"}
)

// clusterMetrics are the collectors of the cluster membership, registered
// by the first call of a Cluster method: a node outside a cluster exports
// none of them.
type clusterMetrics struct {
	once    sync.Once
	members *prometheus.GaugeVec
	events  *prometheus.CounterVec
	health  prometheus.Gauge
}

// cluster returns the cluster collectors, registered once.
func (m *Metrics) cluster() *clusterMetrics {
	c := &m.clusterM
	c.once.Do(func() {
		c.members = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persona_cluster_members",
			Help: "Members of the cluster as this node sees them, itself included, by state (alive, suspect, dead, left); dead and left members stay listed for a day.",
		}, []string{"state"})
		c.events = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_cluster_events_total",
			Help: "Membership events this node saw, by kind: join (a member joined or came back), update (new metadata, or suspect and alive again), fail (declared dead), leave (left on purpose).",
		}, []string{"kind"})
		c.health = prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "persona_cluster_health_score",
			Help: "memberlist's awareness of this node: 0 is healthy; higher means its own probes and acks run late (an overloaded node), and it waits longer before suspecting others.",
		})
		for _, s := range clusterStates {
			c.members.WithLabelValues(s)
		}
		for _, k := range clusterEvents {
			c.events.WithLabelValues(k)
		}
		m.reg.MustRegister(c.members, c.events, c.health)
	})
	return c
}

// ClusterMembers sets how many members are in state (alive, suspect,
// dead or left).
func (m *Metrics) ClusterMembers(state string, n int) {
	if m != nil {
		m.cluster().members.WithLabelValues(state).Set(float64(n))
	}
}

// ClusterEvent counts one membership event of kind (join, update, fail
// or leave).
func (m *Metrics) ClusterEvent(kind string) {
	if m != nil {
		m.cluster().events.WithLabelValues(kind).Inc()
	}
}

// ClusterHealthScore sets memberlist's health score of this node.
func (m *Metrics) ClusterHealthScore(score int) {
	if m != nil {
		m.cluster().health.Set(float64(score))
	}
}
