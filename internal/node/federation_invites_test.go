package node_test

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// syncedSince syncs cli from since and returns the answer.
func syncedSince(ctx context.Context, t *testing.T, cli *mautrix.Client, since string) *mautrix.RespSync {
	t.Helper()
	resp, err := cli.SyncRequest(ctx, 0, since, "", false, "")
	if err != nil {
		t.Fatalf("%s syncs: %v", cli.UserID, err)
	}
	return resp
}

// invited reports whether cli's sync lists room among its invites.
func invited(ctx context.Context, t *testing.T, cli *mautrix.Client, room id.RoomID) bool {
	_, ok := syncedSince(ctx, t, cli, "").Rooms.Invite[room]
	return ok
}

// waitLeftWith waits until a sync of cli from since lists room among its
// leaves with cli's user's leave event in its timeline, sent by sender,
// and returns that event.
func waitLeftWith(ctx context.Context, t *testing.T, cli *mautrix.Client, since string, room id.RoomID, sender id.UserID) *event.Event {
	t.Helper()
	var leave *event.Event
	waitFor(t, 20*time.Second, string(cli.UserID)+"'s sync to list its leave of "+string(room), func() bool {
		left, ok := syncedSince(ctx, t, cli, since).Rooms.Leave[room]
		if !ok {
			return false
		}
		for _, ev := range left.Timeline.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == string(cli.UserID) && ev.Content.Raw["membership"] == "leave" && ev.Sender == sender {
				leave = ev
				return true
			}
		}
		return false
	})
	if invited(ctx, t, cli, room) {
		t.Fatalf("%s is still invited to %s after its leave", cli.UserID, room)
	}
	return leave
}

// An invite's rejection goes through the room's other servers when the
// inviting one is down (the server of the room's creator, named by the
// invite's stripped state), and when no server can be reached it is
// recorded on the invitee's server alone: either way the invitee's client
// gets 200, and its /sync moves the room from its invites to its leaves,
// with the leave.
func TestInviteRejectionGoesThroughTheRoomsOtherServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	c := testnode.Start(t, "", byAddress(t))
	alice, bob, carol := a.Register("alice"), b.Register("bob"), c.Register("carol")

	created, err := carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "carol's"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	if _, err := alice.JoinRoom(ctx, string(room), &mautrix.ReqJoinRoom{Via: []string{c.Config.ServerName}}); err != nil {
		t.Fatal(err)
	}
	waitMembership(ctx, t, carol, room, alice.UserID, "join")
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob's invite", func() bool { return invited(ctx, t, bob, room) })
	waitMembership(ctx, t, carol, room, bob.UserID, "invite")
	since := syncedSince(ctx, t, bob, "").NextBatch

	a.Stop() // the inviting server
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatalf("bob rejects the invite while the inviting server is down: %v", err)
	}
	waitLeftWith(ctx, t, bob, since, room, bob.UserID)
	waitMembership(ctx, t, carol, room, bob.UserID, "leave")

	// No server of the room can be reached: the rejection is B's alone.
	created, err = carol.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	alone := created.RoomID
	waitFor(t, 20*time.Second, "bob's second invite", func() bool { return invited(ctx, t, bob, alone) })
	since = syncedSince(ctx, t, bob, "").NextBatch
	c.Stop()
	if _, err := bob.LeaveRoom(ctx, alone); err != nil {
		t.Fatalf("bob rejects an invite no server of the room can take: %v", err)
	}
	waitLeftWith(ctx, t, bob, since, alone, bob.UserID)
}

// A direct chat's invite of a user of another server says is_direct, as a
// local invitee's does, and the invitee's join carries it in its
// prev_content, with the inviter as prev_sender.
func TestDirectChatInviteIsDirectAcrossServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, bob := a.Register("alice"), b.Register("bob")
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "trusted_private_chat", Invite: []id.UserID{bob.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	var invite *event.Event
	waitFor(t, 20*time.Second, "bob's invite", func() bool {
		inv, ok := syncedSince(ctx, t, bob, "").Rooms.Invite[room]
		if !ok {
			return false
		}
		for _, ev := range inv.State.Events {
			if ev.Type == event.StateMember && ev.GetStateKey() == string(bob.UserID) {
				invite = ev
			}
		}
		return invite != nil
	})
	if invite.Content.Raw["is_direct"] != true {
		t.Fatalf("bob's invite as his server shows it: %v, want is_direct", invite.Content.Raw)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	_, ids, err := memberSteps(ctx, bob, room, bob.UserID)
	if err != nil || len(ids) == 0 {
		t.Fatalf("bob's member events on B: %v %v", ids, err)
	}
	join, err := bob.GetEvent(ctx, room, ids[len(ids)-1])
	if err != nil {
		t.Fatal(err)
	}
	prev := join.Unsigned.PrevContent
	if join.Content.Raw["membership"] != "join" || prev == nil || prev.Raw["membership"] != "invite" || prev.Raw["is_direct"] != true || join.Unsigned.PrevSender != alice.UserID {
		t.Fatalf("bob's join on B: content %v, prev_content %v, prev_sender %s; want a join after alice's direct invite", join.Content.Raw, prev, join.Unsigned.PrevSender)
	}
}

// The user who invited a user of another server rescinds the invite with a
// kick: the kick reaches the invitee's server, which is not in the room,
// and the invite leaves the invitee's invites. A kick by any other member
// does not: the invitee's server refuses it and the invite stands.
func TestInviterRescindsAnInviteAcrossServers(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	a := testnode.Start(t, "", byAddress(t))
	b := testnode.Start(t, "", byAddress(t))
	alice, alice2, bob := a.Register("alice"), a.Register("alice2"), b.Register("bob")

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	waitFor(t, 20*time.Second, "bob's invite", func() bool { return invited(ctx, t, bob, room) })
	since := syncedSince(ctx, t, bob, "").NextBatch
	if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "rescinded"}); err != nil {
		t.Fatal(err)
	}
	leave := waitLeftWith(ctx, t, bob, since, room, alice.UserID)
	if leave.Content.Raw["reason"] != "rescinded" || leave.Unsigned.PrevContent == nil || leave.Unsigned.PrevContent.Raw["membership"] != "invite" {
		t.Fatalf("the rescinding as bob's server shows it: content %v, prev_content %v", leave.Content.Raw, leave.Unsigned.PrevContent)
	}

	created, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{alice2.UserID}})
	if err != nil {
		t.Fatal(err)
	}
	other := created.RoomID
	if _, err := alice2.JoinRoomByID(ctx, other); err != nil {
		t.Fatal(err)
	}
	if _, err := alice2.InviteUser(ctx, other, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "bob's invite by alice2", func() bool { return invited(ctx, t, bob, other) })
	refused := metric(t, a, "persona_federation_pdus_refused_total")
	if _, err := alice.KickUser(ctx, other, &mautrix.ReqKickUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 20*time.Second, "B to refuse the kick by a member who did not invite", func() bool {
		return metric(t, a, "persona_federation_pdus_refused_total") > refused
	})
	if !invited(ctx, t, bob, other) {
		t.Fatal("a kick by a member who did not invite bob rescinded his invite")
	}
}
