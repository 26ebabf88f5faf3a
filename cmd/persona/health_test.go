package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// probeStatus GETs url, a /health or /ready, and returns its code and
// status.
func probeStatus(url string) (int, string, error) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	var body struct{ Status string }
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return resp.StatusCode, "", fmt.Errorf("GET %s: %d, body not JSON: %w", url, resp.StatusCode, err)
	}
	return resp.StatusCode, body.Status, nil
}

// TestServeAnswersProbesAndStopsOnSIGTERM runs `persona serve` in a
// cluster of one: /ready turns 200 on the client and the metrics listener
// once the node has joined, /health is 200, and a SIGTERM makes the
// process exit 0. While it stops, /ready never answers 200 again after a
// 503.
func TestServeAnswersProbesAndStopsOnSIGTERM(t *testing.T) {
	t.Parallel()
	addrs := freeLoopbackAddrs(t, 5)
	client, metrics := "http://"+addrs[0], "http://"+addrs[1]
	cfgPath := filepath.Join(t.TempDir(), "persona.yaml")
	cfg := fmt.Sprintf(`server_name: "persona.test"
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: ""
registration:
  shared_secret: "probe-secret"
cluster:
  enabled: true
  node_name: "probed"
  bind: %q
  actor_bind: %q
  raft_bind: %q
`, filepath.Join(t.TempDir(), "data"), addrs[0], addrs[1], addrs[2], addrs[3], addrs[4])
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	node := startCrashChild(t, cfgPath, client)

	for _, base := range []string{client, metrics} {
		deadline := time.Now().Add(10 * time.Second)
		for {
			code, status, err := probeStatus(base + "/ready")
			if err != nil {
				t.Fatalf("%v\n%s", err, node.out.tail())
			}
			if code == http.StatusOK && status == "ready" {
				break
			}
			// The client listener answers while Start still opens the others.
			starting := status == "starting" || status == "not in the cluster"
			if code != http.StatusServiceUnavailable || !starting || time.Now().After(deadline) {
				t.Fatalf("%s/ready: %d %q\n%s", base, code, status, node.out.tail())
			}
			time.Sleep(10 * time.Millisecond)
		}
		if code, status, err := probeStatus(base + "/health"); err != nil || code != http.StatusOK || status != "ok" {
			t.Fatalf("%s/health: %d %q %v", base, code, status, err)
		}
	}

	// Poll /ready while the node stops, until its listener is gone.
	answers := make(chan []string, 1)
	go func() {
		var seen []string
		for {
			_, status, err := probeStatus(client + "/ready")
			if err != nil {
				answers <- seen
				return
			}
			if len(seen) == 0 || seen[len(seen)-1] != status {
				seen = append(seen, status)
			}
		}
	}()
	if err := node.terminate(20 * time.Second); err != nil {
		t.Fatalf("after SIGTERM: %v, want exit 0\n%s", err, node.out.tail())
	}
	select {
	case seen := <-answers:
		for i := 1; i < len(seen); i++ {
			if seen[i] == "ready" {
				t.Fatalf("/ready while stopping: %v, ready again after %q", seen, seen[i-1])
			}
		}
		t.Logf("/ready while stopping: %v", seen)
	case <-time.After(10 * time.Second):
		t.Fatal("/ready still answers 10s after the process exited")
	}
}
