package node_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

var ctx = context.Background()

func TestProfileWithMautrix(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	bob := n.Register("bob")

	who, err := alice.Whoami(ctx)
	if err != nil || who.UserID != "@alice:"+testnode.ServerName || who.DeviceID != alice.DeviceID {
		t.Fatalf("whoami = %+v, %v", who, err)
	}
	// Registration sets the localpart as the display name, like Synapse.
	if dn, err := bob.GetDisplayName(ctx, alice.UserID); err != nil || dn.DisplayName != "alice" {
		t.Fatalf("initial displayname = %+v, %v", dn, err)
	}
	if err := alice.SetDisplayName(ctx, "Alice Liddell"); err != nil {
		t.Fatal(err)
	}
	up, err := alice.UploadBytes(ctx, []byte("\x89PNG fake avatar"), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, up.ContentURI); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetProfileField(ctx, "m.tz", "Europe/London"); err != nil {
		t.Fatal(err)
	}
	if err := alice.SetProfileField(ctx, "com.example.pets", map[string]any{"cats": 2}); err != nil {
		t.Fatal(err)
	}
	p, err := bob.GetProfile(ctx, alice.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if p.DisplayName != "Alice Liddell" || p.AvatarURL != up.ContentURI || p.Extra["m.tz"] != "Europe/London" ||
		fmt.Sprint(p.Extra["com.example.pets"]) != "map[cats:2]" {
		t.Fatalf("profile = %+v", p)
	}
	if err := alice.DeleteProfileField(ctx, "com.example.pets"); err != nil {
		t.Fatal(err)
	}
	if p, _ = bob.GetProfile(ctx, alice.UserID); p.Extra["com.example.pets"] != nil {
		t.Fatalf("deleted field still there: %+v", p)
	}
	avatar, err := bob.DownloadBytes(ctx, up.ContentURI)
	if err != nil || string(avatar) != "\x89PNG fake avatar" {
		t.Fatalf("avatar download = %q, %v", avatar, err)
	}

	// Bob may not write Alice's profile.
	bobAsAlice := n.Client(bob)
	bobAsAlice.UserID = alice.UserID
	if err := bobAsAlice.SetDisplayName(ctx, "mallory"); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("writing another user's profile: %v", err)
	}

	// Password login gives a second device; logout ends only that token.
	cli, _ := mautrix.NewClient(n.URL, "", "")
	login, err := cli.Login(ctx, &mautrix.ReqLogin{
		Type:       mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"},
		Password:   "password-alice",
	})
	if err != nil {
		t.Fatal(err)
	}
	cli.UserID, cli.AccessToken = login.UserID, login.AccessToken
	if _, err := cli.Logout(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Fatalf("whoami after logout: %v", err)
	}
	if _, err := alice.Whoami(ctx); err != nil {
		t.Fatalf("first device logged out too: %v", err)
	}
	if _, err := alice.LogoutAll(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Whoami(ctx); !errors.Is(err, mautrix.MUnknownToken) {
		t.Fatalf("whoami after logout/all: %v", err)
	}
	if _, err := cli.Login(ctx, &mautrix.ReqLogin{Type: mautrix.AuthTypePassword,
		Identifier: mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: "alice"}, Password: "wrong"}); !errors.Is(err, mautrix.MForbidden) {
		t.Fatalf("wrong password: %v", err)
	}
}

func TestProfilesSurviveRestart(t *testing.T) {
	t.Parallel()
	testProfilesSurviveRestart(t, nil)
}

// TestProfilesSurviveRestartOnRaft: with storage.commit_path: raft the
// writes go through a raft group of one, and survive a restart alike.
func TestProfilesSurviveRestartOnRaft(t *testing.T) {
	t.Parallel()
	testProfilesSurviveRestart(t, func(c *config.Config) { c.Storage.CommitPath = "raft" })
}

func testProfilesSurviveRestart(t *testing.T, tune func(*config.Config)) {
	dir := t.TempDir()
	n := testnode.Start(t, dir, tune)
	const users = 25
	want := map[id.UserID]string{}
	tokens := map[id.UserID]string{}
	for i := 0; i < users; i++ {
		c := n.Register(fmt.Sprintf("restart%d", i))
		name := fmt.Sprintf("Name %d ✓", i)
		if err := c.SetDisplayName(ctx, name); err != nil {
			t.Fatal(err)
		}
		if err := c.SetProfileField(ctx, "m.tz", "UTC"); err != nil {
			t.Fatal(err)
		}
		want[c.UserID], tokens[c.UserID] = name, c.AccessToken
	}
	n.Stop()

	n = testnode.Start(t, dir, tune)
	for u, name := range want {
		c, _ := mautrix.NewClient(n.URL, u, tokens[u])
		p, err := c.GetProfile(ctx, u)
		if err != nil || p.DisplayName != name || p.Extra["m.tz"] != "UTC" {
			t.Fatalf("%s after restart: %+v, %v", u, p, err)
		}
		if _, err := c.Whoami(ctx); err != nil {
			t.Fatalf("token of %s lost in restart: %v", u, err)
		}
	}
}

// TestStopClosesUnusedConnections: a connection that never sent a request
// does not hold a stop (net/http alone would wait five seconds for it).
func TestStopClosesUnusedConnections(t *testing.T) {
	// Not parallel: it bounds how long a stop takes.
	n := testnode.Start(t, "", nil)
	acceptedConn(t, n.ClientAddr())
	start := time.Now()
	n.Stop()
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("stop took %v with an unused connection open", d)
	}
}

// TestStopAnswersARequestOnAFreshConnection: a connection accepted just
// before the listener closed, whose request comes a moment later, is
// answered rather than cut.
func TestStopAnswersARequestOnAFreshConnection(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	conn := acceptedConn(t, n.ClientAddr())
	stopped := make(chan struct{})
	go func() { n.Stop(); close(stopped) }()
	time.Sleep(100 * time.Millisecond) // the listener closes meanwhile
	if _, err := io.WriteString(conn, "GET /_matrix/client/versions HTTP/1.1\r\nHost: persona.test\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	_ = conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("a request on a connection accepted before the stop: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !resp.Close {
		t.Fatalf("answered %d, close %v; want 200 and the connection closed", resp.StatusCode, resp.Close)
	}
	<-stopped
}

// acceptedConn dials addr and gives the server a moment to accept the
// connection; the test's end closes it.
func acceptedConn(t *testing.T, addr string) net.Conn {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	time.Sleep(20 * time.Millisecond)
	return conn
}
