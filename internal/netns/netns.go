// Package netns gives a test several hosts on one machine: each host a
// Linux network namespace with its own address in 198.18.0.0/24 (the
// range set aside for benchmarking networks), all on one bridge, so that
// child processes listen on the same ports without clashing and a link can
// be cut. The bridge lives in a namespace of its own, and the test reaches
// the hosts through DialContext, so nothing is added to the machine's own
// network; everything is removed when the test ends. Where namespaces
// cannot be made (not root, no ip command), the hosts share 127.0.0.1 and
// the caller gives each its own ports. Tests only import it.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Net is a set of hosts on one network.
type Net struct {
	// Isolated reports that each host is a namespace with its own address;
	// false, the hosts share 127.0.0.1.
	Isolated bool
	// Hosts are the hosts, in order.
	Hosts []*Host
	hub   string // the bridge's namespace
}

// Host is one host of a Net.
type Host struct {
	// Name is the host's namespace; "" on loopback.
	Name string
	// Addr is the host's address: 198.18.0.<i+1> for the i-th host, or
	// 127.0.0.1 on loopback.
	Addr netip.Addr
	net  *Net
	link string // its veth's end on the bridge
}

// hubAddr is the bridge's address, the test's side of the network.
var hubAddr = netip.MustParseAddr("198.18.0.254")

// netnsDir is where ip keeps named namespaces.
const netnsDir = "/var/run/netns"

// namePrefix starts the name of every namespace this package makes,
// followed by the test process's pid.
const namePrefix = "persona-"

var seq atomic.Int64

// New makes n hosts (at most 253), each in a namespace of its own, or on
// loopback where namespaces cannot be made (the test's log says why). The
// network is removed when the test ends, after the cleanups registered
// later (a child process in a namespace is stopped before it goes).
func New(t testing.TB, n int) *Net {
	t.Helper()
	if n < 1 || n > 253 {
		t.Fatalf("netns: %d hosts, want 1-253", n)
	}
	if why := unavailable(); why != "" {
		t.Logf("netns: hosts on loopback: %s", why)
		return Loopback(n)
	}
	removeStale(t)
	prefix := fmt.Sprintf("%s%d-%d-", namePrefix, os.Getpid(), seq.Add(1))
	nt := &Net{Isolated: true, hub: prefix + "hub"}
	if err := ip("netns", "add", nt.hub); err != nil {
		t.Logf("netns: hosts on loopback: %v", err)
		return Loopback(n)
	}
	t.Cleanup(func() {
		if err := nt.remove(); err != nil {
			t.Errorf("netns: %v", err)
		}
	})
	steps := [][]string{
		{"-n", nt.hub, "link", "set", "lo", "up"},
		{"-n", nt.hub, "link", "add", "br0", "type", "bridge"},
		{"-n", nt.hub, "addr", "add", hubAddr.String() + "/24", "dev", "br0"},
		{"-n", nt.hub, "link", "set", "br0", "up"},
	}
	for i := range n {
		h := &Host{Name: prefix + "h" + strconv.Itoa(i+1), Addr: netip.AddrFrom4([4]byte{198, 18, 0, byte(i + 1)}),
			net: nt, link: "v" + strconv.Itoa(i+1)}
		nt.Hosts = append(nt.Hosts, h)
		steps = append(steps,
			[]string{"netns", "add", h.Name},
			[]string{"link", "add", h.link, "netns", nt.hub, "type", "veth", "peer", "name", "eth0", "netns", h.Name},
			[]string{"-n", nt.hub, "link", "set", h.link, "master", "br0", "up"},
			[]string{"-n", h.Name, "addr", "add", h.Addr.String() + "/24", "dev", "eth0"},
			[]string{"-n", h.Name, "link", "set", "eth0", "up"},
			[]string{"-n", h.Name, "link", "set", "lo", "up"},
		)
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			t.Fatalf("netns: %v", err)
		}
	}
	return nt
}

// Loopback returns n hosts that share 127.0.0.1.
func Loopback(n int) *Net {
	nt := &Net{}
	for range n {
		nt.Hosts = append(nt.Hosts, &Host{Addr: netip.MustParseAddr("127.0.0.1"), net: nt})
	}
	return nt
}

// unavailable says why namespaces cannot be made here, or "" if they can.
func unavailable() string {
	if runtime.GOOS != "linux" {
		return "not Linux"
	}
	if os.Geteuid() != 0 {
		return "not root"
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return "no ip command (iproute2)"
	}
	return ""
}

// ip runs the ip command with args.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// remove deletes the hosts' namespaces and the bridge's; their veths go
// with them.
func (nt *Net) remove() error {
	var errs []error
	for _, h := range nt.Hosts {
		errs = append(errs, ip("netns", "del", h.Name))
	}
	errs = append(errs, ip("netns", "del", nt.hub))
	return errors.Join(errs...)
}

// removeStale deletes the namespaces of test processes that are gone (a
// test killed before its cleanup).
func removeStale(t testing.TB) {
	entries, err := os.ReadDir(netnsDir)
	if err != nil {
		return
	}
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), namePrefix)
		if !ok {
			continue
		}
		pidStr, _, _ := strings.Cut(rest, "-")
		pid, err := strconv.Atoi(pidStr)
		if err != nil || pid == os.Getpid() || syscall.Kill(pid, 0) != syscall.ESRCH {
			continue
		}
		if err := ip("netns", "del", e.Name()); err != nil {
			t.Logf("netns: remove a namespace left behind: %v", err)
		}
	}
}

// Command returns a command that runs name with args on h: in its
// namespace (through ip netns exec, which execs the command: the pid is
// the command's), or as it is on loopback.
func (h *Host) Command(name string, args ...string) *exec.Cmd {
	if !h.net.Isolated {
		return exec.Command(name, args...)
	}
	return exec.Command("ip", append([]string{"netns", "exec", h.Name, name}, args...)...)
}

// SetLink brings h's link to the bridge down (cutting h off while it runs)
// or up again. Brought up, it returns once both ends carry traffic: until
// the kernel has seen the carrier come back (its link watch, which may
// wait up to a second), each end drops what is sent through it, and a
// dropped SYN waits a second for its retry.
func (h *Host) SetLink(up bool) error {
	if !h.net.Isolated {
		return errors.New("netns: hosts on loopback have no link of their own")
	}
	if !up {
		return ip("-n", h.net.hub, "link", "set", h.link, "down")
	}
	if err := ip("-n", h.net.hub, "link", "set", h.link, "up"); err != nil {
		return err
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, end := range [][2]string{{h.net.hub, h.link}, {h.Name, "eth0"}} {
		for !operUp(end[0], end[1]) {
			if time.Now().After(deadline) {
				return fmt.Errorf("netns: %s in %s not up after 5 s", end[1], end[0])
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	return nil
}

// operUp reports that link in namespace ns is operationally up.
func operUp(ns, link string) bool {
	out, err := exec.Command("ip", "-n", ns, "-o", "link", "show", "dev", link).Output()
	return err == nil && strings.Contains(string(out), " state UP ")
}

// DialContext dials addr from the test's side of the network: from the
// bridge's namespace when isolated, where every host is reachable.
func (nt *Net) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	var d net.Dialer
	if !nt.Isolated {
		return d.DialContext(ctx, network, addr)
	}
	type result struct {
		c   net.Conn
		err error
	}
	done := make(chan result, 1)
	go func() {
		// The socket belongs to the namespace its thread is in when it is
		// made. A thread that cannot go back stays locked and ends with
		// this goroutine.
		runtime.LockOSThread()
		c, back, err := dialIn(ctx, filepath.Join(netnsDir, nt.hub), &d, network, addr)
		if back {
			runtime.UnlockOSThread()
		}
		done <- result{c, err}
	}()
	r := <-done
	return r.c, r.err
}

// dialIn dials from the namespace at path on the current, locked thread,
// then moves the thread back; back reports that it did.
func dialIn(ctx context.Context, path string, d *net.Dialer, network, addr string) (c net.Conn, back bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return nil, true, err
	}
	defer orig.Close()
	target, err := os.Open(path)
	if err != nil {
		return nil, true, err
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return nil, true, fmt.Errorf("netns: enter %s: %w", path, err)
	}
	c, err = d.DialContext(ctx, network, addr)
	return c, unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil, err
}

// Transport returns an HTTP transport whose connections DialContext makes.
func (nt *Net) Transport() *http.Transport {
	return &http.Transport{DialContext: nt.DialContext, MaxIdleConnsPerHost: 16}
}
