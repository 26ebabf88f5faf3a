// Package testnode starts real persona nodes for tests: a temp data dir, free
// loopback ports (the federation listener's too), open registration, and a
// Matrix client library ready to use.
package testnode

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/node"
)

// ServerName is the server name of test nodes.
const ServerName = "persona.test"

// Node is a running test node.
type Node struct {
	*node.Node
	Config *config.Config
	URL    string
	t      testing.TB
}

// Start starts a node in dir (t.TempDir() when empty); tune may change the
// config first. The node stops when the test ends.
func Start(t testing.TB, dir string, tune func(*config.Config)) *Node {
	t.Helper()
	cfg := config.Default()
	if dir == "" {
		dir = t.TempDir()
	}
	cfg.DataDir = dir
	cfg.ServerName = ServerName
	cfg.Listen.Client = "127.0.0.1:0"
	cfg.Listen.Metrics = "127.0.0.1:0"
	cfg.Listen.Federation = "127.0.0.1:0"
	cfg.Registration.Open = true
	cfg.Registration.SharedSecret = "test-secret"
	if tune != nil {
		tune(cfg)
	}
	n, err := node.Start(cfg, nil)
	if err != nil {
		t.Fatalf("start node: %v", err)
	}
	tn := &Node{Node: n, Config: cfg, URL: "http://" + n.ClientAddr(), t: t}
	stopped := atomic.Bool{}
	t.Cleanup(func() {
		if stopped.CompareAndSwap(false, true) {
			_ = n.Stop(context.Background())
		}
	})
	return tn
}

// Stop stops the node now (for restart tests).
func (n *Node) Stop() {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.Node.Stop(ctx); err != nil {
		n.t.Errorf("stop node: %v", err)
	}
}

var userSeq atomic.Int64

// Register creates a user with open registration and returns a logged-in
// mautrix client. An empty name picks a unique one.
func (n *Node) Register(name string) *mautrix.Client {
	n.t.Helper()
	if name == "" {
		name = fmt.Sprintf("user%d", userSeq.Add(1))
	}
	cli, err := mautrix.NewClient(n.URL, "", "")
	if err != nil {
		n.t.Fatal(err)
	}
	cli.Client = &http.Client{Timeout: 30 * time.Second}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{Username: name, Password: "password-" + name})
	if err != nil {
		n.t.Fatalf("register %s: %v", name, err)
	}
	cli.UserID, cli.AccessToken = resp.UserID, resp.AccessToken
	cli.DeviceID = resp.DeviceID
	return cli
}

// Client returns a mautrix client for an existing access token.
func (n *Node) Client(cli *mautrix.Client) *mautrix.Client {
	c, err := mautrix.NewClient(n.URL, cli.UserID, cli.AccessToken)
	if err != nil {
		n.t.Fatal(err)
	}
	return c
}

// MemberNames are the displaynames of user's member events in room's
// timeline as cli reads it, oldest first, back to where cli's server's
// timeline starts.
func MemberNames(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID) ([]string, error) {
	var names []string
	from := ""
	for range 50 {
		page, err := cli.Messages(ctx, room, from, "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			return nil, fmt.Errorf("messages of %s: %w", room, err)
		}
		for _, ev := range page.Chunk {
			if ev.Type == event.StateMember && ev.GetStateKey() == string(user) {
				_ = ev.Content.ParseRaw(ev.Type)
				names = append(names, ev.Content.AsMember().Displayname)
			}
		}
		if page.End == "" || len(page.Chunk) == 0 {
			slices.Reverse(names)
			return names, nil
		}
		from = page.End
	}
	return nil, fmt.Errorf("the timeline of %s did not end within 50 pages", room)
}
