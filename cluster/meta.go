package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"

	"github.com/hashicorp/memberlist"
)

// Meta is what a node tells the others about itself, in memberlist's node
// metadata (at most memberlist.MetaMaxSize bytes once encoded).
type Meta struct {
	// ActorAddr is the host:port of the node's actor system (protoactor
	// remote), where the partitions it leads are reached.
	ActorAddr string
	// RaftAddr is the host:port where the node takes the replication
	// traffic of the partitions it holds; "" for none.
	RaftAddr string
	// APIAddr is the host:port of the node's Client-Server API, where
	// the other nodes fetch the media it holds; "" for none.
	APIAddr string
	// Ready reports that the node serves: it has started, and leads or
	// follows the partitions it claims.
	Ready bool
	// Draining reports that the node hands its partitions' leadership
	// over before it stops: the others lead them meanwhile.
	Draining bool
	// Led lists the partitions whose replicas the node leads, ascending.
	Led []int
	// Followed lists the partitions the node holds a replica of without
	// leading them, ascending; no partition is both led and followed.
	Followed []int
}

// metaVersion is the version of the encoding encodeMeta writes. A later
// version appends its fields after those of the one before, so a reader of
// version 1 reads any later one; version 2 added RaftAddr, version 3
// APIAddr.
const metaVersion = 3

// The flag bits: Meta.Ready, and the node leaving the cluster (set by
// Leave, so that the others tell its leave from a failure: memberlist
// tells its event delegate the one like the other).
const (
	metaReady    = 1 << 0
	metaLeaving  = 1 << 1
	metaDraining = 1 << 2
)

// encodeMeta encodes m for a cluster of partitions partitions, flagged
// leaving or not:
//
//	version (1 byte), flags (1 byte: bit 0 ready, bit 1 leaving),
//	partitions (uvarint), len(ActorAddr) (uvarint), ActorAddr,
//	led bitmap, followed bitmap (each ceil(partitions/8) bytes;
//	partition p is bit p%8 of byte p/8),
//	since version 2: len(RaftAddr) (uvarint), RaftAddr
//	since version 3: len(APIAddr) (uvarint), APIAddr
//
// It fails when a partition is out of range or both led and followed, or
// when the encoding exceeds memberlist.MetaMaxSize.
func encodeMeta(m Meta, partitions int, leaving bool) ([]byte, error) {
	if partitions < 1 {
		return nil, fmt.Errorf("cluster: %d partitions, want >= 1", partitions)
	}
	led, err := bitmap(m.Led, partitions)
	if err != nil {
		return nil, fmt.Errorf("cluster: led partitions: %w", err)
	}
	followed, err := bitmap(m.Followed, partitions)
	if err != nil {
		return nil, fmt.Errorf("cluster: followed partitions: %w", err)
	}
	for i := range led {
		if both := led[i] & followed[i]; both != 0 {
			return nil, fmt.Errorf("cluster: partition %d is both led and followed", i*8+lowestBit(both))
		}
	}
	b := make([]byte, 0, 2+3*binary.MaxVarintLen64+len(m.ActorAddr)+len(led)+len(followed)+len(m.RaftAddr)+len(m.APIAddr))
	var flags byte
	if m.Ready {
		flags |= metaReady
	}
	if leaving {
		flags |= metaLeaving
	}
	if m.Draining {
		flags |= metaDraining
	}
	b = append(b, metaVersion, flags)
	b = binary.AppendUvarint(b, uint64(partitions))
	b = binary.AppendUvarint(b, uint64(len(m.ActorAddr)))
	b = append(b, m.ActorAddr...)
	b = append(b, led...)
	b = append(b, followed...)
	b = binary.AppendUvarint(b, uint64(len(m.RaftAddr)))
	b = append(b, m.RaftAddr...)
	b = binary.AppendUvarint(b, uint64(len(m.APIAddr)))
	b = append(b, m.APIAddr...)
	if len(b) > memberlist.MetaMaxSize {
		return nil, fmt.Errorf("cluster: node metadata of %d bytes exceeds memberlist's %d (%d partitions, actor address %q, raft address %q, API address %q)",
			len(b), memberlist.MetaMaxSize, partitions, m.ActorAddr, m.RaftAddr, m.APIAddr)
	}
	return b, nil
}

// errMeta is the error of metadata decodeMeta cannot read.
var errMeta = errors.New("cluster: malformed node metadata")

// decoded is metadata as decodeMeta read it.
type decoded struct {
	Meta
	partitions int  // the number of partitions it was encoded for
	leaving    bool // the node is leaving the cluster
}

// decodeMeta reads metadata encodeMeta wrote, of any version >= 1.
func decodeMeta(b []byte) (decoded, error) {
	if len(b) < 2 || b[0] < 1 {
		return decoded{}, errMeta
	}
	d := decoded{Meta: Meta{Ready: b[1]&metaReady != 0, Draining: b[1]&metaDraining != 0}, leaving: b[1]&metaLeaving != 0}
	rest := b[2:]
	partitions, n := binary.Uvarint(rest)
	if n <= 0 || partitions < 1 || partitions > 8*memberlist.MetaMaxSize {
		return decoded{}, errMeta
	}
	rest = rest[n:]
	addrLen, n := binary.Uvarint(rest)
	if n <= 0 || addrLen > uint64(len(rest)-n) {
		return decoded{}, errMeta
	}
	rest = rest[n:]
	d.ActorAddr, rest = string(rest[:addrLen]), rest[addrLen:]
	size := int(partitions+7) / 8
	if len(rest) < 2*size {
		return decoded{}, errMeta
	}
	d.partitions = int(partitions)
	d.Led = members(rest[:size], d.partitions)
	d.Followed = members(rest[size:2*size], d.partitions)
	rest = rest[2*size:]
	var err error
	if b[0] >= 2 {
		if d.RaftAddr, rest, err = readString(rest); err != nil {
			return decoded{}, err
		}
	}
	if b[0] >= 3 {
		if d.APIAddr, _, err = readString(rest); err != nil {
			return decoded{}, err
		}
	}
	return d, nil
}

// readString reads a uvarint length and that many bytes from b, and
// returns them as a string with what follows them.
func readString(b []byte) (string, []byte, error) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return "", nil, errMeta
	}
	return string(b[k : k+int(n)]), b[k+int(n):], nil
}

// bitmap sets the bit of each partition in ps, all in [0, partitions).
func bitmap(ps []int, partitions int) ([]byte, error) {
	b := make([]byte, (partitions+7)/8)
	for _, p := range ps {
		if p < 0 || p >= partitions {
			return nil, fmt.Errorf("partition %d out of range [0, %d)", p, partitions)
		}
		b[p/8] |= 1 << (p % 8)
	}
	return b, nil
}

// members lists the partitions below partitions whose bit b sets, ascending;
// nil for none.
func members(b []byte, partitions int) []int {
	var ps []int
	for p := range partitions {
		if b[p/8]&(1<<(p%8)) != 0 {
			ps = append(ps, p)
		}
	}
	return ps
}

func lowestBit(b byte) int {
	for i := range 8 {
		if b&(1<<i) != 0 {
			return i
		}
	}
	return -1
}

// clone returns a copy of m that shares no slice with it.
func (m Meta) clone() Meta {
	m.Led, m.Followed = slices.Clone(m.Led), slices.Clone(m.Followed)
	return m
}
