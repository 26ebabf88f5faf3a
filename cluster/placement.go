package cluster

import (
	"slices"

	"github.com/cespare/xxhash/v2"
)

// Replicas returns the members that hold a replica of partition, chosen by
// rendezvous (highest random weight) hashing: the min(rf, distinct
// members) members of greatest weight for the partition, the greatest
// first (the preferred leader). The result depends only on the set of
// names, not on their order or repetition; rf < 1 chooses none.
//
// Removing a member changes only the partitions it held a replica of, each
// of which gains the next member by weight; adding one changes only the
// partitions it enters, each of which loses its last replica.
func Replicas(partition int, members []string, rf int) []string {
	p := newPlacer(members, rf)
	return p.replicas(uint64(partition), make([]string, 0, p.rf))
}

// Place returns the replicas of every partition in [0, partitions), as
// Replicas chooses them: Place(n, ms, rf)[p] is Replicas(p, ms, rf).
func Place(partitions int, members []string, rf int) [][]string {
	if partitions < 1 {
		return nil
	}
	p := newPlacer(members, rf)
	all := make([]string, partitions*p.rf)
	out := make([][]string, partitions)
	for i := range out {
		out[i] = p.replicas(uint64(i), all[i*p.rf:i*p.rf:(i+1)*p.rf])
	}
	return out
}

// placer holds the distinct names of the members, sorted, with the hash of
// each.
type placer struct {
	names  []string
	hashes []uint64
	rf     int // capped by len(names), >= 0
	// weights is scratch for replicas: one weight per name.
	weights []uint64
}

func newPlacer(members []string, rf int) *placer {
	names := slices.Compact(slices.Sorted(slices.Values(members)))
	p := &placer{names: names, hashes: make([]uint64, len(names)), weights: make([]uint64, len(names)),
		rf: max(0, min(rf, len(names)))}
	for i, n := range names {
		p.hashes[i] = xxhash.Sum64String(n)
	}
	return p
}

// weight returns the weight of the member whose name hashes to h for
// partition: splitmix64's finalizer of h XOR the finalizer of the
// partition. xxhash64 (the hash the identities are partitioned by) spreads
// each name over 64 bits once per placement; the finalizer, a bijection
// whose every output bit depends on every input bit, turns the two into
// weights that order members for a partition, and partitions for a
// member, like independent draws, at a few cycles per pair instead of a
// hash of (partition, name) per pair.
func weight(h, partition uint64) uint64 {
	return splitmix64(h ^ splitmix64(partition))
}

// splitmix64 returns the output of SplitMix64 for the state x: x plus the
// golden gamma, then Stafford's mix13 finalizer.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ x>>30) * 0xbf58476d1ce4e5b9
	x = (x ^ x>>27) * 0x94d049bb133111eb
	return x ^ x>>31
}

// replicas appends to dst, which has room for p.rf names, the p.rf names of
// greatest weight for partition, the greatest first; equal weights (names
// whose hashes collide) order by name.
func (p *placer) replicas(partition uint64, dst []string) []string {
	if p.rf == 0 {
		return dst
	}
	// top holds the indexes of the best names so far, best first.
	var buf [8]int
	top := buf[:0]
	if p.rf > len(buf) {
		top = make([]int, 0, p.rf)
	}
	mixed := splitmix64(partition)
	for i, h := range p.hashes {
		w := splitmix64(h ^ mixed) // weight(h, partition)
		p.weights[i] = w
		if len(top) == p.rf && w <= p.weights[top[len(top)-1]] {
			continue // names are sorted, so a tie goes to the name already in
		}
		at := len(top)
		for at > 0 && w > p.weights[top[at-1]] {
			at--
		}
		if len(top) < p.rf {
			top = append(top, 0)
		}
		copy(top[at+1:], top[at:len(top)-1])
		top[at] = i
	}
	for _, i := range top {
		dst = append(dst, p.names[i])
	}
	return dst
}

// Owner is the member whose actors hold a partition.
type Owner struct {
	// Name is the member's name.
	Name string
	// ActorAddr is the host:port of its actor system.
	ActorAddr string
}
