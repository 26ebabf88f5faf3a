package node_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// byAddress names a node after its federation listener (127.0.0.1:PORT),
// which peers reach with no discovery; peers' certificates are self-signed.
func byAddress(t *testing.T) func(*config.Config) {
	return func(c *config.Config) {
		c.Listen.Federation = freeAddr(t)
		c.ServerName = c.Listen.Federation
		c.Federation.InsecureSkipVerify = true
	}
}

// memberName is the displayname of user's member event in room, as cli
// reads the room's state ("" when it has none yet).
func memberName(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID) string {
	var content event.MemberEventContent
	if err := cli.StateEvent(ctx, room, event.StateMember, string(user), &content); err != nil {
		return ""
	}
	return content.Displayname
}

// waitFor polls cond until it holds, for at most d.
func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Two persona servers share a room: a user of B joins a room of A through
// B's client API, and renames on either side reach the other side's copy
// of the room, in order.
func TestTwoServersShareARoom(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "across"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
		t.Fatalf("bob joins through B: %v", err)
	}
	waitFor(t, 20*time.Second, "A's room to hold bob", func() bool { return memberName(ctx, alice, room, bob.UserID) == "bob" })
	if got := memberName(ctx, bob, room, alice.UserID); got != "alice" {
		t.Fatalf("B's copy of the room names alice %q", got)
	}

	for _, name := range []string{"Alice 1", "Alice 2", "Alice 3"} {
		if err := alice.SetDisplayName(ctx, name); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 20*time.Second, "alice's last name on B", func() bool { return memberName(ctx, bob, room, alice.UserID) == "Alice 3" })
	if err := bob.SetDisplayName(ctx, "Bob of B"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob's name on A", func() bool { return memberName(ctx, alice, room, bob.UserID) == "Bob of B" })

	var names []string // B saw alice's renames in order
	msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(msgs.Chunk) - 1; i >= 0; i-- {
		ev := msgs.Chunk[i]
		if ev.Type == event.StateMember && ev.GetStateKey() == string(alice.UserID) {
			_ = ev.Content.ParseRaw(ev.Type)
			names = append(names, ev.Content.AsMember().Displayname)
		}
	}
	if len(names) < 3 || names[len(names)-3] != "Alice 1" || names[len(names)-2] != "Alice 2" || names[len(names)-1] != "Alice 3" {
		t.Fatalf("B's timeline of alice's member events: %q", names)
	}
}

// A user of A invites a user of B to a private room: B's server signs the
// invite, B's user sees it in /sync and joins through A; then the other
// way round, and an invite can be rejected.
func TestInvitesAcrossServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	invitedTo := func(cli *mautrix.Client, room id.RoomID) bool {
		resp, err := cli.SyncRequest(ctx, 0, "", "", false, "")
		if err != nil {
			return false
		}
		_, ok := resp.Rooms.Invite[room]
		return ok
	}
	for _, tc := range []struct {
		name                     string
		inviter, invitee         *mautrix.Client
		inviterNode, inviteeNode *testnode.Node
	}{{"A invites B", alice, bob, a, b}, {"B invites A", bob, alice, b, a}} {
		created, err := tc.inviter.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: tc.name})
		if err != nil {
			t.Fatal(err)
		}
		room := created.RoomID
		if _, err := tc.inviter.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: tc.invitee.UserID}); err != nil {
			t.Fatalf("%s: invite: %v", tc.name, err)
		}
		waitFor(t, 20*time.Second, tc.name+": the invite in the invitee's sync", func() bool { return invitedTo(tc.invitee, room) })
		if _, err := tc.invitee.JoinRoomByID(ctx, room); err != nil {
			t.Fatalf("%s: join after the invite: %v", tc.name, err)
		}
		waitFor(t, 20*time.Second, tc.name+": the invitee joined in the inviter's room", func() bool {
			var content event.MemberEventContent
			return tc.inviter.StateEvent(ctx, room, event.StateMember, string(tc.invitee.UserID), &content) == nil && content.Membership == event.MembershipJoin
		})
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "declined"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.InviteUser(ctx, created.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "the second invite", func() bool { return invitedTo(bob, created.RoomID) })
	if _, err := bob.LeaveRoom(ctx, created.RoomID); err != nil {
		t.Fatalf("reject the invite: %v", err)
	}
	if invitedTo(bob, created.RoomID) {
		t.Fatal("a rejected invite is still in the invitee's sync")
	}
	waitFor(t, 20*time.Second, "the rejection in the inviter's room", func() bool {
		var content event.MemberEventContent
		return alice.StateEvent(ctx, created.RoomID, event.StateMember, string(bob.UserID), &content) == nil && content.Membership == event.MembershipLeave
	})
}

// Rooms of version 12 (and 11) are created here, their room id the hash
// of the create event, and a user of another server joins and renames in
// them.
func TestNewRoomVersionsAcrossServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	for _, version := range []string{"11", "12"} {
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", RoomVersion: id.RoomVersion(version)})
		if err != nil {
			t.Fatalf("v%s: %v", version, err)
		}
		room := created.RoomID
		if version == "12" && strings.Contains(string(room), ":") {
			t.Fatalf("a v12 room id names a server: %s", room)
		}
		if _, err := bob.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{a.Config.ServerName}}); err != nil {
			t.Fatalf("v%s: bob joins: %v", version, err)
		}
		if err := bob.SetDisplayName(ctx, "Bob v"+version); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 20*time.Second, "bob's rename in the v"+version+" room on A", func() bool {
			return memberName(ctx, alice, room, bob.UserID) == "Bob v"+version
		})
		if _, err := alice.SendStateEvent(ctx, room, event.StateRoomName, "", &event.RoomNameEventContent{Name: "v" + version}); err != nil {
			t.Fatalf("v%s: the creator sets the name: %v", version, err)
		}
	}
}
