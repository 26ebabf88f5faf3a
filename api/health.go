package api

import "net/http"

// Probes tells the health endpoints how the node is; the node implements
// it. Neither method may block on disk writes or on the actors: a probe
// answers in microseconds, even on a node in trouble.
type Probes interface {
	// Live returns "" while the node serves (its actors run, its storage
	// is open, its last commit round succeeded and a read works), else
	// the status it answers with ("stopping", "failing") and why.
	Live() (status, reason string)
	// Ready returns "" once the node takes traffic (every listener
	// started, the actors' pending work resumed, and in a cluster the
	// membership lists this node alive and ready), else its status
	// ("starting", "stopping", "not in the cluster", "failing") and why.
	Ready() (status, reason string)
}

// ProbeRoutes serves p on mux: GET /health (liveness) answers 200
// {"status":"ok"} and GET /ready (readiness) 200 {"status":"ready"}, else
// 503 {"status": ..., "reason": ...}, the reason only with reasons (it may
// name a file or an address: the operators' listener shows it, the
// clients' does not). Neither needs a token; both are served on the client
// listener, for a load balancer in front of it, and on the metrics
// listener, for an operator's probes.
func ProbeRoutes(mux *http.ServeMux, p Probes, reasons bool) {
	mux.HandleFunc("GET /health", probe(p.Live, "ok", reasons))
	mux.HandleFunc("GET /ready", probe(p.Ready, "ready", reasons))
}

// probe answers check's status: 200 with ok when it returns "", else 503.
func probe(check func() (string, string), ok string, reasons bool) http.HandlerFunc {
	return func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		status, reason := check()
		if status == "" {
			writeJSON(w, http.StatusOK, map[string]string{"status": ok})
			return
		}
		out := map[string]string{"status": status}
		if reasons {
			out["reason"] = reason
		}
		writeJSON(w, http.StatusServiceUnavailable, out)
	}
}
