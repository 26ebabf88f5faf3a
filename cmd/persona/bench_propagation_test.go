package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"persona/config"
	"persona/internal/testnode"
)

// TestP99Since: the bound is the smallest bucket holding 99% of the PUTs
// counted between two scrapes.
func TestP99Since(t *testing.T) {
	t.Parallel()
	before := histogram{.005: 100, .01: 100, .025: 100}
	after := histogram{.005: 150, .01: 199, .025: 200}
	if b, n := after.p99Since(before); b != .01 || n != 100 {
		t.Fatalf("p99Since = %g, %d; want 0.01, 100", b, n)
	}
	after = histogram{.005: 150, .01: 197, .025: 200}
	if b, _ := after.p99Since(before); b != .025 {
		t.Fatalf("p99Since = %g; want 0.025", b)
	}
	if _, n := before.p99Since(before); n != 0 {
		t.Fatalf("no PUTs between the scrapes, got %d", n)
	}
}

// TestPercentile: nearest rank, so that a p99 of 100 values is the 99th.
func TestPercentile(t *testing.T) {
	t.Parallel()
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i))
	}
	for _, c := range []struct {
		list []time.Duration
		p    float64
		want time.Duration
	}{{d, 99, 99}, {d, 50, 50}, {d, 100, 100}, {d[:5], 50, 3}, {d[:20], 99, 20}, {d[:1], 99, 1}} {
		if got := percentile(c.list, c.p); got != c.want {
			t.Errorf("p%g of %d values = %d, want %d", c.p, len(c.list), got, c.want)
		}
	}
}

// TestBenchPropagationAgainstANode runs the whole bench, its trace report
// included, against a real node with three rooms. Not parallel: the bench
// sets the package's HTTP client and starts a trace (one per process).
func TestBenchPropagationAgainstANode(t *testing.T) {
	n := testnode.Start(t, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
	path := filepath.Join(t.TempDir(), "persona.yaml")
	yaml := fmt.Sprintf("server_name: %q\nlisten:\n  client: %q\n  metrics: %q\nregistration:\n  shared_secret: %q\n",
		n.Config.ServerName, n.ClientAddr(), n.MetricsAddr(), n.Config.Registration.SharedSecret)
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	args := []string{"--config", path, "--rooms", "3", "--renames", "2", "--burst", "5", "--trace", filepath.Join(t.TempDir(), "b.trace")}
	if err := benchPropagation(args, &out, io.Discard); err != nil {
		t.Fatalf("bench: %v\n%s", err, out.String())
	}
	for _, want := range []string{
		"propagation to 3 rooms: p50",
		"PUT latency with no fan-out (another user, back to back)",
		"burst of 5 renames: converged",
		"verified the last name in 3 rooms' state",
		"trace: the ",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("bench output lacks %q:\n%s", want, out.String())
		}
	}
}
