package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// dirDo sends one request and decodes the JSON answer.
func dirDo(t *testing.T, method, u, token, body string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if err := json.Unmarshal(raw, &out); err != nil {
		t.Fatalf("%s %s: %d %q is not a JSON object", method, u, resp.StatusCode, raw)
	}
	return resp.StatusCode, out
}

func aliasURL(n *testnode.Node, alias string) string {
	return n.URL + "/_matrix/client/v3/directory/room/" + url.PathEscape(alias)
}

func TestDirectoryAliases(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	room := created.RoomID
	alias := id.RoomAlias("#lobby:" + testnode.ServerName)
	if _, err := alice.CreateAlias(ctx, alias, room); err != nil {
		t.Fatal(err)
	}
	status, body := dirDo(t, "GET", aliasURL(n, string(alias)), "", "") // no token needed
	if servers, _ := body["servers"].([]any); status != 200 || body["room_id"] != string(room) || len(servers) != 1 || servers[0] != testnode.ServerName {
		t.Fatalf("resolve = %d %v", status, body)
	}
	_, err = alice.CreateAlias(ctx, alias, room)
	wantErr(t, err, 409, "M_UNKNOWN")
	_, err = bob.CreateAlias(ctx, "#bobs:"+testnode.ServerName, room) // bob cannot see the room
	wantErr(t, err, 403, "M_FORBIDDEN")
	_, err = alice.CreateAlias(ctx, "#ghost:"+testnode.ServerName, "!nosuchroom:"+testnode.ServerName)
	if err == nil {
		t.Fatal("alias to an unknown room was created")
	}

	joined, err := bob.JoinRoom(ctx, string(alias), nil)
	if err != nil || joined.RoomID != room {
		t.Fatalf("join by alias = %+v, %v", joined, err)
	}
	members, err := alice.JoinedMembers(ctx, room)
	if err != nil || len(members.Joined) != 2 {
		t.Fatalf("members after join by alias = %+v, %v", members, err)
	}
	_, err = bob.JoinRoom(ctx, "#nosuch:"+testnode.ServerName, nil)
	wantErr(t, err, 404, "M_NOT_FOUND")

	_, err = bob.DeleteAlias(ctx, alias) // not the creator, power level 0
	wantErr(t, err, 403, "M_FORBIDDEN")
	if _, err := alice.DeleteAlias(ctx, alias); err != nil {
		t.Fatal(err)
	}
	_, err = alice.ResolveAlias(ctx, alias)
	wantErr(t, err, 404, "M_NOT_FOUND")
	_, err = alice.DeleteAlias(ctx, alias)
	wantErr(t, err, 404, "M_NOT_FOUND")

	// A member with the power to set the canonical alias may delete any alias.
	mine := id.RoomAlias("#bobs:" + testnode.ServerName)
	if _, err := bob.CreateAlias(ctx, mine, room); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.DeleteAlias(ctx, mine); err != nil {
		t.Fatalf("room admin deleting a member's alias: %v", err)
	}
}

func TestDirectoryCreateRoomAlias(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	ctx := context.Background()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "général", Name: "Lobby"})
	if err != nil {
		t.Fatal(err)
	}
	alias := id.RoomAlias("#général:" + testnode.ServerName)
	var content event.CanonicalAliasEventContent
	if err := alice.StateEvent(ctx, created.RoomID, event.StateCanonicalAlias, "", &content); err != nil || content.Alias != alias {
		t.Fatalf("canonical alias = %+v, %v", content, err)
	}
	resolved, err := alice.ResolveAlias(ctx, alias)
	if err != nil || resolved.RoomID != created.RoomID {
		t.Fatalf("resolve = %+v, %v", resolved, err)
	}
	_, err = alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{RoomAliasName: "général"})
	wantErr(t, err, 400, "M_ROOM_IN_USE")
	if resolved, err := alice.ResolveAlias(ctx, alias); err != nil || resolved.RoomID != created.RoomID {
		t.Fatalf("alias after a refused create = %+v, %v", resolved, err)
	}
}

// publicRooms lists the directory (GET, no token) by room id.
func publicRooms(t *testing.T, n *testnode.Node, query string) (map[string]map[string]any, map[string]any) {
	t.Helper()
	status, body := dirDo(t, "GET", n.URL+"/_matrix/client/v3/publicRooms"+query, "", "")
	chunk, ok := body["chunk"].([]any)
	if status != 200 || !ok {
		t.Fatalf("publicRooms = %d %v", status, body)
	}
	out := map[string]map[string]any{}
	for _, c := range chunk {
		r := c.(map[string]any)
		out[r["room_id"].(string)] = r
	}
	return out, body
}

func TestDirectoryPublicRooms(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	n := testnode.Start(t, dir, nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	pub, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Lobby", Topic: "Wombles welcome", RoomAliasName: "lobby"})
	if err != nil {
		t.Fatal(err)
	}
	priv, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "private", Name: "Secret"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.JoinRoomByID(ctx, pub.RoomID); err != nil {
		t.Fatal(err)
	}
	rooms, body := publicRooms(t, n, "")
	got := rooms[pub.RoomID.String()]
	if got == nil || got["name"] != "Lobby" || got["topic"] != "Wombles welcome" || got["num_joined_members"] != 2.0 ||
		got["canonical_alias"] != "#lobby:"+testnode.ServerName || got["world_readable"] != false || got["guest_can_join"] != false || got["join_rule"] != "public" {
		t.Fatalf("public room entry = %v", got)
	}
	if rooms[priv.RoomID.String()] != nil || body["total_room_count_estimate"] != 1.0 {
		t.Fatalf("private room listed: %v", body)
	}
	v3 := n.URL + "/_matrix/client/v3"
	for term, want := range map[string]int{"WOMBLE": 1, "lob": 1, "zzz": 0} {
		status, res := dirDo(t, "POST", v3+"/publicRooms", bob.AccessToken, `{"filter":{"generic_search_term":"`+term+`"}}`)
		if chunk, _ := res["chunk"].([]any); status != 200 || len(chunk) != want {
			t.Fatalf("search %q = %d %v", term, status, res)
		}
	}
	vis := func(room id.RoomID) string {
		_, res := dirDo(t, "GET", v3+"/directory/list/room/"+url.PathEscape(room.String()), "", "")
		return res["visibility"].(string)
	}
	if vis(pub.RoomID) != "public" || vis(priv.RoomID) != "private" {
		t.Fatal("directory visibility is wrong")
	}

	// Paging: two public rooms, one per page.
	second, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Visibility: "public", Preset: "public_chat", Name: "Second"})
	if err != nil {
		t.Fatal(err)
	}
	page1, body := publicRooms(t, n, "?limit=1")
	if len(page1) != 1 || page1[pub.RoomID.String()] == nil || body["next_batch"] != "1" {
		t.Fatalf("page 1 = %v", body)
	}
	page2, body := publicRooms(t, n, "?limit=1&since=1")
	if len(page2) != 1 || page2[second.RoomID.String()] == nil || body["next_batch"] != nil {
		t.Fatalf("page 2 = %v", body)
	}

	// Only those with the power to may unpublish.
	listURL := v3 + "/directory/list/room/" + url.PathEscape(second.RoomID.String())
	if status, res := dirDo(t, "PUT", listURL, bob.AccessToken, `{"visibility":"private"}`); status != 403 || res["errcode"] != "M_FORBIDDEN" {
		t.Fatalf("bob unpublishing = %d %v", status, res)
	}
	if status, res := dirDo(t, "PUT", listURL, alice.AccessToken, `{"visibility":"private"}`); status != 200 {
		t.Fatalf("unpublish = %d %v", status, res)
	}
	if rooms, _ := publicRooms(t, n, ""); len(rooms) != 1 || vis(second.RoomID) != "private" {
		t.Fatalf("after unpublish: %v", rooms)
	}

	// Aliases and the directory are durable.
	n.Stop()
	n = testnode.Start(t, dir, nil)
	if rooms, _ := publicRooms(t, n, ""); len(rooms) != 1 || rooms[pub.RoomID.String()] == nil {
		t.Fatalf("directory after restart: %v", rooms)
	}
	if status, res := dirDo(t, "GET", aliasURL(n, "#lobby:"+testnode.ServerName), "", ""); status != 200 || res["room_id"] != pub.RoomID.String() {
		t.Fatalf("alias after restart = %d %v", status, res)
	}
}

func TestDirectoryBadInput(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	tok := alice.AccessToken
	created, err := alice.CreateRoom(context.Background(), &mautrix.ReqCreateRoom{})
	if err != nil {
		t.Fatal(err)
	}
	v3 := n.URL + "/_matrix/client/v3"
	room := `{"room_id":"` + created.RoomID.String() + `"}`
	listURL := v3 + "/directory/list/room/" + url.PathEscape(created.RoomID.String())
	for _, tc := range []struct {
		name, method, url, token, body string
		wantStatus                     int
		wantCode                       string
	}{
		{"put without #", "PUT", aliasURL(n, "lobby:"+testnode.ServerName), tok, room, 400, "M_INVALID_PARAM"},
		{"put empty localpart", "PUT", aliasURL(n, "#:"+testnode.ServerName), tok, room, 400, "M_INVALID_PARAM"},
		{"put no server", "PUT", aliasURL(n, "#lobby"), tok, room, 400, "M_INVALID_PARAM"},
		{"put remote server", "PUT", aliasURL(n, "#lobby:elsewhere.org"), tok, room, 400, "M_INVALID_PARAM"},
		{"put space", "PUT", aliasURL(n, "#a b:"+testnode.ServerName), tok, room, 400, "M_INVALID_PARAM"},
		{"put NUL", "PUT", aliasURL(n, "#a\x00b:"+testnode.ServerName), tok, room, 400, "M_INVALID_PARAM"},
		{"put too long", "PUT", aliasURL(n, "#"+strings.Repeat("a", 260)+":"+testnode.ServerName), tok, room, 400, "M_INVALID_PARAM"},
		{"put no token", "PUT", aliasURL(n, "#ok:"+testnode.ServerName), "", room, 401, "M_MISSING_TOKEN"},
		{"put missing room_id", "PUT", aliasURL(n, "#ok:"+testnode.ServerName), tok, `{}`, 400, "M_MISSING_PARAM"},
		{"put bad room_id", "PUT", aliasURL(n, "#ok:"+testnode.ServerName), tok, `{"room_id":"lobby"}`, 400, "M_INVALID_PARAM"},
		{"put room_id number", "PUT", aliasURL(n, "#ok:"+testnode.ServerName), tok, `{"room_id":5}`, 400, "M_BAD_JSON"},
		{"put not json", "PUT", aliasURL(n, "#ok:"+testnode.ServerName), tok, `{`, 400, "M_NOT_JSON"},
		{"get bad alias", "GET", aliasURL(n, "lobby"), "", "", 400, "M_INVALID_PARAM"},
		{"get remote alias", "GET", aliasURL(n, "#lobby:elsewhere.org"), "", "", 404, "M_NOT_FOUND"},
		{"get unknown alias", "GET", aliasURL(n, "#nosuch:"+testnode.ServerName), "", "", 404, "M_NOT_FOUND"},
		{"delete bad alias", "DELETE", aliasURL(n, "#:x"), tok, "", 400, "M_INVALID_PARAM"},
		{"delete no token", "DELETE", aliasURL(n, "#ok:"+testnode.ServerName), "", "", 401, "M_MISSING_TOKEN"},
		{"join bad alias", "POST", v3 + "/join/" + url.PathEscape("#:"+testnode.ServerName), tok, "", 400, "M_INVALID_PARAM"},
		{"create alias with colon", "POST", v3 + "/createRoom", tok, `{"room_alias_name":"a:b"}`, 400, "M_INVALID_PARAM"},
		{"create alias with space", "POST", v3 + "/createRoom", tok, `{"room_alias_name":"a b"}`, 400, "M_INVALID_PARAM"},
		{"create alias number", "POST", v3 + "/createRoom", tok, `{"room_alias_name":5}`, 400, "M_BAD_JSON"},
		{"visibility bad value", "PUT", listURL, tok, `{"visibility":"hidden"}`, 400, "M_INVALID_PARAM"},
		{"visibility number", "PUT", listURL, tok, `{"visibility":1}`, 400, "M_BAD_JSON"},
		{"visibility no token", "PUT", listURL, "", `{"visibility":"public"}`, 401, "M_MISSING_TOKEN"},
		{"visibility bad room", "GET", v3 + "/directory/list/room/lobby", "", "", 400, "M_INVALID_PARAM"},
		{"visibility unknown room", "GET", v3 + "/directory/list/room/" + url.PathEscape("!nosuch:"+testnode.ServerName), "", "", 404, "M_NOT_FOUND"},
		{"public bad limit", "GET", v3 + "/publicRooms?limit=ten", "", "", 400, "M_INVALID_PARAM"},
		{"public bad since", "GET", v3 + "/publicRooms?since=-1", "", "", 400, "M_INVALID_PARAM"},
		{"public remote server", "GET", v3 + "/publicRooms?server=elsewhere.org", "", "", 404, "M_NOT_FOUND"},
		{"public post no token", "POST", v3 + "/publicRooms", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"public post limit string", "POST", v3 + "/publicRooms", tok, `{"limit":"5"}`, 400, "M_BAD_JSON"},
		{"public post filter array", "POST", v3 + "/publicRooms", tok, `{"filter":[]}`, 400, "M_BAD_JSON"},
		{"public post bad since", "POST", v3 + "/publicRooms", tok, `{"since":"x"}`, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := dirDo(t, tc.method, tc.url, tc.token, tc.body)
			if status != tc.wantStatus || body["errcode"] != tc.wantCode {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.wantStatus, tc.wantCode)
			}
		})
	}
}
