package main

import (
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// crashChild is a persona node running as a child process: this test binary
// re-executed with crashChildEnv set.
type crashChild struct {
	cmd     *exec.Cmd
	out     *lockedBuffer
	exited  chan struct{}
	waitErr error
}

// startCrashChild starts a node serving cfgPath and waits until base answers.
// The child is killed when the test ends.
func startCrashChild(t *testing.T, cfgPath, base string) *crashChild {
	t.Helper()
	return startChild(t, exec.Command(os.Args[0], "-test.run=^$"), cfgPath, base)
}

// startChild starts cmd, this test binary re-executed (on a host of its
// own, say), as a node serving cfgPath, and waits until base answers. The
// child is killed when the test ends.
func startChild(t *testing.T, cmd *exec.Cmd, cfgPath, base string) *crashChild {
	t.Helper()
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PERSONA_") { // no config overrides leak in
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, crashChildEnv+"="+cfgPath)
	n := &crashChild{cmd: cmd, out: &lockedBuffer{}, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = n.out, n.out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		n.waitErr = cmd.Wait()
		close(n.exited)
	}()
	t.Cleanup(n.kill)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-n.exited:
			t.Fatalf("node exited before serving: %v\n%s", n.waitErr, n.out.tail())
		default:
		}
		err := call(http.MethodGet, base+"/_matrix/client/versions", "", nil, nil)
		if err == nil {
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("node not answering after 20s: %v\n%s", err, n.out.tail())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// kill SIGKILLs the node (if still running) and waits for it.
func (n *crashChild) kill() {
	select {
	case <-n.exited:
		return
	default:
	}
	_ = n.cmd.Process.Signal(syscall.SIGKILL)
	<-n.exited
}

// terminate SIGTERMs the node and waits up to limit for it to exit; it
// returns how the node exited.
func (n *crashChild) terminate(limit time.Duration) error {
	_ = n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-n.exited:
		return n.waitErr
	case <-time.After(limit):
		return fmt.Errorf("still running %s after SIGTERM", limit)
	}
}

// lockedBuffer collects a child's output while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

// String is all the output so far.
func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// tail is the last 4 KiB of output, for failure messages.
func (l *lockedBuffer) tail() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	s := l.b.String()
	if len(s) > 4096 {
		s = "..." + s[len(s)-4096:]
	}
	return "node output:\n" + s
}
