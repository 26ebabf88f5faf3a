package cluster

import (
	"math"
	"time"
)

// suspicion is how long memberlist may keep a member suspect before it
// declares it dead or the member refutes: its suspicion timeout, the
// longest it can be for a cluster of n nodes, plus a probe interval.
//
// A suspicion read from memberlist's log holds only that long: memberlist
// logs a failed probe even when it then drops the suspicion (the member's
// incarnation moved on meanwhile), and then neither a death nor a refute
// ever ends it.
type suspicion struct {
	mult, maxMult int
	probe         time.Duration
}

// window returns how long a member may stay suspect in a cluster of n.
func (s suspicion) window(n int) time.Duration {
	scale := math.Max(1, math.Log10(math.Max(1, float64(n))))
	timeout := time.Duration(s.mult) * time.Duration(scale*1000) * s.probe / 1000
	// With too few members to expect SuspicionMult-2 confirmations,
	// memberlist waits the minimum; otherwise up to maxMult times it.
	if k := s.mult - 2; n-2 >= k && k > 0 {
		timeout *= time.Duration(s.maxMult)
	}
	return timeout + s.probe
}
