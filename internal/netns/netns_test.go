package netns

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Child modes of this test binary, re-executed on a host: serve answers
// every connection with its name; dial prints what the address answers.
const (
	serveEnv = "NETNS_TEST_SERVE"
	nameEnv  = "NETNS_TEST_NAME"
	dialEnv  = "NETNS_TEST_DIAL"
)

func TestMain(m *testing.M) {
	if addr := os.Getenv(serveEnv); addr != "" {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		fmt.Println("listening")
		for {
			c, err := l.Accept()
			if err != nil {
				os.Exit(1)
			}
			fmt.Fprintln(c, os.Getenv(nameEnv))
			_ = c.Close()
		}
	}
	if addr := os.Getenv(dialEnv); addr != "" {
		c, err := net.DialTimeout("tcp", addr, 2*time.Second)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		_, _ = io.Copy(os.Stdout, c)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serve starts a child on h answering with name on port; it is killed
// when the test ends.
func serve(t *testing.T, h *Host, port, name string) string {
	t.Helper()
	addr := net.JoinHostPort(h.Addr.String(), port)
	cmd := h.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), serveEnv+"="+addr, nameEnv+"="+name)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	if line, err := bufio.NewReader(out).ReadString('\n'); err != nil || line != "listening\n" {
		t.Fatalf("child %s on %s: %q, %v", name, addr, line, err)
	}
	return addr
}

// ask dials addr through nt and returns the line it answers. (A network
// may accept connections to any address and answer nothing.)
func ask(nt *Net, addr string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := nt.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	line, err := bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(line), err
}

// TestHostsOfTheirOwn: two hosts listen on the same port at their own
// addresses; the test reaches each, one host reaches the other, the
// machine's own network reaches neither, and a cut link cuts its host off
// until it is up again. Every namespace is gone after the test.
func TestHostsOfTheirOwn(t *testing.T) {
	var names []string
	t.Run("hosts", func(t *testing.T) {
		nt := New(t, 2)
		if !nt.Isolated {
			t.Skip("namespaces unavailable here; TestLoopback covers the fallback")
		}
		for _, h := range nt.Hosts {
			names = append(names, h.Name)
		}
		names = append(names, nt.hub)
		h1, h2 := nt.Hosts[0], nt.Hosts[1]
		if h1.Addr.String() != "198.18.0.1" || h2.Addr.String() != "198.18.0.2" {
			t.Fatalf("addresses %s and %s", h1.Addr, h2.Addr)
		}
		a1, a2 := serve(t, h1, "7000", "one"), serve(t, h2, "7000", "two")
		for addr, want := range map[string]string{a1: "one", a2: "two"} {
			if got, err := ask(nt, addr); err != nil || got != want {
				t.Fatalf("%s answers %q, %v; want %q", addr, got, err, want)
			}
		}
		cmd := h2.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), dialEnv+"="+a1)
		if out, err := cmd.Output(); err != nil || strings.TrimSpace(string(out)) != "one" {
			t.Fatalf("from h2, %s answers %q, %v", a1, out, err)
		}
		if got, err := ask(Loopback(1), a1); got == "one" {
			t.Fatalf("the machine's own network reaches %s: %q, %v", a1, got, err)
		}

		if err := h1.SetLink(false); err != nil {
			t.Fatal(err)
		}
		if got, err := ask(nt, a1); err == nil {
			t.Fatalf("h1 cut off, yet it answers %q", got)
		}
		if err := h1.SetLink(true); err != nil {
			t.Fatal(err)
		}
		// SetLink waits for the link to carry traffic; a lost first SYN
		// would still cost its one-second retry, so the test asks again
		// for a while and says when it had to.
		for start := time.Now(); ; {
			got, err := ask(nt, a1)
			if err == nil && got == "one" {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatalf("h1 back: %q, %v", got, err)
			}
			t.Logf("h1 not back yet after %v: %q, %v", time.Since(start).Round(time.Millisecond), got, err)
		}
	})
	for _, name := range names {
		if _, err := os.Stat(filepath.Join(netnsDir, name)); !os.IsNotExist(err) {
			t.Errorf("namespace %s still there after the test: %v", name, err)
		}
	}
}

// TestLoopback: hosts on loopback share 127.0.0.1, run commands as they
// are, and have no link to cut.
func TestLoopback(t *testing.T) {
	nt := Loopback(2)
	if nt.Isolated || len(nt.Hosts) != 2 || nt.Hosts[1].Addr.String() != "127.0.0.1" {
		t.Fatalf("loopback hosts: %+v", nt)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	addr := serve(t, nt.Hosts[1], port, "two")
	if got, err := ask(nt, addr); err != nil || got != "two" {
		t.Fatalf("%s answers %q, %v", addr, got, err)
	}
	if err := nt.Hosts[0].SetLink(false); err == nil {
		t.Fatal("SetLink on loopback")
	}
}
