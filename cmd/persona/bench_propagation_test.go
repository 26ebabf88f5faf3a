package main

import (
	"testing"
	"time"
)

// TestP99Since: the bound is the smallest bucket holding 99% of the PUTs
// counted between two scrapes.
func TestP99Since(t *testing.T) {
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
