package api_test

import (
	"context"
	"net/url"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

func local(name string) id.RoomAlias { return id.RoomAlias("#" + name + ":" + testnode.ServerName) }

// mustCreateRoom creates a room as c and returns its id.
func mustCreateRoom(t *testing.T, c *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	created, err := c.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatal(err)
	}
	return created.RoomID
}

func TestRoomAliasesList(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := testnode.Start(t, dir, nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{RoomAliasName: "main"})

	other := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{})
	for _, a := range []id.RoomAlias{local("zeta"), local("alpha")} {
		if _, err := alice.CreateAlias(ctx, a, room); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.CreateAlias(ctx, local("elsewhere"), other); err != nil {
		t.Fatal(err)
	}
	want := []id.RoomAlias{local("alpha"), local("main"), local("zeta")}
	list := func(cli *mautrix.Client, room id.RoomID) []id.RoomAlias {
		t.Helper()
		resp, err := cli.GetAliases(ctx, room)
		if err != nil {
			t.Fatalf("aliases of %s: %v", room, err)
		}
		return resp.Aliases
	}
	if got := list(alice, room); !slices.Equal(got, want) {
		t.Fatalf("aliases = %v, want %v", got, want)
	}
	fresh := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{})
	v3 := n.URL + "/_matrix/client/v3/rooms/"
	if status, body := dirDo(t, "GET", v3+url.PathEscape(fresh.String())+"/aliases", alice.AccessToken, ""); status != 200 || body["aliases"] == nil {
		t.Fatalf("aliases of a room without any = %d %v, want an empty list", status, body)
	}

	_, err := bob.GetAliases(ctx, room) // not joined, history shared
	wantErr(t, err, 403, "M_FORBIDDEN")
	_, err = bob.GetAliases(ctx, id.RoomID("!nosuch:"+testnode.ServerName))
	wantErr(t, err, 403, "M_FORBIDDEN")
	if status, body := dirDo(t, "GET", v3+"nosuch/aliases", alice.AccessToken, ""); status != 400 || body["errcode"] != "M_INVALID_PARAM" {
		t.Fatalf("bad room id = %d %v", status, body)
	}
	if status, body := dirDo(t, "GET", v3+url.PathEscape(room.String())+"/aliases", "", ""); status != 401 || body["errcode"] != "M_MISSING_TOKEN" {
		t.Fatalf("no token = %d %v", status, body)
	}
	if _, err := alice.SendStateEvent(ctx, room, event.StateHistoryVisibility, "",
		&event.HistoryVisibilityEventContent{HistoryVisibility: event.HistoryVisibilityWorldReadable}); err != nil {
		t.Fatal(err)
	}
	if got := list(bob, room); !slices.Equal(got, want) { // world_readable: anyone
		t.Fatalf("aliases for a non-member of a world_readable room = %v", got)
	}

	if _, err := alice.DeleteAlias(ctx, local("zeta")); err != nil {
		t.Fatal(err)
	}
	want = want[:2]
	if got := list(alice, room); !slices.Equal(got, want) {
		t.Fatalf("aliases after delete = %v, want %v", got, want)
	}

	n.Stop()
	n = testnode.Start(t, dir, nil)
	alice = n.Client(alice)
	if got := list(alice, room); !slices.Equal(got, want) {
		t.Fatalf("aliases after restart = %v, want %v", got, want)
	}
	if got := list(alice, other); !slices.Equal(got, []id.RoomAlias{local("elsewhere")}) {
		t.Fatalf("other room's aliases after restart = %v", got)
	}
}

func TestCanonicalAliasChecks(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	room := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{})

	other := mustCreateRoom(t, alice, &mautrix.ReqCreateRoom{})
	for a, r := range map[id.RoomAlias]id.RoomID{local("here"): room, local("here2"): room, local("there"): other, local("gone"): room} {
		if _, err := alice.CreateAlias(ctx, a, r); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := alice.DeleteAlias(ctx, local("gone")); err != nil {
		t.Fatal(err)
	}
	stateURL := n.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(room.String()) + "/state/m.room.canonical_alias"
	here, here2 := string(local("here")), string(local("here2"))
	for _, tc := range []struct {
		name, token, body string
		wantStatus        int
		wantCode          string
	}{
		{"present alias", alice.AccessToken, `{"alias":"` + here + `"}`, 200, ""},
		{"present alt_aliases", alice.AccessToken, `{"alias":"` + here + `","alt_aliases":["` + here2 + `"]}`, 200, ""},
		{"remote alias", alice.AccessToken, `{"alias":"#far:elsewhere.org"}`, 200, ""},
		{"empty alias", alice.AccessToken, `{"alias":""}`, 200, ""},
		{"no alias", alice.AccessToken, `{}`, 200, ""},
		{"missing alias", alice.AccessToken, `{"alias":"#nosuch:` + testnode.ServerName + `"}`, 400, "M_BAD_ALIAS"},
		{"deleted alias", alice.AccessToken, `{"alias":"` + string(local("gone")) + `"}`, 400, "M_BAD_ALIAS"},
		{"other room's alias", alice.AccessToken, `{"alias":"` + string(local("there")) + `"}`, 400, "M_BAD_ALIAS"},
		{"missing alt_alias", alice.AccessToken, `{"alias":"` + here + `","alt_aliases":["#nosuch:` + testnode.ServerName + `"]}`, 400, "M_BAD_ALIAS"},
		{"other room's alt_alias", alice.AccessToken, `{"alt_aliases":["` + string(local("there")) + `"]}`, 400, "M_BAD_ALIAS"},
		{"invalid alias", alice.AccessToken, `{"alias":"%invalid:` + testnode.ServerName + `"}`, 400, "M_INVALID_PARAM"},
		{"alias without server", alice.AccessToken, `{"alias":"#nope"}`, 400, "M_INVALID_PARAM"},
		{"alias number", alice.AccessToken, `{"alias":5}`, 400, "M_INVALID_PARAM"},
		{"invalid alt_alias", alice.AccessToken, `{"alias":"` + here + `","alt_aliases":["nope"]}`, 400, "M_INVALID_PARAM"},
		{"alt_aliases not a list", alice.AccessToken, `{"alt_aliases":"` + here + `"}`, 400, "M_INVALID_PARAM"},
		{"not a member", bob.AccessToken, `{"alias":"` + here + `"}`, 403, "M_FORBIDDEN"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := dirDo(t, "PUT", stateURL, tc.token, tc.body)
			if status != tc.wantStatus || (tc.wantCode != "" && body["errcode"] != tc.wantCode) {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.wantStatus, tc.wantCode)
			}
		})
	}

	// Deleting an alias takes it out of the event, sent by the user who
	// deleted it.
	if status, body := dirDo(t, "PUT", stateURL, alice.AccessToken, `{"alias":"`+here+`","alt_aliases":["`+here2+`"]}`); status != 200 {
		t.Fatalf("set alias = %d %v", status, body)
	}
	if _, err := alice.DeleteAlias(ctx, local("here")); err != nil {
		t.Fatal(err)
	}
	var content event.CanonicalAliasEventContent
	if err := alice.StateEvent(ctx, room, event.StateCanonicalAlias, "", &content); err != nil || content.Alias != "" || len(content.AltAliases) != 1 {
		t.Fatalf("canonical alias after deleting its alias = %+v, %v", content, err)
	}

	// A user who may not send the event leaves it as it is when deleting an
	// alias; an alias already in the event is not looked up again.
	if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, room); err != nil {
		t.Fatal(err)
	}
	bobs := string(local("bobs"))
	if _, err := bob.CreateAlias(ctx, local("bobs"), room); err != nil {
		t.Fatal(err)
	}
	if status, body := dirDo(t, "PUT", stateURL, alice.AccessToken, `{"alias":"`+bobs+`"}`); status != 200 {
		t.Fatalf("set bob's alias = %d %v", status, body)
	}
	if _, err := bob.DeleteAlias(ctx, local("bobs")); err != nil {
		t.Fatal(err)
	}
	if err := alice.StateEvent(ctx, room, event.StateCanonicalAlias, "", &content); err != nil || string(content.Alias) != bobs {
		t.Fatalf("canonical alias after bob deleted his alias = %+v, %v", content, err)
	}
	if status, body := dirDo(t, "PUT", stateURL, alice.AccessToken, `{"alias":"`+bobs+`","alt_aliases":["`+here2+`"]}`); status != 200 {
		t.Fatalf("keep a deleted alias, add an alt alias = %d %v", status, body)
	}
}

func TestCreateRoomCanonicalAlias(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	ctx := context.Background()
	stateWith := func(content map[string]any) []*event.Event {
		return []*event.Event{{Type: event.StateCanonicalAlias, StateKey: new(""), Content: event.Content{Raw: content}}}
	}
	_, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: stateWith(map[string]any{"alias": "#nosuch:" + testnode.ServerName})})
	wantErr(t, err, 400, "M_BAD_ALIAS")
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{InitialState: stateWith(map[string]any{"alias": "bad"})})
	wantErr(t, err, 400, "M_INVALID_PARAM")
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "kept",
		InitialState: stateWith(map[string]any{"alt_aliases": []string{"#nosuch:" + testnode.ServerName}})})
	wantErr(t, err, 400, "M_BAD_ALIAS")
	if _, err := alice.ResolveAlias(ctx, local("kept")); err == nil {
		t.Fatal("the alias of a refused /createRoom was kept")
	}

	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "new",
		InitialState: stateWith(map[string]any{"alias": string(local("new")), "alt_aliases": []string{"#far:elsewhere.org"}})})
	if err != nil {
		t.Fatal(err)
	}
	aliases, err := alice.GetAliases(ctx, created.RoomID)
	if err != nil || !slices.Equal(aliases.Aliases, []id.RoomAlias{local("new")}) {
		t.Fatalf("aliases = %+v, %v", aliases, err)
	}
	// initial_state comes after room_alias_name's event (the spec's order),
	// so its canonical alias is the room's.
	var canonical event.CanonicalAliasEventContent
	if err := alice.StateEvent(ctx, created.RoomID, event.StateCanonicalAlias, "", &canonical); err != nil {
		t.Fatal(err)
	}
	if canonical.Alias != local("new") || !slices.Equal(canonical.AltAliases, []id.RoomAlias{"#far:elsewhere.org"}) {
		t.Fatalf("canonical alias = %+v, want initial_state's", canonical)
	}
}
