package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// outboxMetrics are the federation outbox's collectors. The per-destination
// gauges cover the destinations whose outbox is in memory (it has entries
// queued, or had lately): an idle one leaves, which bounds their series.
type outboxMetrics struct {
	transactions, failures prometheus.Counter
	pdus                   prometheus.Histogram
	latency                prometheus.Histogram
	refused                prometheus.Counter
	dropped                *prometheus.CounterVec
	dests                  *destinations
}

func newOutboxMetrics(reg *prometheus.Registry) *outboxMetrics {
	o := &outboxMetrics{
		transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persona_federation_transactions_total",
			Help: "Federation transactions a destination answered 200.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persona_federation_transaction_failures_total",
			Help: "Attempts to send a federation transaction that failed (network, timeout, non-200); the transaction is sent again after a back-off.",
		}),
		pdus: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "persona_federation_transaction_pdus",
			Help:    "PDUs in each federation transaction delivered.",
			Buckets: []float64{0, 1, 2, 5, 10, 20, 30, 40, 50},
		}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "persona_federation_transaction_seconds",
			Help:    "Time from sending a federation transaction to the destination's 200.",
			Buckets: prometheus.ExponentialBuckets(0.005, 2, 14),
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "persona_federation_pdus_refused_total",
			Help: "PDUs a destination answered with an error in a 200 to their transaction; they are not sent again.",
		}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_federation_outbox_dropped_pdus_total",
			Help: "Queued PDUs dropped, by reason: horizon (the oldest entry of their destination's queue passed the horizon; each room's latest PDU is kept) or refused (the destination refused their whole transaction with a 4xx). The destination fetches them from later events' prev_events when it needs them.",
		}, []string{"reason"}),
		dests: &destinations{
			m: map[string]destState{},
			queued: prometheus.NewDesc("persona_federation_outbox_queued",
				"Entries (PDUs and EDUs) queued for a destination and not yet delivered.", []string{"destination"}, nil),
			age: prometheus.NewDesc("persona_federation_outbox_oldest_age_seconds",
				"Age of the oldest entry queued for a destination; 0 when none.", []string{"destination"}, nil),
			backoff: prometheus.NewDesc("persona_federation_outbox_backoff_seconds",
				"Seconds until the next attempt to send to a destination that failed; 0 when healthy.", []string{"destination"}, nil),
		},
	}
	for _, reason := range []string{"horizon", "refused"} {
		o.dropped.WithLabelValues(reason) // exported at 0 from the start
	}
	reg.MustRegister(o.transactions, o.failures, o.pdus, o.latency, o.refused, o.dropped, o.dests)
	return o
}

// destState is what the gauges of one destination are computed from.
type destState struct {
	queued          int
	oldest, retryAt time.Time
}

// destinations is a collector of the per-destination gauges: ages and
// back-offs are computed when scraped.
type destinations struct {
	mu                   sync.Mutex
	m                    map[string]destState
	queued, age, backoff *prometheus.Desc
}

// Describe is part of prometheus.Collector.
func (d *destinations) Describe(ch chan<- *prometheus.Desc) {
	ch <- d.queued
	ch <- d.age
	ch <- d.backoff
}

// Collect is part of prometheus.Collector.
func (d *destinations) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	d.mu.Lock()
	defer d.mu.Unlock()
	for name, s := range d.m {
		var age, wait float64
		if !s.oldest.IsZero() {
			age = max(0, now.Sub(s.oldest).Seconds())
		}
		if !s.retryAt.IsZero() {
			wait = max(0, s.retryAt.Sub(now).Seconds())
		}
		ch <- prometheus.MustNewConstMetric(d.queued, prometheus.GaugeValue, float64(s.queued), name)
		ch <- prometheus.MustNewConstMetric(d.age, prometheus.GaugeValue, age, name)
		ch <- prometheus.MustNewConstMetric(d.backoff, prometheus.GaugeValue, wait, name)
	}
}

// OutboxState records a destination's queue: its entries not yet
// delivered, when the oldest was queued (zero: none) and when the next
// attempt after a failure is due (zero: not backing off).
func (m *Metrics) OutboxState(dest string, queued int, oldest, retryAt time.Time) {
	d := m.outbox.dests
	d.mu.Lock()
	d.m[dest] = destState{queued: queued, oldest: oldest, retryAt: retryAt}
	d.mu.Unlock()
}

// OutboxGone removes a destination whose outbox left memory from the
// gauges.
func (m *Metrics) OutboxGone(dest string) {
	d := m.outbox.dests
	d.mu.Lock()
	delete(d.m, dest)
	d.mu.Unlock()
}

// OutboxTransaction counts a transaction delivered with pdus PDUs, refused
// of which the destination answered with an error, took after it was sent.
func (m *Metrics) OutboxTransaction(pdus, refused int, took time.Duration) {
	m.outbox.transactions.Inc()
	m.outbox.pdus.Observe(float64(pdus))
	m.outbox.latency.Observe(took.Seconds())
	m.outbox.refused.Add(float64(refused))
}

// OutboxTransactionFailed counts a failed attempt to send a transaction.
func (m *Metrics) OutboxTransactionFailed() { m.outbox.failures.Inc() }

// OutboxDropped counts n PDUs dropped for reason ("horizon" or "refused").
func (m *Metrics) OutboxDropped(reason string, n int) {
	m.outbox.dropped.WithLabelValues(reason).Add(float64(n))
}
