// Package metrics declares every Prometheus collector of persona, each once,
// next to its meaning. A node owns one Metrics (with its own registry, so that
// several nodes in one test process do not mix); other packages call its small
// methods. Labels are low-cardinality: never a user or room ID.
package metrics

import (
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics holds one node's collectors.
type Metrics struct {
	reg *prometheus.Registry

	httpDuration                           *prometheus.HistogramVec
	profileWrites                          *prometheus.CounterVec
	activations                            *prometheus.CounterVec
	passivations                           *prometheus.CounterVec
	actorsActive                           *prometheus.GaugeVec
	propagation                            prometheus.Histogram
	roomEvents                             prometheus.Counter
	pending                                prometheus.Gauge
	retries, noticesResent                 prometheus.Counter
	coalesced                              prometheus.Counter
	joinSnapshots                          *prometheus.CounterVec
	mailboxDepth                           *prometheus.GaugeVec
	commitWrite, commitSync, commitBatches prometheus.Histogram
	outbox                                 *outboxMetrics
	federationDuration                     *prometheus.HistogramVec
	keyFetches                             *prometheus.CounterVec
	txnsIn, pdusRejected                   *prometheus.CounterVec
	pdusAccepted                           prometheus.Counter
	remoteProfiles                         *remoteProfileMetrics
	mediaFetches                           *prometheus.CounterVec
	clusterM                               clusterMetrics
	replicationM                           replicationMetrics
	remoteM                                remoteMetrics
}

// Sizer reports storage sizes; the store implements it.
type Sizer interface {
	Sizes() (lsm, vlog int64)
}

// New creates a node's collectors. store may be nil (no storage metrics).
func New(store Sizer) *Metrics {
	m := &Metrics{reg: prometheus.NewRegistry()}
	m.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.httpDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "persona_http_request_duration_seconds",
		Help:    "Time to answer a Client-Server API request, by route pattern, method and status; _count counts requests.",
		Buckets: []float64{.0005, .001, .0025, .005, .0075, .01, .015, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
	}, []string{"route", "method", "status"})
	m.profileWrites = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_profile_writes_total",
		Help: "Profile writes made durable, by field (displayname, avatar_url, m.tz, custom, all) and operation (set, delete, replace).",
	}, []string{"field", "op"})
	m.activations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_actor_activations_total",
		Help: "Actors activated (loaded into memory), by kind.",
	}, []string{"kind"})
	m.passivations = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_actor_passivations_total",
		Help: "Idle actors stopped to free memory, by kind.",
	}, []string{"kind"})
	m.actorsActive = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "persona_actors_active",
		Help: "Actors in memory now, by kind.",
	}, []string{"kind"})
	m.propagation = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "persona_propagation_seconds",
		Help:    "Time from an accepted profile write to its last room applied.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 16),
	})
	m.roomEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "persona_room_events_total",
		Help: "Events appended to room timelines.",
	})
	m.pending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "persona_pending_deliveries",
		Help: "Room deliveries of profile versions sent and not yet acknowledged.",
	})
	m.retries = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "persona_delivery_retries_total",
		Help: "Room deliveries sent again after a timeout or restart.",
	})
	m.noticesResent = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "persona_membership_notices_resent_total",
		Help: "Membership notices a room sent a user's actor again, unacknowledged after resend_after or a restart.",
	})
	m.coalesced = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "persona_coalesced_versions_total",
		Help: "Profile versions a lagging room skipped because it received the latest version alone.",
	})
	m.joinSnapshots = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_join_snapshots_total",
		Help: "Joins sent the user's current profile alone instead of each version after the one their event carried, by reason: " +
			"rejoin (always), mode (a change kept out of rooms or meant for all of them came after), " +
			"unknown (those versions are neither in the user's history nor among the last max_backlog kept: the join lagged beyond the backlog).",
	}, []string{"reason"})
	for _, reason := range []string{"rejoin", "mode", "unknown"} {
		m.joinSnapshots.WithLabelValues(reason) // exported at 0 from the start
	}
	m.mailboxDepth = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "persona_actor_mailbox_depth",
		Help: "Messages waiting in actor mailboxes, summed by kind, sampled.",
	}, []string{"kind"})
	m.commitWrite = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "persona_commit_write_seconds", Help: "Time a group commit round spends writing to badger.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.commitSync = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "persona_commit_sync_seconds", Help: "Time a group commit round spends in fsync.",
		Buckets: prometheus.ExponentialBuckets(0.0001, 2, 16),
	})
	m.commitBatches = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name: "persona_commit_batches", Help: "Actor write batches gathered into one group commit round.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 14),
	})
	m.reg.MustRegister(m.commitWrite, m.commitSync, m.commitBatches)
	m.outbox = newOutboxMetrics(m.reg)
	m.reg.MustRegister(m.httpDuration, m.profileWrites, m.activations, m.passivations,
		m.actorsActive, m.propagation, m.roomEvents, m.pending, m.retries, m.noticesResent, m.coalesced, m.joinSnapshots, m.mailboxDepth)
	m.newFederation()
	m.remoteProfiles = newRemoteProfileMetrics(m.reg)
	m.mediaFetches = newMediaFetches(m.reg)
	if store != nil {
		m.reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "persona_badger_lsm_bytes", Help: "Size of badger's LSM tree on disk.",
			}, func() float64 { l, _ := store.Sizes(); return float64(l) }),
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "persona_badger_vlog_bytes", Help: "Size of badger's value log on disk.",
			}, func() float64 { _, v := store.Sizes(); return float64(v) }),
		)
	}
	return m
}

// Register adds collectors of other packages (e.g. commit counters).
func (m *Metrics) Register(c ...prometheus.Collector) { m.reg.MustRegister(c...) }

// Handler serves the registry in the Prometheus text format.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{Registry: m.reg})
}

// HTTPRequest records one answered request.
func (m *Metrics) HTTPRequest(route, method, status string, d time.Duration) {
	m.httpDuration.WithLabelValues(route, method, status).Observe(d.Seconds())
}

// ProfileWrite counts a durable profile write.
func (m *Metrics) ProfileWrite(field, op string) {
	switch field {
	case "displayname", "avatar_url", "m.tz", "all":
	default:
		field = "custom"
	}
	m.profileWrites.WithLabelValues(field, op).Inc()
}

// Activated counts an actor brought into memory; the passivations of its
// kind are exported from then on, at 0 until one is stopped.
func (m *Metrics) Activated(kind string) {
	m.activations.WithLabelValues(kind).Inc()
	m.actorsActive.WithLabelValues(kind).Inc()
	m.passivations.WithLabelValues(kind)
}

// Passivated counts an actor stopped (idle, or at shutdown).
func (m *Metrics) Passivated(kind string) {
	m.passivations.WithLabelValues(kind).Inc()
	m.actorsActive.WithLabelValues(kind).Dec()
}

// MailboxDepth sets the sampled mailbox depth of a kind.
func (m *Metrics) MailboxDepth(kind string, n int) {
	m.mailboxDepth.WithLabelValues(kind).Set(float64(n))
}

// Propagated records the time from a write to its last room applied.
func (m *Metrics) Propagated(d time.Duration) { m.propagation.Observe(d.Seconds()) }

// RoomEvents counts events appended to room timelines.
func (m *Metrics) RoomEvents(n int) { m.roomEvents.Add(float64(n)) }

// PendingDeliveries adds delta to the pending-deliveries gauge.
func (m *Metrics) PendingDeliveries(delta int) { m.pending.Add(float64(delta)) }

// Retried counts deliveries sent again.
func (m *Metrics) Retried(n int) { m.retries.Add(float64(n)) }

// NoticesResent counts membership notices sent again.
func (m *Metrics) NoticesResent(n int) { m.noticesResent.Add(float64(n)) }

// Coalesced counts versions skipped by a lagging room.
func (m *Metrics) Coalesced(n int) { m.coalesced.Add(float64(n)) }

// JoinSnapshot counts a join sent the current profile alone, for reason
// ("rejoin", "mode" or "unknown").
func (m *Metrics) JoinSnapshot(reason string) { m.joinSnapshots.WithLabelValues(reason).Inc() }

// CommitRound records one group commit round (storage.Options.OnRound).
func (m *Metrics) CommitRound(batches, ops int, write, sync time.Duration) {
	m.commitBatches.Observe(float64(batches))
	m.commitWrite.Observe(write.Seconds())
	m.commitSync.Observe(sync.Seconds())
}
