package node_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// quickOutbox makes a node's outbox try a server that failed again within
// 200 ms, and lifts the profile rate limit, so that a test renames quickly
// and sees a returning server served at once.
func quickOutbox(c *config.Config) {
	c.Federation.OutboxBackoffMin = 50 * time.Millisecond
	c.Federation.OutboxBackoffMax = 200 * time.Millisecond
	c.Profile.RateLimit.Burst = 0
}

// sameAddress restarts a node as it was: the same server name and
// federation listener (peers know it by them), with tune applied too.
func sameAddress(was *config.Config, tune func(*config.Config)) func(*config.Config) {
	return func(c *config.Config) {
		c.Listen.Federation = was.Listen.Federation
		c.ServerName = was.ServerName
		c.Federation.InsecureSkipVerify = true
		tune(c)
	}
}

// memberNames are the displaynames of user's member events in room's
// timeline as cli reads it, oldest first.
func memberNames(ctx context.Context, t *testing.T, cli *mautrix.Client, room id.RoomID, user id.UserID) []string {
	t.Helper()
	names, err := testnode.MemberNames(ctx, cli, room, user)
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// shareRoom has alice of a create a public room and bob of b join it
// through b; it returns once each side's copy names the other's user.
func shareRoom(ctx context.Context, t *testing.T, a *testnode.Node, alice, bob *mautrix.Client) id.RoomID {
	t.Helper()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "shared"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoom(ctx, string(created.RoomID), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through his server: %v", err)
	}
	waitFor(t, 20*time.Second, "the resident room to hold bob", func() bool {
		return memberName(ctx, alice, created.RoomID, bob.UserID) == "bob"
	})
	waitFor(t, 20*time.Second, "bob's copy to name alice", func() bool {
		return memberName(ctx, bob, created.RoomID, alice.UserID) == "alice"
	})
	return created.RoomID
}

// TestCatchUpAfterADowntime: servers A and B share a room with a user on
// each. B stops; A's user renames 100 times while A's outbox finds B
// down; B starts again on its data dir and ports. B's copy of the room
// ends with all 100 renames in order, each once, and the renames B takes
// after it caught up follow them.
func TestCatchUpAfterADowntime(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	tune := func(c *config.Config) { byAddress(t)(c); quickOutbox(c) }
	a := testnode.Start(t, "", tune)
	dirB := t.TempDir()
	b := testnode.Start(t, dirB, tune)
	alice, bob := a.Register("alice"), b.Register("bob")
	room := shareRoom(ctx, t, a, alice, bob)

	b.Stop()
	const renames = 100
	var written []string
	for i := range renames {
		name := fmt.Sprintf("Alice %d", i+1)
		if err := alice.SetDisplayName(ctx, name); err != nil {
			t.Fatalf("rename %d while B is down: %v", i+1, err)
		}
		written = append(written, name)
	}
	waitFor(t, 20*time.Second, "A's room to hold the last rename", func() bool {
		return memberName(ctx, alice, room, alice.UserID) == written[renames-1]
	})

	b = testnode.Start(t, dirB, sameAddress(b.Config, quickOutbox))
	bob = b.Client(bob)
	waitFor(t, 30*time.Second, "B to catch up", func() bool {
		return memberName(ctx, bob, room, alice.UserID) == written[renames-1]
	})
	if err := alice.SetDisplayName(ctx, "Alice after"); err != nil {
		t.Fatal(err)
	}
	written = append(written, "Alice after")
	waitFor(t, 20*time.Second, "B to take a rename after catching up", func() bool {
		return memberName(ctx, bob, room, alice.UserID) == "Alice after"
	})

	// B's timeline starts at bob's join (alice's join is state it was
	// given), A's at alice's.
	if got := memberNames(ctx, t, bob, room, alice.UserID); !slices.Equal(got, written) {
		t.Fatalf("B's timeline holds %d member events of alice, want %d (each rename once, in order):\n got %q\nwant %q",
			len(got), len(written), got, written)
	}
	if got, want := memberNames(ctx, t, alice, room, alice.UserID), append([]string{"alice"}, written...); !slices.Equal(got, want) {
		t.Fatalf("A's own timeline of alice's member events: %q", got)
	}
	if failed := metric(t, a, "persona_federation_transaction_failures_total"); failed < 1 {
		t.Fatalf("A's outbox never failed to reach B: %v failures", failed)
	}
}
