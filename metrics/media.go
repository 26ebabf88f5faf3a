package metrics

import "github.com/prometheus/client_golang/prometheus"

// mediaFetchResults are the outcomes of fetching a local media id this node
// lacks from the other members of its cluster, each exported at 0 from the
// start: a member had it (a copy kept), none had it, or one holds it
// reserved and not yet uploaded.
var mediaFetchResults = []string{"fetched", "not_found", "not_yet_uploaded"}

func newMediaFetches(reg *prometheus.Registry) *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "persona_media_member_fetches_total",
		Help: "Fetches of local media this node lacked from the other members of its cluster, by result (fetched, not_found, not_yet_uploaded).",
	}, []string{"result"})
	for _, v := range mediaFetchResults {
		c.WithLabelValues(v)
	}
	reg.MustRegister(c)
	return c
}

// MediaMemberFetch counts one fetch of media from the other members, by
// result.
func (m *Metrics) MediaMemberFetch(result string) {
	if m != nil {
		m.mediaFetches.WithLabelValues(result).Inc()
	}
}
