package metrics

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// keySources are the places the key ring looks for another server's keys:
// the node's store, the server itself and the configured notaries.
var keySources = []string{"store", "direct", "notary"}

// keyResults are the outcomes of one look for keys: some found, none
// found, or a failure (the source did not answer, or answered wrongly).
var keyResults = []string{"found", "none", "error"}

// newFederation registers the collectors of the federation listener and
// the key ring.
func (m *Metrics) newFederation() {
	m.federationDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "persona_federation_request_duration_seconds",
		Help:    "Time to answer a request of another server on the federation listener, by route pattern, method and status; _count counts requests.",
		Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 10, 30},
	}, []string{"route", "method", "status"})
	m.keyFetches = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_federation_key_fetches_total",
		Help: "Looks for other servers' signing keys, by source (store, direct, notary) and result (found, none, error).",
	}, []string{"source", "result"})
	for _, source := range keySources {
		for _, result := range keyResults {
			m.keyFetches.WithLabelValues(source, result) // exported at 0 from the start
		}
	}
	m.txnsIn = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_federation_transactions_received_total",
		Help: "Transactions other servers sent, by result (applied, duplicate: a resend answered from the record).",
	}, []string{"result"})
	m.pdusRejected = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_federation_pdus_rejected_total",
		Help: "PDUs of other servers' transactions that were refused, by reason (malformed, unknown_room, signature, auth, auth_event: only for a refused auth event it cites, answered as taken, missing_prev, other).",
	}, []string{"reason"})
	m.pdusAccepted = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "persona_federation_pdus_accepted_total",
		Help: "PDUs of other servers' transactions that their rooms accepted and made durable (resends of held events included).",
	})
	m.reg.MustRegister(m.federationDuration, m.keyFetches, m.txnsIn, m.pdusRejected, m.pdusAccepted)
}

// FederationTxnIn counts one transaction received, by result.
func (m *Metrics) FederationTxnIn(result string) {
	if m != nil {
		m.txnsIn.WithLabelValues(result).Inc()
	}
}

// FederationPDURejected counts one refused PDU, by reason.
func (m *Metrics) FederationPDURejected(reason string) {
	if m != nil {
		m.pdusRejected.WithLabelValues(reason).Inc()
	}
}

// FederationPDUAccepted counts one PDU its room accepted.
func (m *Metrics) FederationPDUAccepted() {
	if m != nil {
		m.pdusAccepted.Inc()
	}
}

// FederationPDUsAccepted is how many PDUs rooms accepted so far.
func (m *Metrics) FederationPDUsAccepted() float64 {
	var d dto.Metric
	if m.pdusAccepted.Write(&d) != nil {
		return 0
	}
	return d.GetCounter().GetValue()
}

// FederationRequest records one answered request on the federation listener.
func (m *Metrics) FederationRequest(route, method, status string, d time.Duration) {
	m.federationDuration.WithLabelValues(route, method, status).Observe(d.Seconds())
}

// KeyFetch counts one look for keys at source ("store", "direct" or
// "notary") with its result ("found", "none" or "error").
func (m *Metrics) KeyFetch(source, result string) {
	m.keyFetches.WithLabelValues(source, result).Inc()
}
