package main

import "testing"

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
