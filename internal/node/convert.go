package node

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"

	"persona/cluster/raft"
	"persona/cluster/replicas"
	"persona/config"
	"persona/storage"
)

// A node that ran without a cluster becomes the cluster's first node:
// started with cluster.enabled and no seeds on its data directory, it
// founds every partition's group with itself as the only voter and the
// data it holds as the group's state; the nodes that join it receive
// each partition as a snapshot when placement adds them. Its writes
// were acknowledged through its own commit log (commit_path: log),
// which opening the store replays and syncs, or through a local raft
// log under node id 1 (commit_path: raft), which takeOverLocalLog
// applies and then deletes before the cluster's log takes its place.

// takeOverLocalLog applies every entry of the local raft log in
// dataDir/raft, if that is what it holds (raft.IsLocalLog), to the store,
// makes the store durable and deletes the log; and deletes what a
// take-over cut short left. The store's applied indexes point into the
// deleted log until the cluster's log forgets them (openReplicated).
// A node told to join others (seeds) refuses before it changes anything.
func takeOverLocalLog(dataDir string, opts storage.Options, partitions int, seeds []string, log *slog.Logger) error {
	dir := filepath.Join(dataDir, "raft")
	old := dir + ".single"
	local, err := raft.IsLocalLog(dir)
	if err != nil {
		return fmt.Errorf("read the raft log %s: %w", dir, err)
	}
	if local && len(seeds) > 0 {
		return errJoinWithData(dataDir, seeds)
	}
	if local {
		log.Info("applying the raft log of the node without a cluster before the cluster's takes its place", "dir", dir)
		opts.OnRound = nil
		s, err := openStore(dataDir, opts, true, partitions, log)
		if err != nil {
			return fmt.Errorf("apply the raft log of the node without a cluster (%s): %w", dir, err)
		}
		err = s.SyncApplied()
		if e := s.Close(); err == nil {
			err = e
		}
		if err != nil {
			return fmt.Errorf("apply the raft log of the node without a cluster (%s): %w", dir, err)
		}
		if err := os.Rename(dir, old); err != nil {
			return fmt.Errorf("set the applied raft log aside: %w", err)
		}
		if err := syncDir(dataDir); err != nil {
			return err
		}
	}
	if err := os.RemoveAll(old); err != nil {
		return fmt.Errorf("delete the applied raft log %s: %w", old, err)
	}
	return nil
}

// foundingFile marks, in the data directory, a node founding its
// partitions' groups with the data it holds: a founding cut short goes
// on at the next start.
const foundingFile = "founding"

// foundHeld founds every partition's group with this node as the only
// voter when the node never ran in a cluster (fresh: its raft log was
// empty) and the store holds partition data: the node ran without a
// cluster and this is its first start in one. Such a node must found the
// cluster; joining another, it would lose its data, and it refuses. A
// node that has run in a cluster never founds alone, whatever its store
// holds (a partition it left whose state it had not yet deleted).
func foundHeld(ctx context.Context, r *replication, s *storage.Store, dataDir string, cfg *config.Config, fresh bool) error {
	marker := filepath.Join(dataDir, foundingFile)
	if _, err := os.Stat(marker); errors.Is(err, os.ErrNotExist) {
		if !fresh {
			return nil
		}
		for _, st := range r.path.d.Statuses() {
			if st.Group != nodeGroup {
				return nil // a member already
			}
		}
		if held, err := holdsPartitions(s); err != nil || !held {
			return err
		}
		if seeds := otherSeeds(cfg.Cluster); len(seeds) > 0 {
			return errJoinWithData(dataDir, seeds)
		}
		if err := os.WriteFile(marker, nil, 0o600); err != nil {
			return fmt.Errorf("mark the founding: %w", err)
		}
		if err := syncDir(dataDir); err != nil {
			return err
		}
	} else if err != nil {
		return err
	}
	r.log.Info("founding every partition's group with the data this node holds", "partitions", cfg.Actors.Partitions)
	errs := make([]error, cfg.Actors.Partitions)
	var wg sync.WaitGroup
	for p := range cfg.Actors.Partitions {
		wg.Go(func() { errs[p] = r.path.d.AddGroup(ctx, replicas.Group(p), []uint64{r.id}) })
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("found the partitions' groups: %w", err)
	}
	if err := os.Remove(marker); err != nil {
		return fmt.Errorf("founded the partitions' groups: %w", err)
	}
	return nil
}

// errJoinWithData is the refusal of a node that ran without a cluster to
// join seeds: its data would be lost.
func errJoinWithData(dataDir string, seeds []string) error {
	return fmt.Errorf("cluster.join: the data directory %s holds the data of a node that ran without a cluster, "+
		"which joining %v would lose: start this node with no cluster.join, so that it founds the cluster with its data, "+
		"then start the other nodes joining it; or start it on an empty data directory", dataDir, seeds)
}

// holdsPartitions reports whether the store holds a key of any
// partition.
func holdsPartitions(s *storage.Store) (bool, error) {
	held := false
	err := s.Scan(storage.Prefix("p"), nil, func(_, _ []byte) error {
		held = true
		return storage.ErrStopScan
	})
	return held, err
}

// otherSeeds returns the seeds of cluster.join that are not this node.
func otherSeeds(c config.Cluster) []string {
	var out []string
	for _, s := range c.Join {
		if s != c.Bind && s != c.Advertise {
			out = append(out, s)
		}
	}
	return out
}

// heldPartitions returns the partitions whose group the driver holds.
func (r *replication) heldPartitions(partitions int) []int {
	var out []int
	for _, st := range r.path.d.Statuses() {
		if p := replicas.Partition(st.Group); p >= 0 && p < partitions {
			out = append(out, p)
		}
	}
	return out
}

// syncDir makes dir's entries durable.
func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = f.Sync()
	if e := f.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
