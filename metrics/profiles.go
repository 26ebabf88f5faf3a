package metrics

import "github.com/prometheus/client_golang/prometheus"

// Label values of the remote-profile collectors, each exported at 0 from
// the start.
var (
	// profileQueryResults are the outcomes of one query to another server:
	// a profile, no such user (404), refused (403), no answer (network,
	// timeout), or an answer persona could not use (another status, bad
	// JSON, too large).
	profileQueryResults = []string{"found", "not_found", "forbidden", "unreachable", "error"}
	// profileLookupSources say where a client's lookup of a remote profile
	// was answered from: a fresh cache entry, a failure remembered, an
	// expired entry after the refresh failed, a query the lookup made, or a
	// query another lookup was already making.
	profileLookupSources = []string{"cache", "negative", "stale", "query", "shared"}
	// profileUpdateSources are what refreshed a cached profile between
	// queries: a member event or a profile EDU of the user's server.
	profileUpdateSources = []string{"member_event", "edu"}
)

// remoteProfileMetrics are the collectors of the cache of other servers'
// profiles.
type remoteProfileMetrics struct {
	queries, lookups, updates *prometheus.CounterVec
}

func newRemoteProfileMetrics(reg *prometheus.Registry) *remoteProfileMetrics {
	r := &remoteProfileMetrics{
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_remote_profile_queries_total",
			Help: "Profile queries sent to other servers (/_matrix/federation/v1/query/profile), by result (found, not_found, forbidden, unreachable, error).",
		}, []string{"result"}),
		lookups: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_remote_profile_lookups_total",
			Help: "Lookups of other servers' users' profiles, by what answered them: cache (a fresh entry: a hit), negative (a failure remembered), " +
				"stale (an expired entry, its refresh having failed), query (a query this lookup made), shared (a query another lookup was making).",
		}, []string{"source"}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "persona_remote_profile_cache_updates_total",
			Help: "Cached profiles of other servers' users changed between queries, by source (member_event, edu).",
		}, []string{"source"}),
	}
	for _, v := range profileQueryResults {
		r.queries.WithLabelValues(v)
	}
	for _, v := range profileLookupSources {
		r.lookups.WithLabelValues(v)
	}
	for _, v := range profileUpdateSources {
		r.updates.WithLabelValues(v)
	}
	reg.MustRegister(r.queries, r.lookups, r.updates)
	return r
}

// RemoteProfileQuery counts one profile query to another server, by result.
func (m *Metrics) RemoteProfileQuery(result string) {
	if m != nil {
		m.remoteProfiles.queries.WithLabelValues(result).Inc()
	}
}

// RemoteProfileLookup counts one lookup of a remote profile, by source.
func (m *Metrics) RemoteProfileLookup(source string) {
	if m != nil {
		m.remoteProfiles.lookups.WithLabelValues(source).Inc()
	}
}

// RemoteProfileUpdate counts one cached remote profile changed between
// queries, by source.
func (m *Metrics) RemoteProfileUpdate(source string) {
	if m != nil {
		m.remoteProfiles.updates.WithLabelValues(source).Inc()
	}
}
