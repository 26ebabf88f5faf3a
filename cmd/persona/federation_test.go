package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"persona/config"
	"persona/internal/testnode"
)

// byAddress names a node after its federation listener (127.0.0.1:PORT),
// which peers reach with no discovery.
func byAddress(t *testing.T) func(*config.Config) {
	return func(c *config.Config) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		c.Listen.Federation = l.Addr().String()
		_ = l.Close()
		c.ServerName = c.Listen.Federation
		c.Federation.InsecureSkipVerify = true
	}
}

// destinationsOf runs `persona federation destinations` against n.
func destinationsOf(t *testing.T, n *testnode.Node, secret string) (string, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "persona.yaml")
	yaml := "server_name: \"" + n.Config.ServerName + "\"\nregistration:\n  shared_secret: " + secret + "\n"
	if err := os.WriteFile(file, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errOut bytes.Buffer
	err := run([]string{"federation", "destinations", "--config", file, "--url", n.URL}, &out, &errOut)
	return out.String(), err
}

// TestFederationDestinations runs `persona federation destinations`
// against a node whose room has a member on a server that went down: the
// row of that server shows the events queued for it, their age, the
// transaction in flight, the failures and the next attempt. A wrong secret
// and a node that does not federate are refused.
func TestFederationDestinations(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through B: %v", err)
	}
	b.Stop()
	for i := range 3 {
		if _, err := alice.SendText(ctx, room, "while B is down "+string(rune('1'+i))); err != nil {
			t.Fatal(err)
		}
	}

	dest := regexp.QuoteMeta(b.Config.ServerName)
	// DESTINATION QUEUED OLDEST IN-FLIGHT FAILURES NEXT-ATTEMPT DELIVERED DROPPED
	down := regexp.MustCompile(`(?m)^` + dest + ` +([1-9][0-9]*) +[0-9.]+m?s ago +(\S+) +([1-9][0-9]*) +in [0-9.]+m?[smh]\S* +[0-9]+ +0$`)
	var out string
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if out, err = destinationsOf(t, a, a.Config.Registration.SharedSecret); err != nil {
			t.Fatalf("federation destinations: %v", err)
		}
		if down.MatchString(out) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("persona federation destinations:\n%s", out)
	m := down.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("no row for %s, down, with events queued, a transaction in flight, failures and a next attempt:\n%s", b.Config.ServerName, out)
	}
	if m[2] == "-" {
		t.Fatalf("the row of %s names no transaction in flight:\n%s", b.Config.ServerName, out)
	}
	if !strings.HasPrefix(out, "DESTINATION") {
		t.Fatalf("no header:\n%s", out)
	}

	if _, err := destinationsOf(t, a, "wrong-secret"); err == nil || !strings.Contains(err.Error(), "403") || !strings.Contains(err.Error(), "M_FORBIDDEN") {
		t.Fatalf("a wrong secret: %v", err)
	}
	local := testnode.Start(t, "", func(c *config.Config) { c.Listen.Federation = "" })
	if _, err := destinationsOf(t, local, local.Config.Registration.SharedSecret); err == nil || !strings.Contains(err.Error(), "404") || !strings.Contains(err.Error(), "does not federate") {
		t.Fatalf("a node that does not federate: %v", err)
	}
}
