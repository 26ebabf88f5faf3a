package metrics

import (
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// envelopeOutcomes are the label values of persona_cluster_envelopes_total,
// each exported at 0 from the start.
var envelopeOutcomes = []string{"sent", "forwarded", "received", "held", "dropped_hops", "dropped_no_owner", "dropped_unknown_type", "rerouted"}

// remoteMetrics are the collectors of actors reached across nodes,
// registered by the first call of a method below: a node that never routes
// across nodes exports none of them.
type remoteMetrics struct {
	once      sync.Once
	requests  *prometheus.HistogramVec
	envelopes *prometheus.CounterVec
}

// remote returns the collectors of actors across nodes, registered once.
func (m *Metrics) remote() *remoteMetrics {
	r := &m.remoteM
	r.once.Do(func() {
		r.requests = prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "persona_cluster_remote_request_seconds",
			Help:    "Time to answer a request to an actor whose partition another node owns, from the request to its answer, by actor kind; _count counts the answered ones.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
		}, []string{"kind"})
		r.envelopes = prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_cluster_envelopes_total",
			Help: "Messages to actors across nodes, by outcome: sent (to the owner of their partition), forwarded (received by a node that does not own the partition, sent on to the owner it knows), received (delivered to a local actor), held (kept while no owner was known or reachable), dropped_hops (forwarded too often), dropped_no_owner (no owner known or reachable in time, or too many held), dropped_unknown_type (a message type this node does not know), rerouted (a request sent again: its partition moved before its actor took it, the host dropped it, or it could not be delivered).",
		}, []string{"outcome"})
		for _, o := range envelopeOutcomes {
			r.envelopes.WithLabelValues(o)
		}
		m.reg.MustRegister(r.requests, r.envelopes)
	})
	return r
}

// RemoteRequest records the time a request to an actor of kind on another
// node took to be answered.
func (m *Metrics) RemoteRequest(kind string, d time.Duration) {
	if m != nil {
		m.remote().requests.WithLabelValues(kind).Observe(d.Seconds())
	}
}

// Envelope counts one message to an actor across nodes by outcome (one of
// envelopeOutcomes).
func (m *Metrics) Envelope(outcome string) {
	if m != nil {
		m.remote().envelopes.WithLabelValues(outcome).Inc()
	}
}
