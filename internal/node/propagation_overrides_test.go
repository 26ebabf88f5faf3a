package node_test

import (
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// End-to-end tests of what a profile change does to rooms that have their
// own say: per-room names kept or dropped, the propagate_to and propagate
// query parameters, and the keys a propagated member event keeps. The
// helpers they share with the other propagation tests are in
// propagation_test.go.

// deleteProfile DELETEs displayname or avatar_url with query parameters.
func deleteProfile(cli *mautrix.Client, key string, query map[string]string) error {
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "profile", cli.UserID, key}, query)
	_, err := cli.MakeRequest(ctx, http.MethodDelete, u, nil, nil)
	return err
}

// setRoomNick gives cli a per-room displayname in room.
func setRoomNick(t *testing.T, cli *mautrix.Client, room id.RoomID, nick string) {
	t.Helper()
	c := member(t, cli, room, cli.UserID)
	c["membership"], c["displayname"] = "join", nick
	if _, err := cli.SendStateEvent(ctx, room, event.StateMember, cli.UserID.String(), c); err != nil {
		t.Fatalf("per-room nick in %s: %v", room, err)
	}
}

func TestPerRoomNameSurvivesGlobalRename(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 2)
	a, b := rooms[0], rooms[1]
	setRoomNick(t, alice, a, "Alice in A")

	rename(t, alice, "Global Two", nil)
	waitPropagated(t, n, alice.UserID)
	if c := member(t, alice, a, alice.UserID); c["displayname"] != "Alice in A" {
		t.Fatalf("per-room name lost in A after a default rename: %v", c)
	}
	if c := member(t, alice, b, alice.UserID); c["displayname"] != "Global Two" {
		t.Fatalf("B after a default rename: %v", c)
	}

	rename(t, alice, "Global Three", map[string]string{"propagate_to": "all"})
	waitPropagated(t, n, alice.UserID)
	checkNames(t, alice, rooms, alice.UserID, "Global Three")

	// propagate_to=all dropped A's own name: default renames reach it again.
	rename(t, alice, "Global Four", nil)
	waitPropagated(t, n, alice.UserID)
	checkNames(t, alice, rooms, alice.UserID, "Global Four")
}

func TestPropagateNoneAndFalseLeaveRoomsAlone(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 3)
	for _, q := range []map[string]string{
		{"propagate_to": "none"},
		{"propagate": "false"},
		{"org.matrix.msc4069.propagate": "false"},
	} {
		name := fmt.Sprintf("Quiet %v", q)
		rename(t, alice, name, q)
		waitPropagated(t, n, alice.UserID)
		if p := globalProfile(t, alice, alice.UserID); p.DisplayName != name {
			t.Fatalf("%v: global displayname = %q, want %q", q, p.DisplayName, name)
		}
		checkNames(t, alice, rooms, alice.UserID, "alice")
	}
	if err := deleteProfile(alice, "displayname", map[string]string{"propagate_to": "none"}); err != nil {
		t.Fatal(err)
	}
	if p := globalProfile(t, alice, alice.UserID); p.DisplayName != "" {
		t.Fatalf("displayname after DELETE ?propagate_to=none: %q", p.DisplayName)
	}

	// A propagating avatar change is a barrier: once it is in every room,
	// any displayname update queued before it would be there too.
	up, err := alice.UploadBytes(ctx, []byte("\x89PNG barrier"), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, up.ContentURI); err != nil {
		t.Fatal(err)
	}
	waitPropagated(t, n, alice.UserID)
	for _, room := range rooms {
		if c := member(t, alice, room, alice.UserID); c["displayname"] != "alice" || c["avatar_url"] != up.ContentURI.String() {
			t.Fatalf("room %s after non-propagating renames and an avatar change: %v", room, c)
		}
	}

	before := globalProfile(t, alice, alice.UserID)
	for _, q := range []map[string]string{{"propagate_to": "bogus"}, {"propagate": "maybe"}} {
		err := putProfile(alice, "displayname", "Never", q)
		var he mautrix.HTTPError
		if !errors.As(err, &he) || he.Response == nil || he.Response.StatusCode != 400 || !errors.Is(err, mautrix.MInvalidParam) {
			t.Fatalf("%v: want 400 M_INVALID_PARAM, got %v", q, err)
		}
	}
	if after := globalProfile(t, alice, alice.UserID); after.DisplayName != before.DisplayName {
		t.Fatalf("a refused write changed the profile: %q -> %q", before.DisplayName, after.DisplayName)
	}
}

func TestPropagateUnchangedSkipsRoomsWithTheirOwnValue(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 2)
	a, b := rooms[0], rooms[1]
	setRoomNick(t, alice, a, "Alice in A")
	rename(t, alice, "Unchanged Only", map[string]string{"propagate_to": "unchanged"})
	waitPropagated(t, n, alice.UserID)
	if c := member(t, alice, a, alice.UserID); c["displayname"] != "Alice in A" {
		t.Fatalf("A (own name) after propagate_to=unchanged: %v", c)
	}
	if c := member(t, alice, b, alice.UserID); c["displayname"] != "Unchanged Only" {
		t.Fatalf("B (global name) after propagate_to=unchanged: %v", c)
	}
	if p := globalProfile(t, alice, alice.UserID); p.DisplayName != "Unchanged Only" {
		t.Fatalf("global displayname = %q", p.DisplayName)
	}
}

func TestAvatarChangeKeepsRoomNick(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 2)
	a, b := rooms[0], rooms[1]
	setRoomNick(t, alice, a, "Nick in A")
	up, err := alice.UploadBytes(ctx, []byte("\x89PNG new avatar"), "image/png")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.SetAvatarURL(ctx, up.ContentURI); err != nil {
		t.Fatal(err)
	}
	waitPropagated(t, n, alice.UserID)
	if c := member(t, alice, a, alice.UserID); c["avatar_url"] != up.ContentURI.String() || c["displayname"] != "Nick in A" || c["membership"] != "join" {
		t.Fatalf("A after a global avatar change: %v", c)
	}
	if c := member(t, alice, b, alice.UserID); c["avatar_url"] != up.ContentURI.String() || c["displayname"] != "alice" {
		t.Fatalf("B after a global avatar change: %v", c)
	}
}

func TestMemberEventContentRules(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, carol := n.Register("alice"), n.Register("carol")
	rooms := createRooms(t, alice, 2)
	r1, r2 := rooms[0], rooms[1]
	if err := carol.SetProfileField(ctx, "m.tz", "Europe/Paris"); err != nil {
		t.Fatal(err)
	}

	// r1: carol joins with a member PUT carrying extra keys.
	if _, err := carol.SendStateEvent(ctx, r1, event.StateMember, carol.UserID.String(), map[string]any{
		"membership": "join", "is_direct": true, "reason": "joining r1",
		"join_authorised_via_users_server": alice.UserID.String(), "com.example.kept": "yes",
	}); err != nil {
		t.Fatal(err)
	}
	// r2: carol joins, then PUTs her member event keeping the global name.
	join(t, carol, r1, r2)
	if _, err := carol.SendStateEvent(ctx, r2, event.StateMember, carol.UserID.String(), map[string]any{
		"membership": "join", "displayname": "carol", "is_direct": true, "reason": "per-room put",
	}); err != nil {
		t.Fatal(err)
	}
	joinEv := member(t, alice, r1, carol.UserID)
	if joinEv["reason"] != "joining r1" || joinEv["is_direct"] != true || joinEv["displayname"] != "carol" {
		t.Fatalf("carol's join event in r1: %v", joinEv)
	}

	rename(t, carol, "Carol Renamed", nil)
	waitPropagated(t, n, carol.UserID)
	for _, room := range rooms {
		c := member(t, alice, room, carol.UserID)
		if c["displayname"] != "Carol Renamed" || c["membership"] != "join" || c["is_direct"] != true {
			t.Errorf("%s: propagated member content lost a key: %v", room, c)
		}
		for _, k := range []string{"reason", "join_authorised_via_users_server", "m.tz"} {
			if _, ok := c[k]; ok {
				t.Errorf("%s: propagated member content keeps %s: %v", room, k, c)
			}
		}
	}
	if c := member(t, alice, r1, carol.UserID); c["com.example.kept"] != "yes" {
		t.Errorf("r1: propagated member content dropped a custom key: %v", c)
	}
	// No member event of carol's, joins included, carries a custom profile field.
	for _, room := range rooms {
		for _, ev := range memberHistory(t, alice, room, carol.UserID) {
			if _, ok := ev.Content.Raw["m.tz"]; ok {
				t.Errorf("%s: member event %s carries m.tz: %v", room, ev.ID, ev.Content.Raw)
			}
		}
	}
}

// TestRenamesRacingJoinsConverge: a user joins 40 rooms while renaming
// twice, the second time with propagate_to=unchanged. Whichever profile a
// join took, the user held no value of their own in any room, so every
// room ends with the last name, and no room's timeline shows an older name
// after a newer one. Three users, one after another, each in the same 40
// rooms: the race is in the timing.
func TestRenamesRacingJoinsConverge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 40)
	for i := range 3 {
		bob := n.Register(fmt.Sprintf("bob%d", i))
		order := []string{string(bob.UserID.Localpart()), "Bob One", "Bob Two"}
		joined := make(chan error, 1)
		go func() {
			for _, r := range rooms {
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					joined <- err
					return
				}
			}
			joined <- nil
		}()
		rename(t, bob, order[1], nil)
		rename(t, bob, order[2], map[string]string{"propagate_to": "unchanged"})
		if err := <-joined; err != nil {
			t.Fatal(err)
		}
		waitJoined(t, bob, rooms...)
		waitPropagated(t, n, bob.UserID)
		checkNames(t, alice, rooms, bob.UserID, order[2])
		for _, room := range rooms {
			last := -1
			for _, ev := range memberHistory(t, alice, room, bob.UserID) {
				name, _ := ev.Content.Raw["displayname"].(string)
				at := slices.Index(order, name)
				if at < last {
					t.Fatalf("room %s: %s's member events go back from %q to %q", room, bob.UserID, order[last], name)
				}
				last = at
			}
		}
	}
}

// TestRenamesRacingRejoinsConverge: a user leaves and joins 20 rooms again
// while renaming, every other rename with propagate_to=unchanged. Every
// room ends with the last name, and no room's timeline shows an older name
// after a newer one.
func TestRenamesRacingRejoinsConverge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := n.Register("alice"), n.Register("bob")
	rooms := createRooms(t, alice, 20)
	join(t, bob, rooms...)
	done := make(chan error, 1)
	go func() {
		for round := range 3 {
			for _, r := range rooms {
				if _, err := bob.LeaveRoom(ctx, r); err != nil {
					done <- fmt.Errorf("round %d: leave %s: %w", round, r, err)
					return
				}
				if _, err := bob.JoinRoomByID(ctx, r); err != nil {
					done <- fmt.Errorf("round %d: join %s: %w", round, r, err)
					return
				}
			}
		}
		done <- nil
	}()
	renames := renameWhile(t, bob, done, func(i int) (string, map[string]string) {
		if i%2 == 1 {
			return fmt.Sprintf("Bob %d", i+1), map[string]string{"propagate_to": "unchanged"}
		}
		return fmt.Sprintf("Bob %d", i+1), nil
	}, func(written int) bool { return written%2 == 1 }) // the last one unchanged
	order := append([]string{"bob"}, renames...)
	waitJoined(t, bob, rooms...)
	waitPropagated(t, n, bob.UserID)
	checkNames(t, alice, rooms, bob.UserID, order[len(order)-1])
	for _, room := range rooms {
		last := -1
		for _, ev := range memberHistory(t, alice, room, bob.UserID) {
			if ev.Content.Raw["membership"] != "join" {
				continue
			}
			name, _ := ev.Content.Raw["displayname"].(string)
			at := slices.Index(order, name)
			if at < last {
				t.Fatalf("room %s: bob's member events go back from %q to %q", room, order[last], name)
			}
			last = at
		}
	}
}
