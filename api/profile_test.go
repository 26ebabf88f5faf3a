package api_test

import (
	"context"
	"net/url"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// profileURLs are the profile reads of user: the whole profile, one key,
// and persona's ?keys= filter.
func profileURLs(n *testnode.Node, user id.UserID) map[string]string {
	base := n.URL + "/_matrix/client/v3/profile/" + url.PathEscape(string(user))
	return map[string]string{"whole": base, "displayname": base + "/displayname", "keys": base + "?keys=displayname"}
}

// wantProfileRefused checks that every profile read of user by token is
// refused with 403 M_FORBIDDEN: the spec's answer (since v1.2, MSC3550 and
// MSC4170) for a server unwilling to disclose whether the user exists.
func wantProfileRefused(t *testing.T, n *testnode.Node, token string, user id.UserID) {
	t.Helper()
	for name, u := range profileURLs(n, user) {
		if status, body := dirDo(t, "GET", u, token, ""); status != 403 || body["errcode"] != "M_FORBIDDEN" {
			t.Errorf("read %s of %s: %d %v, want 403 M_FORBIDDEN", name, user, status, body)
		}
	}
}

// wantDisplayname checks that cli reads user's display name, through the
// whole profile and the single key.
func wantDisplayname(t *testing.T, cli *mautrix.Client, user id.UserID, want string) {
	t.Helper()
	ctx := context.Background()
	p, err := cli.GetProfile(ctx, user)
	if err != nil {
		t.Fatalf("%s reads the profile of %s: %v", cli.UserID, user, err)
	}
	if p.DisplayName != want {
		t.Errorf("%s reads the profile of %s: displayname %q, want %q", cli.UserID, user, p.DisplayName, want)
	}
	var field struct {
		Displayname string `json:"displayname"`
	}
	if err := cli.GetProfileField(ctx, user, "displayname", &field); err != nil {
		t.Fatalf("%s reads the displayname of %s: %v", cli.UserID, user, err)
	}
	if field.Displayname != want {
		t.Errorf("%s reads the displayname of %s: %q, want %q", cli.UserID, user, field.Displayname, want)
	}
}

// TestProfileLimitToSharedRooms covers profile.limit_to_shared_rooms: a user
// reads their own profile and those of users joined to a room with them,
// nobody else's, and loses sight of a user once no room is shared.
func TestProfileLimitToSharedRooms(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", func(c *config.Config) { c.Profile.LimitToSharedRooms = true })
	ctx := context.Background()
	alice, bob, carol := n.Register("alice"), n.Register("bob"), n.Register("carol")
	for cli, name := range map[*mautrix.Client]string{alice: "Alice", bob: "Bob", carol: "Carol"} {
		if err := cli.SetDisplayName(ctx, name); err != nil {
			t.Fatal(err)
		}
	}

	// Before any room: only one's own profile.
	wantDisplayname(t, alice, alice.UserID, "Alice")
	wantProfileRefused(t, n, alice.AccessToken, bob.UserID)

	// alice and bob join a room; carol is only invited to it.
	room := createRoom(t, alice, bob)
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
		t.Fatal(err)
	}
	wantDisplayname(t, alice, bob.UserID, "Bob")
	wantDisplayname(t, bob, alice.UserID, "Alice")
	t.Run("no shared room", func(t *testing.T) {
		wantProfileRefused(t, n, alice.AccessToken, carol.UserID)
		wantProfileRefused(t, n, carol.AccessToken, alice.UserID)
		// An unknown user looks the same as a known one outside one's rooms.
		wantProfileRefused(t, n, alice.AccessToken, id.NewUserID("nobody", testnode.ServerName))
	})
	t.Run("needs a token", func(t *testing.T) {
		for name, u := range profileURLs(n, alice.UserID) {
			if status, body := dirDo(t, "GET", u, "", ""); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
				t.Errorf("anonymous read %s: %d %v, want 401 M_MISSING_TOKEN", name, status, body)
			}
		}
	})

	// bob leaves: alice and bob no longer share a room.
	if _, err := bob.LeaveRoom(ctx, room); err != nil {
		t.Fatal(err)
	}
	wantProfileRefused(t, n, alice.AccessToken, bob.UserID)
	wantProfileRefused(t, n, bob.AccessToken, alice.UserID)
	wantDisplayname(t, bob, bob.UserID, "Bob")
}

// TestProfileReadableByDefault: with profile.limit_to_shared_rooms off (the
// default), any profile is readable, by any user or without a token.
func TestProfileReadableByDefault(t *testing.T) {
	t.Parallel()
	if config.Default().Profile.LimitToSharedRooms {
		t.Fatal("profile.limit_to_shared_rooms is on by default")
	}
	n := testnode.Start(t, "", nil)
	alice, carol := n.Register("alice"), n.Register("carol")
	if err := carol.SetDisplayName(context.Background(), "Carol"); err != nil {
		t.Fatal(err)
	}
	wantDisplayname(t, alice, carol.UserID, "Carol")
	for name, u := range profileURLs(n, carol.UserID) {
		if status, body := dirDo(t, "GET", u, "", ""); status != 200 || body["displayname"] != "Carol" {
			t.Errorf("anonymous read %s: %d %v, want 200 with displayname Carol", name, status, body)
		}
	}
}
