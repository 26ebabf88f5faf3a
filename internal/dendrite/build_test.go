package dendrite

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLockMakesSecondCallerWait takes the build lock twice on one file: the
// second taker is told it waits and gets the lock only once the first
// releases it.
func TestLockMakesSecondCallerWait(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	path := filepath.Join(t.TempDir(), ".lock")
	unlock, err := lock(ctx, path, nil)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	waiting := make(chan struct{})
	acquired := make(chan func())
	go func() {
		second, err := lock(ctx, path, func() { close(waiting) })
		if err != nil {
			t.Errorf("second lock: %v", err)
			close(acquired)
			return
		}
		acquired <- second
	}()
	select {
	case <-waiting:
	case <-ctx.Done():
		t.Fatal("the second taker was never told it waits")
	}
	select {
	case <-acquired:
		t.Fatal("the second taker got the lock while the first held it")
	case <-time.After(500 * time.Millisecond):
	}
	unlock()
	select {
	case second, ok := <-acquired:
		if !ok {
			t.Fatal("the second taker failed")
		}
		second()
	case <-ctx.Done():
		t.Fatal("the second taker did not get the lock after the first released it")
	}
}

// TestLockWaitEndsWithContext waits for a held lock under a short context:
// the wait ends with the context's error.
func TestLockWaitEndsWithContext(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), ".lock")
	unlock, err := lock(context.Background(), path, nil)
	if err != nil {
		t.Fatalf("first lock: %v", err)
	}
	defer unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := lock(ctx, path, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("lock under an ended context = %v, want %v", err, context.DeadlineExceeded)
	}
}

// TestEnsureBuildsEveryCommand checks the cached build: every command is in
// the folder with the stamp, the dendrite binary says it is Version, and a
// second call answers the same folder.
func TestEnsureBuildsEveryCommand(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	dir, err := Ensure(ctx)
	if err != nil {
		t.Fatalf("ensure: %v", err)
	}
	if !built(dir) {
		t.Fatalf("%s lacks a command or the stamp of %s", dir, Version)
	}
	if filepath.Base(dir) != "dendrite-"+Version || filepath.Base(filepath.Dir(dir)) != "build" {
		t.Fatalf("ensure built into %s, want build/dendrite-%s", dir, Version)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(dir, "dendrite"), "--version").Output()
	if err != nil {
		t.Fatalf("dendrite --version: %v", err)
	}
	if got := strings.TrimSpace(string(out)); got != strings.TrimPrefix(Version, "v") {
		t.Fatalf("dendrite --version = %q, want %s", got, Version)
	}
	again, err := Ensure(ctx)
	if err != nil || again != dir {
		t.Fatalf("second ensure = %q, %v; want %q", again, err, dir)
	}
}
