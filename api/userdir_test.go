package api_test

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"persona/internal/testnode"
)

// TestUserDirectory: a user in a public room is found by name and ID; a
// room-specific name is found, and shown, only by the other members of that
// room; users who share nothing with the searcher are not found.
func TestUserDirectory(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := testnode.Start(t, "", nil)
	alice, bob, eve := n.Register("dirAlice"), n.Register("dirBob"), n.Register("dirEve")
	if err := alice.SetDisplayName(ctx, "Alice Cooper"); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"}); err != nil {
		t.Fatal(err)
	}
	private, err := bob.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: nil})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.InviteUser(ctx, private.RoomID, &mautrix.ReqInviteUser{UserID: alice.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.JoinRoomByID(ctx, private.RoomID); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.SendStateEvent(ctx, private.RoomID, event.StateMember, alice.UserID.String(),
		map[string]any{"membership": "join", "displayname": "Freddy"}); err != nil {
		t.Fatal(err)
	}
	search := func(c *mautrix.Client, term string) []string {
		t.Helper()
		res, err := c.SearchUserDirectory(ctx, term, 10)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, u := range res.Results {
			// The spec's field is display_name; mautrix keeps it in Extra.
			name, _ := u.Extra["display_name"].(string)
			ids = append(ids, u.UserID.String()+"="+name)
		}
		return ids
	}
	want := alice.UserID.String() + "=Alice Cooper"
	for _, c := range []*mautrix.Client{bob, eve} {
		if got := search(c, "alice coop"); len(got) != 1 || got[0] != want {
			t.Fatalf("%s searching the public name: %v", c.UserID, got)
		}
	}
	// Bob shares the private room: he finds Alice by the name she has there,
	// and sees that name; Eve does not share it and finds nobody.
	if got := search(bob, "Freddy"); len(got) != 1 || got[0] != alice.UserID.String()+"=Freddy" {
		t.Fatalf("bob searching the room-specific name: %v", got)
	}
	// Matching both her names, Alice is listed once, by her global name.
	if got := search(bob, "e"); len(got) != 1 || got[0] != want {
		t.Fatalf("bob searching a term in both of alice's names: %v", got)
	}
	if got := search(eve, "Freddy"); len(got) != 0 {
		t.Fatalf("eve found the room-specific name of a room she is not in: %v", got)
	}
	if got := search(alice, "Freddy"); len(got) != 0 {
		t.Fatalf("alice found herself: %v", got)
	}
	if got := search(eve, "dirbob"); len(got) != 0 {
		t.Fatalf("eve found bob, who shares nothing with her: %v", got)
	}
	if got := search(alice, "dirbob"); len(got) != 1 {
		t.Fatalf("alice shares a room with bob but did not find him: %v", got)
	}
}
