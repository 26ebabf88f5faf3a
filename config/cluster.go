package config

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
)

// maxClusterPartitions is the most partitions cluster.partitions takes:
// each node gossips two bitmaps of them (led and followed) in memberlist's
// 512 bytes of node metadata.
const maxClusterPartitions = 1024

// maxDrainDelay is the longest cluster.drain_delay: a stop is meant to
// end within a process supervisor's patience (systemd's 90 s, Kubernetes'
// 30 s grace by default).
const maxDrainDelay = 20 * time.Second

// validate adds the problems of the cluster section to p; actorPartitions
// is actors.partitions.
func (c *Cluster) validate(p *problems, actorPartitions int) {
	if len(c.NodeName) > 128 || strings.IndexFunc(c.NodeName, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }) >= 0 {
		p.add("cluster.node_name", "must be up to 128 printable characters without spaces, or \"\" for the host name and bind port (got %q)", c.NodeName)
	}
	if err := checkIPPort(c.Bind, true); err != nil {
		p.add("cluster.bind", "%v (got %q)", err, c.Bind)
	}
	if c.Advertise != "" {
		if err := checkIPPort(c.Advertise, false); err != nil {
			p.add("cluster.advertise", `%v, or "" for cluster.bind's (got %q)`, err, c.Advertise)
		}
	}
	if err := checkHostPort(c.ActorBind); err != nil {
		p.add("cluster.actor_bind", "%v (got %q)", err, c.ActorBind)
	}
	if err := checkHostPort(c.RaftBind); err != nil {
		p.add("cluster.raft_bind", "%v (got %q)", err, c.RaftBind)
	}
	for i, seed := range c.Join {
		if err := checkSeed(seed); err != nil {
			p.add(fmt.Sprintf("cluster.join[%d]", i), "%v (got %q)", err, seed)
		}
	}
	if c.ReplicationFactor < 1 {
		p.add("cluster.replication_factor", "must be >= 1 (got %d)", c.ReplicationFactor)
	}
	p.between("cluster.partitions", c.Partitions, 1, maxClusterPartitions)
	if c.Enabled && c.Partitions != actorPartitions {
		p.add("cluster.partitions", "must equal actors.partitions (%d) in a cluster: both count the partitions users and rooms hash to (got %d)",
			actorPartitions, c.Partitions)
	}
	p.positiveDuration("cluster.election_timeout", c.ElectionTimeout)
	if c.DrainDelay < 0 || c.DrainDelay > maxDrainDelay {
		p.add("cluster.drain_delay", "must be between 0s and %s (got %s)", maxDrainDelay, c.DrainDelay)
	}
	if c.GossipKeyFile != "" {
		if _, err := c.GossipKeys(); err != nil {
			p.add("cluster.gossip_key_file", "%v", err)
		}
	}
}

// GossipKeys reads GossipKeyFile: one base64 key a line, 16, 24 or 32
// bytes (AES-128, -192 or -256) once decoded; blank lines and lines
// starting with # are skipped. The first key encrypts, each decrypts.
// An empty GossipKeyFile has no keys.
func (c *Cluster) GossipKeys() ([][]byte, error) {
	if c.GossipKeyFile == "" {
		return nil, nil
	}
	data, err := os.ReadFile(c.GossipKeyFile)
	if err != nil {
		return nil, fmt.Errorf("cannot read the key file: %w", err)
	}
	var keys [][]byte
	sc := bufio.NewScanner(bytes.NewReader(data))
	for line := 1; sc.Scan(); line++ {
		s := strings.TrimSpace(sc.Text())
		if s == "" || strings.HasPrefix(s, "#") {
			continue
		}
		k, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, fmt.Errorf("%s line %d: not base64 (make a key with `openssl rand -base64 32`)", c.GossipKeyFile, line)
		}
		if n := len(k); n != 16 && n != 24 && n != 32 {
			return nil, fmt.Errorf("%s line %d: a key of %d bytes, want 16, 24 or 32", c.GossipKeyFile, line, n)
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("%s holds no key (one base64 key a line)", c.GossipKeyFile)
	}
	return keys, nil
}

// checkIPPort checks an IP:port; port 0 (a free port) is allowed if
// anyPort.
func checkIPPort(addr string, anyPort bool) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New(`must be IP:port such as "127.0.0.1:7946"`)
	}
	if _, err := netip.ParseAddr(host); err != nil {
		return fmt.Errorf("the host must be an IP address, not %q", host)
	}
	lo := 1
	if anyPort {
		lo = 0
	}
	if n, err := strconv.Atoi(port); err != nil || n < lo || n > 65535 {
		return fmt.Errorf("port must be a number %d-65535, not %q", lo, port)
	}
	return nil
}

// checkSeed checks a node to join: host:port with a host and a port 1-65535.
func checkSeed(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return errors.New(`must be host:port such as "10.0.0.2:7946"`)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port must be a number 1-65535, not %q", port)
	}
	return checkHostPort(addr)
}
