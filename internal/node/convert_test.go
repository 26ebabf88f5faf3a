package node_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"persona/cluster"
	"persona/cluster/raft"
	"persona/config"
	"persona/internal/node"
	"persona/internal/testnode"
)

// convertPartitions is actors.partitions and cluster.partitions of the
// nodes these tests convert.
const convertPartitions = 16

// single runs a test node without a cluster on commitPath, in dir.
func single(commitPath string) func(*config.Config) {
	return func(c *config.Config) {
		c.Listen.Federation = ""
		c.Storage.CommitPath = commitPath
		c.Actors.Partitions, c.Cluster.Partitions = convertPartitions, convertPartitions
	}
}

// clustered runs a test node in a cluster, joining seeds.
func clustered(name string, seeds ...string) func(*config.Config) {
	return func(c *config.Config) {
		inCluster(name, "127.0.0.1:0", seeds...)(c)
		c.Actors.Partitions, c.Cluster.Partitions = convertPartitions, convertPartitions
	}
}

// TestSingleNodeFoundsTheCluster runs a node without a cluster on each
// commit path and gives it a user with a name, then starts it in a
// cluster on the same data directory. Told to join another node, it
// refuses, naming what to do; with no seeds, it founds every partition's
// group, leads them all, and serves the name; its local raft log, if it
// had one, is gone. Restarted, it is a member as any other, and what a
// conversion cut short left is finished and deleted.
func TestSingleNodeFoundsTheCluster(t *testing.T) {
	t.Parallel()
	for _, path := range []string{"log", "raft"} {
		t.Run(path, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			n := testnode.Start(t, dir, single(path))
			cli := n.Register("converted")
			ctx := context.Background()
			if err := cli.SetDisplayName(ctx, "kept"); err != nil {
				t.Fatal(err)
			}
			n.Stop()
			if local, err := raft.IsLocalLog(filepath.Join(dir, "raft")); err != nil || local != (path == "raft") {
				t.Fatalf("a local raft log: %v, %v", local, err)
			}

			cfg := config.Default()
			cfg.DataDir, cfg.ServerName, cfg.Listen.Client = dir, testnode.ServerName, "127.0.0.1:0"
			clustered("a", "127.0.0.1:1")(cfg)
			if n, err := node.Start(cfg, nil); err == nil {
				_ = n.Stop(ctx)
				t.Fatal("a node holding data joined another")
			} else if !strings.Contains(err.Error(), "cluster.join") || !strings.Contains(err.Error(), "no cluster.join") {
				t.Fatalf("joining with data: %v", err)
			}
			if local, err := raft.IsLocalLog(filepath.Join(dir, "raft")); err != nil || local != (path == "raft") {
				t.Fatalf("a local raft log after the refusal: %v, %v", local, err)
			}

			for i := range 2 {
				if i == 1 { // what a conversion cut short leaves: done again, then deleted
					if err := os.WriteFile(filepath.Join(dir, "founding"), nil, 0o600); err != nil {
						t.Fatal(err)
					}
					if err := os.Mkdir(filepath.Join(dir, "raft.single"), 0o700); err != nil {
						t.Fatal(err)
					}
				}
				n = testnode.Start(t, dir, clustered("a"))
				waitCluster(t, n, "a leading every partition", func(ms map[string]cluster.Member) bool {
					return len(ms["a"].Led) == convertPartitions
				})
				if name, err := n.Client(cli).GetOwnDisplayName(ctx); err != nil || name.DisplayName != "kept" {
					t.Fatalf("the name after the conversion: %+v, %v", name, err)
				}
				if local, err := raft.IsLocalLog(filepath.Join(dir, "raft")); err != nil || local {
					t.Errorf("the local raft log after the conversion: %v, %v", local, err)
				}
				for _, left := range []string{"raft.single", "founding"} {
					if _, err := os.Stat(filepath.Join(dir, left)); !os.IsNotExist(err) {
						t.Errorf("%s left after the conversion: %v", left, err)
					}
				}
				n.Stop()
			}
		})
	}
}
