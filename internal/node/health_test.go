package node

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"persona/config"
)

// probeAnswer is one answer of /health or /ready.
type probeAnswer struct {
	code   int
	status string
	reason string
	closes bool // the answer said "Connection: close"
}

// getProbe GETs url and decodes its probe answer.
func getProbe(t *testing.T, url string) probeAnswer {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	var body struct{ Status, Reason string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("GET %s: %d, body not JSON: %v", url, resp.StatusCode, err)
	}
	return probeAnswer{resp.StatusCode, body.Status, body.Reason, resp.Close}
}

// readyGauge returns the persona_ready sample of the metrics at addr.
func readyGauge(t *testing.T, addr string) string {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if strings.HasPrefix(line, "persona_ready ") {
			return line
		}
	}
	t.Fatal("no persona_ready in /metrics")
	return ""
}

// TestProbesFollowTheNodesLife: a started node answers /health and /ready
// 200 on its client and its metrics listener, and persona_ready is 1.
// Once Stop begins, before the node leaves or closes a listener, both
// listeners answer 503 "stopping", the client listener closes each
// connection after its answer, and persona_ready is 0; after Stop the
// listeners are closed.
func TestProbesFollowTheNodesLife(t *testing.T) {
	t.Parallel()
	if status, _ := (&Node{}).Ready(); status != "starting" {
		t.Fatalf("a node Start has not finished: ready status %q, want starting", status)
	}
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.ServerName = "persona.test"
	cfg.Listen.Client, cfg.Listen.Metrics, cfg.Listen.Federation = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Registration.SharedSecret = "test-secret"
	n, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			_ = n.Stop(context.Background())
		}
	})
	bases := []string{"http://" + n.ClientAddr(), "http://" + n.MetricsAddr()}
	for _, base := range bases {
		if a := getProbe(t, base+"/health"); a.code != http.StatusOK || a.status != "ok" || a.closes {
			t.Fatalf("%s/health of a started node: %+v", base, a)
		}
		if a := getProbe(t, base+"/ready"); a.code != http.StatusOK || a.status != "ready" {
			t.Fatalf("%s/ready of a started node: %+v", base, a)
		}
	}
	if g := readyGauge(t, n.MetricsAddr()); g != "persona_ready 1" {
		t.Fatalf("started: %s", g)
	}

	var during []probeAnswer
	var gauge string
	n.beforeClose = func() {
		for _, base := range bases {
			during = append(during, getProbe(t, base+"/ready"), getProbe(t, base+"/health"))
		}
		gauge = readyGauge(t, n.MetricsAddr())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stopped = true
	if err := n.Stop(ctx); err != nil {
		t.Fatal(err)
	}
	if len(during) != 2*len(bases) {
		t.Fatalf("Stop did not probe the listeners before closing them: %+v", during)
	}
	for i, a := range during {
		operators := i >= 2 // the metrics listener's probes: bases[1]
		if a.code != http.StatusServiceUnavailable || a.status != "stopping" || (a.reason != "") != operators {
			t.Errorf("probe %d while stopping: %+v, want 503 stopping, with a reason on the metrics listener only", i, a)
		}
		if !operators && !a.closes {
			t.Errorf("probe %d while stopping: the client listener kept the connection open", i)
		}
	}
	if gauge != "persona_ready 0" {
		t.Errorf("while stopping: %s", gauge)
	}
	for _, base := range bases {
		if resp, err := http.Get(base + "/ready"); err == nil {
			resp.Body.Close()
			t.Errorf("%s answers %d after Stop", base, resp.StatusCode)
		}
	}
}

// TestHealthFailsWithTheStore: a node whose store is closed under it
// answers /health and /ready 503 "failing", naming storage on the metrics
// listener (and no reason on the client listener).
func TestHealthFailsWithTheStore(t *testing.T) {
	t.Parallel()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.ServerName = "persona.test"
	cfg.Listen.Client, cfg.Listen.Metrics, cfg.Listen.Federation = "127.0.0.1:0", "127.0.0.1:0", ""
	cfg.Registration.SharedSecret = "test-secret"
	n, err := Start(cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = n.Stop(context.Background()) })
	if err := n.store.Close(); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/health", "/ready"} {
		a := getProbe(t, "http://"+n.MetricsAddr()+path)
		if a.code != http.StatusServiceUnavailable || a.status != "failing" || !strings.Contains(a.reason, "storage") {
			t.Errorf("%s with the store closed: %+v", path, a)
		}
		if a := getProbe(t, "http://"+n.ClientAddr()+path); a.code != http.StatusServiceUnavailable || a.status != "failing" || a.reason != "" {
			t.Errorf("%s on the client listener with the store closed: %+v, want 503 failing with no reason", path, a)
		}
	}
}
