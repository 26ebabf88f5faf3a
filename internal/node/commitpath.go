package node

import (
	"context"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"persona/cluster/raft"
	"persona/storage"
)

// openStore opens the node's store in dataDir/db, on the raft commit
// path if onRaft, its log in dataDir/raft; it returns once the group has
// applied what its log holds.
func openStore(dataDir string, opts storage.Options, onRaft bool, log *slog.Logger) (*storage.Store, error) {
	if !onRaft {
		return storage.Open(filepath.Join(dataDir, "db"), opts)
	}
	g := &raft.GroupOfOne{}
	opts.CommitPath = g
	s, err := storage.Open(filepath.Join(dataDir, "db"), opts)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := g.Start(ctx, filepath.Join(dataDir, "raft"), s, log); err != nil {
		_ = s.Close() // closes g too
		return nil, fmt.Errorf("open the raft commit path: %w", err)
	}
	return s, nil
}
