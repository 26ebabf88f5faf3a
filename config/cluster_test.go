package config

import (
	"bytes"
	"encoding/base64"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseCluster(t *testing.T) {
	t.Parallel()
	keyFile := writeKeys(t, base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32)))
	in := `cluster:
  enabled: true
  node_name: persona-1
  bind: 0.0.0.0:7946
  advertise: 10.0.0.1:7946
  actor_bind: 0.0.0.0:8090
  raft_bind: 0.0.0.0:8190
  join: ["10.0.0.2:7946", "persona-3.internal:7946"]
  replication_factor: 5
  partitions: 64
  election_timeout: 300ms
  drain_delay: 2s
  gossip_key_file: ` + keyFile + "\n"
	got, err := parse("", []byte(in), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Cluster = Cluster{
		Enabled:           true,
		NodeName:          "persona-1",
		Bind:              "0.0.0.0:7946",
		Advertise:         "10.0.0.1:7946",
		ActorBind:         "0.0.0.0:8090",
		RaftBind:          "0.0.0.0:8190",
		Join:              []string{"10.0.0.2:7946", "persona-3.internal:7946"},
		ReplicationFactor: 5,
		Partitions:        64,
		ElectionTimeout:   300 * time.Millisecond,
		DrainDelay:        2 * time.Second,
		GossipKeyFile:     keyFile,
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got.Cluster, want.Cluster)
	}
}

func TestClusterEnv(t *testing.T) {
	t.Parallel()
	got, err := parse("", nil, env(map[string]string{
		"PERSONA_CLUSTER_ENABLED":            "true",
		"PERSONA_CLUSTER_NODE_NAME":          "n2",
		"PERSONA_CLUSTER_BIND":               "198.18.0.2:7946",
		"PERSONA_CLUSTER_JOIN":               "198.18.0.1:7946, 198.18.0.3:7946",
		"PERSONA_CLUSTER_ELECTION_TIMEOUT":   "2s",
		"PERSONA_CLUSTER_REPLICATION_FACTOR": "1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Cluster.Enabled, want.Cluster.NodeName, want.Cluster.Bind = true, "n2", "198.18.0.2:7946"
	want.Cluster.Join = []string{"198.18.0.1:7946", "198.18.0.3:7946"}
	want.Cluster.ElectionTimeout, want.Cluster.ReplicationFactor = 2*time.Second, 1
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got.Cluster, want.Cluster)
	}
	_, err = parse("", nil, env(map[string]string{"PERSONA_CLUSTER_PARTITIONS": "many", "PERSONA_CLUSTER_JOIN": "a:1,,b:2"}))
	wantAll(t, err, "PERSONA_CLUSTER_PARTITIONS", "PERSONA_CLUSTER_JOIN")
}

func TestValidateCluster(t *testing.T) {
	t.Parallel()
	good := writeKeys(t, "# rolled in first",
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 16)), "",
		base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 24)))
	short := writeKeys(t, base64.StdEncoding.EncodeToString([]byte("too short")))
	notBase64 := writeKeys(t, "not a key!")
	empty := writeKeys(t, "# nothing but a comment")
	missing := filepath.Join(t.TempDir(), "missing.key")
	tests := []struct {
		name string
		set  func(*Cluster)
		want string // "" means valid
	}{
		{"enabled", func(c *Cluster) { c.Enabled = true }, ""},
		{"all interfaces", func(c *Cluster) { c.Bind, c.ActorBind = "0.0.0.0:7946", ":8090" }, ""},
		{"ipv6", func(c *Cluster) { c.Bind, c.Advertise = "[::1]:7946", "[fd00::1]:7946" }, ""},
		{"free port", func(c *Cluster) { c.Bind = "127.0.0.1:0" }, ""},
		{"bind host name", func(c *Cluster) { c.Bind = "localhost:7946" }, "cluster.bind: the host must be an IP address"},
		{"bind no port", func(c *Cluster) { c.Bind = "127.0.0.1" }, "cluster.bind: must be IP:port"},
		{"bind port too big", func(c *Cluster) { c.Bind = "127.0.0.1:70000" }, "cluster.bind: port"},
		{"advertise port 0", func(c *Cluster) { c.Advertise = "10.0.0.1:0" }, "cluster.advertise: port must be a number 1-65535"},
		{"advertise name", func(c *Cluster) { c.Advertise = "node1:7946" }, "cluster.advertise: the host must be an IP address"},
		{"actor bind", func(c *Cluster) { c.ActorBind = "8090" }, "cluster.actor_bind:"},
		{"raft bind", func(c *Cluster) { c.RaftBind = "" }, "cluster.raft_bind:"},
		{"seeds", func(c *Cluster) { c.Join = []string{"10.0.0.2:7946", "node3.example:7946", "[fd00::3]:7946"} }, ""},
		{"seed without port", func(c *Cluster) { c.Join = []string{"10.0.0.2:7946", "10.0.0.3"} }, "cluster.join[1]: must be host:port"},
		{"seed port 0", func(c *Cluster) { c.Join = []string{"10.0.0.2:0"} }, "cluster.join[0]: port"},
		{"seed without host", func(c *Cluster) { c.Join = []string{":7946"} }, "cluster.join[0]:"},
		{"seed bad host", func(c *Cluster) { c.Join = []string{"a_b:7946"} }, "cluster.join[0]: invalid host"},
		{"name with space", func(c *Cluster) { c.NodeName = "node 1" }, "cluster.node_name:"},
		{"long name", func(c *Cluster) { c.NodeName = strings.Repeat("n", 129) }, "cluster.node_name:"},
		{"no replicas", func(c *Cluster) { c.ReplicationFactor = 0 }, "cluster.replication_factor: must be >= 1"},
		{"no partitions", func(c *Cluster) { c.Partitions = 0 }, "cluster.partitions: must be between 1 and 1024"},
		{"too many partitions", func(c *Cluster) { c.Partitions = 2048 }, "cluster.partitions: must be between 1 and 1024"},
		{"partitions unlike the actors' when enabled", func(c *Cluster) { c.Enabled, c.Partitions = true, 32 }, "cluster.partitions: must equal actors.partitions (64)"},
		{"partitions unlike the actors' when disabled", func(c *Cluster) { c.Partitions = 32 }, ""},
		{"election timeout", func(c *Cluster) { c.ElectionTimeout = 0 }, "cluster.election_timeout:"},
		{"no drain delay", func(c *Cluster) { c.DrainDelay = 0 }, ""},
		{"negative drain delay", func(c *Cluster) { c.DrainDelay = -time.Second }, "cluster.drain_delay: must be between 0s and 20s"},
		{"long drain delay", func(c *Cluster) { c.DrainDelay = time.Minute }, "cluster.drain_delay: must be between 0s and 20s"},
		{"keys", func(c *Cluster) { c.GossipKeyFile = good }, ""},
		{"missing key file", func(c *Cluster) { c.GossipKeyFile = missing }, "cluster.gossip_key_file: cannot read the key file"},
		{"short key", func(c *Cluster) { c.GossipKeyFile = short }, "line 1: a key of 9 bytes, want 16, 24 or 32"},
		{"not base64", func(c *Cluster) { c.GossipKeyFile = notBase64 }, "line 1: not base64"},
		{"no key", func(c *Cluster) { c.GossipKeyFile = empty }, "holds no key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.set(&c.Cluster)
			err := c.Validate()
			if tt.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			wantAll(t, err, tt.want)
		})
	}

	c := Default().Cluster
	c.GossipKeyFile = good
	keys, err := c.GossipKeys()
	if err != nil || len(keys) != 2 || len(keys[0]) != 16 || len(keys[1]) != 24 || keys[0][0] != 1 {
		t.Fatalf("GossipKeys() = %v, %v; want the 16-byte key, then the 24-byte one", keys, err)
	}
	if keys, err := Default().Cluster.GossipKeys(); keys != nil || err != nil {
		t.Fatalf("no key file: %v, %v", keys, err)
	}
}

// writeKeys writes lines to a key file and returns its path.
func writeKeys(t *testing.T, lines ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gossip.key")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
