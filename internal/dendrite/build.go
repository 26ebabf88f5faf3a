// Package dendrite runs a real Dendrite homeserver as a peer for persona's
// tests: it builds Dendrite once into the repository's ignored build folder,
// starts it on free loopback ports with a temp data dir, and registers users
// on it. Only tests import it; it imports no persona package.
package dendrite

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Version is the Dendrite release Ensure builds.
const Version = "v0.13.8"

// commands are the Dendrite programs Ensure installs.
var commands = []string{"dendrite", "generate-keys", "generate-config"}

// stampName names the file Ensure writes into the build folder once every
// command is installed; a folder without it is rebuilt.
const stampName = ".stamp"

var (
	ensureMu  sync.Mutex
	ensureDir string
)

// Ensure returns the folder holding the dendrite, generate-keys and
// generate-config binaries of Version, building them first when the folder
// is not complete. The folder is build/dendrite-<Version> under the
// repository root. A file lock in it makes concurrent callers, in this
// process or another, wait for one build instead of running their own; the
// first build reports its progress on stderr.
func Ensure(ctx context.Context) (string, error) {
	ensureMu.Lock()
	defer ensureMu.Unlock()
	if ensureDir != "" {
		return ensureDir, nil
	}
	root, err := repoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "build", "dendrite-"+Version)
	if err := ensureIn(ctx, dir, os.Stderr); err != nil {
		return "", err
	}
	ensureDir = dir
	return dir, nil
}

// ensureIn installs the commands into dir unless its stamp says they are
// there, holding dir's lock while it checks and builds.
func ensureIn(ctx context.Context, dir string, progress io.Writer) error {
	if built(dir) {
		return nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("create dendrite build folder: %w", err)
	}
	unlock, err := lock(ctx, filepath.Join(dir, ".lock"), func() {
		fmt.Fprintf(progress, "dendrite: waiting for another build of %s in %s\n", Version, dir)
	})
	if err != nil {
		return err
	}
	defer unlock()
	if built(dir) {
		return nil
	}
	return install(ctx, dir, progress)
}

// built reports whether dir holds the stamp of Version and every command.
func built(dir string) bool {
	stamp, err := os.ReadFile(filepath.Join(dir, stampName))
	if err != nil || strings.TrimSpace(string(stamp)) != Version {
		return false
	}
	for _, c := range commands {
		if fi, err := os.Stat(filepath.Join(dir, c)); err != nil || !fi.Mode().IsRegular() {
			return false
		}
	}
	return true
}

// install runs go install for every command with GOBIN=dir, then writes the
// stamp. It prints a line when it starts, one every 15 s while it runs and
// one when it ends.
func install(ctx context.Context, dir string, progress io.Writer) error {
	args := []string{"install"}
	for _, c := range commands {
		args = append(args, "github.com/matrix-org/dendrite/cmd/"+c+"@"+Version)
	}
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = dir
	// Dendrite's sqlite driver is cgo: without CGO_ENABLED=1 the build
	// would succeed and the server would fail at start-up.
	cmd.Env = append(os.Environ(), "GOBIN="+dir, "CGO_ENABLED=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out

	start := time.Now()
	fmt.Fprintf(progress, "dendrite: building %s into %s (2 to 4 min on 2 cores the first time)\n", Version, dir)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		tick := time.NewTicker(15 * time.Second)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				fmt.Fprintf(progress, "dendrite: still building (%s)\n", time.Since(start).Round(time.Second))
			}
		}
	})
	err := cmd.Run()
	close(done)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out.Bytes())
	}
	if err := os.WriteFile(filepath.Join(dir, stampName), []byte(Version+"\n"), 0o644); err != nil {
		return fmt.Errorf("write dendrite build stamp: %w", err)
	}
	fmt.Fprintf(progress, "dendrite: built %s in %s\n", Version, time.Since(start).Round(time.Second))
	return nil
}

// lock takes an exclusive flock on path, polling so that ctx can end the
// wait; waiting is called once when another holder makes it wait. The
// returned function releases the lock.
func lock(ctx context.Context, path string, waiting func()) (func(), error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open lock %s: %w", path, err)
	}
	told := false
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return func() {
				_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
				_ = f.Close()
			}, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, err)
		}
		if !told && waiting != nil {
			waiting()
			told = true
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", path, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// repoRoot returns the folder of persona's go.mod: found from this source
// file's path, or from `go env GOMOD` when the path was trimmed.
func repoRoot() (string, error) {
	if _, file, _, ok := runtime.Caller(0); ok && filepath.IsAbs(file) {
		root := filepath.Join(filepath.Dir(file), "..", "..")
		if _, err := os.Stat(filepath.Join(root, "go.mod")); err == nil {
			return filepath.Clean(root), nil
		}
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", errors.New("find persona's repository root: not inside a Go module")
	}
	return filepath.Dir(gomod), nil
}
