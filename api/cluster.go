package api

import (
	"net/http"

	"persona/cluster"
)

// Cluster is what the admin API reads of the cluster membership; a node
// outside a cluster has none.
type Cluster interface {
	// Name returns this node's name in the cluster.
	Name() string
	// Members returns every member this node knows, itself included.
	Members() []cluster.Member
}

// clusterMembers shows the members of the cluster as this node sees them:
// name, membership, actor, raft and API addresses, state and since when (unix
// milliseconds), readiness, whether it announced it leaves, and the
// partitions it leads and follows.
func (s *Server) clusterMembers(*http.Request) (any, error) {
	if s.cluster == nil {
		return nil, notFound("This node is not in a cluster: cluster.enabled is false.")
	}
	ms := s.cluster.Members()
	out := make([]map[string]any, 0, len(ms))
	for _, m := range ms {
		row := map[string]any{
			"name":          m.Name,
			"address":       m.Addr,
			"actor_address": m.ActorAddr,
			"raft_address":  m.RaftAddr,
			"api_address":   m.APIAddr,
			"state":         m.State.String(),
			"since_ts":      m.Since.UnixMilli(),
			"ready":         m.Ready,
			"leaving":       m.Leaving,
			"led":           orEmpty(m.Led),
			"followed":      orEmpty(m.Followed),
		}
		if m.MetaErr != nil {
			row["metadata_error"] = m.MetaErr.Error()
		}
		out = append(out, row)
	}
	return map[string]any{"self": s.cluster.Name(), "members": out}, nil
}

// orEmpty is ps, or an empty list for none (JSON [] rather than null).
func orEmpty(ps []int) []int {
	if ps == nil {
		return []int{}
	}
	return ps
}
