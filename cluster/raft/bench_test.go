package raft

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"persona/internal/cputime"
)

// BenchmarkReplicatedProposals runs 3 nodes in this process over loopback
// TCP, each with its log and a badger state machine on disk, G groups
// replicated on all three, and P proposers that each propose 300-byte
// commands to a random group's leader and wait for the acknowledgement.
// An op is one acknowledged proposal. It reports proposals/s, fsyncs/s
// of each node's log, proposals per entry and per fsync, the latency, and
// the process's CPU (all three nodes) per proposal.
// Run: go test -run '^$' -bench ReplicatedProposals -benchtime 100000x ./cluster/raft
func BenchmarkReplicatedProposals(b *testing.B) {
	for _, c := range []struct{ groups, proposers int }{{1, 1}, {1, 64}, {64, 64}, {64, 256}} {
		b.Run(fmt.Sprintf("groups=%d/proposers=%d", c.groups, c.proposers), func(b *testing.B) {
			benchProposals(b, c.groups, c.proposers)
		})
	}
}

func benchProposals(b *testing.B, groups, proposers int) {
	ids := groupIDs(groups)
	c := newCluster(b, 3, ids, func(o *Options) { o.TickInterval = 100 * time.Millisecond })
	leaders := c.waitLeaders(ids, 30*time.Second)
	var lmu sync.Mutex
	leaderOf := func(g uint64) *Driver {
		lmu.Lock()
		defer lmu.Unlock()
		return c.driver(leaders[g])
	}
	value := make([]byte, 300-16)
	for i := range value {
		value[i] = 'a' + byte(i%26)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	before := map[uint64]Stats{}
	for _, n := range c.running() {
		before[n.id] = n.d.Stats()
	}
	var next atomic.Int64
	lat := make([][]time.Duration, proposers)
	var wg sync.WaitGroup
	cpu0 := cputime.Process()
	b.ResetTimer()
	start := time.Now()
	for p := range proposers {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(b.N); i = next.Add(1) {
				g := ids[rand.IntN(len(ids))]
				cmd := append(fmt.Appendf(nil, "%015d=", i), value...) // a fresh buffer: raft keeps it
				t0 := time.Now()
				for {
					err := leaderOf(g).Propose(ctx, g, cmd)
					if err == nil {
						break
					}
					var nl *NotLeaderError
					if !errors.As(err, &nl) && !errors.Is(err, ErrDropped) {
						b.Error(err)
						return
					}
					if nl != nil && nl.Leader != 0 {
						lmu.Lock()
						leaders[g] = nl.Leader
						lmu.Unlock()
					} else {
						time.Sleep(10 * time.Millisecond)
					}
				}
				lat[p] = append(lat[p], time.Since(t0))
			}
		})
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	cpu := cputime.Process() - cpu0

	var syncs, props, entries uint64
	for _, n := range c.running() {
		s := n.d.Stats()
		syncs += s.Syncs - before[n.id].Syncs
		props += s.Proposals - before[n.id].Proposals
		entries += s.ProposalEntries - before[n.id].ProposalEntries
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	sec := elapsed.Seconds()
	b.ReportMetric(float64(b.N)/sec, "proposals/s")
	b.ReportMetric(float64(syncs)/3/sec, "fsyncs/s/node")
	b.ReportMetric(float64(props)/float64(max(entries, 1)), "proposals/entry")
	b.ReportMetric(float64(b.N)/(float64(syncs)/3), "proposals/fsync")
	b.ReportMetric(float64(all[len(all)/2].Microseconds())/1e3, "p50-ms")
	b.ReportMetric(float64(all[len(all)*99/100].Microseconds())/1e3, "p99-ms")
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/op")
}
