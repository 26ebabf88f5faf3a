package main

import (
	"strings"
	"testing"
)

// TestProgressPastItsTotal: a bar whose work runs past its total (a load
// phase's last requests outlast its length) stays full.
func TestProgressPastItsTotal(t *testing.T) {
	t.Parallel()
	var out strings.Builder
	p := newProgress(&out, "writes", 2)
	p.add(3)
	p.finish()
	if !strings.Contains(out.String(), "150% 3/2") {
		t.Errorf("progress: %q", out.String())
	}
}
