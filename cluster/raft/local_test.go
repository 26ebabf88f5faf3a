package raft

import (
	"context"
	"path/filepath"
	"testing"
	"time"
)

// TestIsLocalLog tells a log OpenLocal wrote from a cluster node's log
// and from none.
func TestIsLocalLog(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	open := func(dir string, run func(sm StateMachine) (*Driver, error)) {
		t.Helper()
		sm, err := openKV(filepath.Join(dir, "kv"))
		if err != nil {
			t.Fatal(err)
		}
		d, err := run(sm)
		if err != nil {
			t.Fatal(err)
		}
		if err := d.Close(); err != nil {
			t.Error(err)
		}
		if err := sm.close(); err != nil {
			t.Error(err)
		}
	}
	local, clustered := t.TempDir(), t.TempDir()
	open(local, func(sm StateMachine) (*Driver, error) {
		return OpenLocal(ctx, Options{Dir: filepath.Join(local, "raft")}, sm, []uint64{1, 2, 3})
	})
	open(clustered, func(sm StateMachine) (*Driver, error) {
		d, err := Open(Options{NodeID: 7, Dir: filepath.Join(clustered, "raft")}, sm, NoPeers{})
		if err == nil {
			err = d.AddGroup(ctx, 1, []uint64{7})
		}
		return d, err
	})
	for _, c := range []struct {
		dir  string
		want bool
	}{{filepath.Join(local, "raft"), true}, {filepath.Join(clustered, "raft"), false}, {filepath.Join(t.TempDir(), "none"), false}} {
		if got, err := IsLocalLog(c.dir); err != nil || got != c.want {
			t.Errorf("IsLocalLog(%s) = %v, %v; want %v", c.dir, got, err, c.want)
		}
	}
}
