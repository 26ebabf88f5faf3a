package metrics

import "github.com/prometheus/client_golang/prometheus"

// Ready registers persona_ready, read at each scrape from ready: 1 while
// the node takes traffic (what GET /ready answers 200 to), 0 while it
// starts or stops or is out of its cluster. Call it once per Metrics.
func (m *Metrics) Ready(ready func() bool) {
	m.reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "persona_ready",
		Help: "1 while the node is ready to take traffic (GET /ready answers 200), 0 while it starts, stops or is not in its cluster.",
	}, func() float64 {
		if ready() {
			return 1
		}
		return 0
	}))
}
