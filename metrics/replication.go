package metrics

import (
	"strconv"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
)

// replicationMetrics are the collectors of the partitions' raft groups on
// this node, registered on first use.
type replicationMetrics struct {
	once       sync.Once
	partitions *prometheus.GaugeVec
	leaders    prometheus.Counter
	changes    *prometheus.CounterVec
	lag        *prometheus.GaugeVec
}

// replicationRoles are the roles a node holds a partition's replica in.
var replicationRoles = []string{"leader", "follower", "learner"}

// replicationChanges are the membership changes of a group a leader makes.
var replicationChanges = []string{"add", "promote", "remove", "transfer"}

// replication returns the replication collectors, registered once.
func (m *Metrics) replication() *replicationMetrics {
	r := &m.replicationM
	r.once.Do(func() {
		r.partitions = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persona_cluster_partitions",
			Help: "Partitions this node holds a replica of, by role: leader (it hosts the partition's actors), follower (a voter), or learner (catching up, not counted in the quorum yet).",
		}, []string{"role"})
		r.leaders = prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persona_cluster_leader_changes_total",
			Help: "Times this node learned of a new leader of a partition it holds (an election or a transfer).",
		})
		r.changes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_cluster_replica_changes_total",
			Help: "Changes this node made, as leader, to its partitions' replicas: add a learner, promote it to voter, remove a replica, transfer leadership.",
		}, []string{"change"})
		r.lag = prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "persona_cluster_replication_lag_entries",
			Help: "For each partition this node leads, the log entries its furthest-behind replica lacks.",
		}, []string{"partition"})
		for _, role := range replicationRoles {
			r.partitions.WithLabelValues(role)
		}
		for _, c := range replicationChanges {
			r.changes.WithLabelValues(c)
		}
		m.reg.MustRegister(r.partitions, r.leaders, r.changes, r.lag)
	})
	return r
}

// ClusterPartitions sets how many partitions this node leads, follows
// as a voter, and holds a replica of that does not vote yet (learning).
func (m *Metrics) ClusterPartitions(led, followed, learning int) {
	if m != nil {
		r := m.replication()
		r.partitions.WithLabelValues("leader").Set(float64(led))
		r.partitions.WithLabelValues("follower").Set(float64(followed))
		r.partitions.WithLabelValues("learner").Set(float64(learning))
	}
}

// ClusterLeaderChange counts a new leader of a partition this node holds.
func (m *Metrics) ClusterLeaderChange() {
	if m != nil {
		m.replication().leaders.Inc()
	}
}

// ClusterReplicaChange counts a change (add, promote, remove or
// transfer) this node made to a partition's replicas.
func (m *Metrics) ClusterReplicaChange(change string) {
	if m != nil {
		m.replication().changes.WithLabelValues(change).Inc()
	}
}

// ClusterReplicationLags sets the replication lag, in entries, of each
// partition this node leads, and drops the partitions it no longer leads.
func (m *Metrics) ClusterReplicationLags(lags map[int]uint64) {
	if m == nil {
		return
	}
	r := m.replication()
	r.lag.Reset()
	for p, lag := range lags {
		r.lag.WithLabelValues(strconv.Itoa(p)).Set(float64(lag))
	}
}
