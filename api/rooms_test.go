package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// wantErr checks that err is a Matrix error with this status and errcode.
func wantErr(t *testing.T, err error, status int, code string) {
	t.Helper()
	var he mautrix.HTTPError
	if !errors.As(err, &he) || he.Response == nil {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
	if he.Response.StatusCode != status || (he.RespError != nil && he.RespError.ErrCode != code) {
		t.Fatalf("want %d %s, got %v", status, code, err)
	}
}

// doRaw sends one request and returns the status and raw body.
func doRaw(t *testing.T, method, u, token, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, u, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, raw
}

// TestRoomInputValidation covers bad input that is refused before any room
// is asked.
func TestRoomInputValidation(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	tok := alice.AccessToken
	v3 := n.URL + "/_matrix/client/v3"
	room := v3 + "/rooms/" + url.PathEscape("!abc:"+testnode.ServerName)
	me := url.PathEscape("@alice:" + testnode.ServerName)
	for _, tc := range []struct {
		name, method, url, token, body string
		wantStatus                     int
		wantCode                       string
	}{
		{"create without token", "POST", v3 + "/createRoom", "", `{}`, 401, "M_MISSING_TOKEN"},
		{"create not json", "POST", v3 + "/createRoom", tok, `{"name":`, 400, "M_NOT_JSON"},
		{"create array", "POST", v3 + "/createRoom", tok, `[]`, 400, "M_BAD_JSON"},
		{"create name number", "POST", v3 + "/createRoom", tok, `{"name":5}`, 400, "M_BAD_JSON"},
		{"create topic null", "POST", v3 + "/createRoom", tok, `{"topic":null}`, 400, "M_BAD_JSON"},
		{"create invite not list", "POST", v3 + "/createRoom", tok, `{"invite":"@bob:x.org"}`, 400, "M_INVALID_PARAM"},
		{"create invite bad id", "POST", v3 + "/createRoom", tok, `{"invite":["bob"]}`, 400, "M_INVALID_PARAM"},
		{"create invite unknown", "POST", v3 + "/createRoom", tok, `{"invite":["@nobody:` + testnode.ServerName + `"]}`, 404, "M_NOT_FOUND"},
		{"create bad preset", "POST", v3 + "/createRoom", tok, `{"preset":"open"}`, 400, "M_INVALID_PARAM"},
		{"create bad visibility", "POST", v3 + "/createRoom", tok, `{"visibility":"hidden"}`, 400, "M_INVALID_PARAM"},
		{"create room version 99", "POST", v3 + "/createRoom", tok, `{"room_version":"99"}`, 400, "M_UNSUPPORTED_ROOM_VERSION"},
		{"create room version number", "POST", v3 + "/createRoom", tok, `{"room_version":10}`, 400, "M_BAD_JSON"},
		{"create initial_state no type", "POST", v3 + "/createRoom", tok, `{"initial_state":[{"content":{}}]}`, 400, "M_BAD_JSON"},
		{"create initial_state not events", "POST", v3 + "/createRoom", tok, `{"initial_state":[1]}`, 400, "M_BAD_JSON"},
		{"create initial_state bad content", "POST", v3 + "/createRoom", tok, `{"initial_state":[{"type":"m.x","content":[]}]}`, 400, "M_BAD_JSON"},
		{"create pl override array", "POST", v3 + "/createRoom", tok, `{"power_level_content_override":[]}`, 400, "M_BAD_JSON"},
		{"create creation_content string", "POST", v3 + "/createRoom", tok, `{"creation_content":"x"}`, 400, "M_BAD_JSON"},
		{"create is_direct string", "POST", v3 + "/createRoom", tok, `{"is_direct":"yes"}`, 400, "M_BAD_JSON"},
		{"join alias", "POST", v3 + "/join/" + url.PathEscape("#room:"+testnode.ServerName), tok, ``, 404, "M_NOT_FOUND"},
		{"join bad id", "POST", v3 + "/join/abc", tok, ``, 400, "M_INVALID_PARAM"},
		{"join id without server", "POST", v3 + "/rooms/" + url.PathEscape("!abc") + "/join", tok, ``, 400, "M_INVALID_PARAM"},
		{"join reason number", "POST", room + "/join", tok, `{"reason":1}`, 400, "M_BAD_JSON"},
		{"invite without user_id", "POST", room + "/invite", tok, `{}`, 400, "M_MISSING_PARAM"},
		{"invite user_id number", "POST", room + "/invite", tok, `{"user_id":5}`, 400, "M_BAD_JSON"},
		{"invite bad user id", "POST", room + "/invite", tok, `{"user_id":"bob"}`, 400, "M_INVALID_PARAM"},
		{"invite remote user to an unknown room", "POST", room + "/invite", tok, `{"user_id":"@bob:elsewhere.org"}`, 404, "M_NOT_FOUND"},
		{"invite unknown user", "POST", room + "/invite", tok, `{"user_id":"@nobody:` + testnode.ServerName + `"}`, 404, "M_NOT_FOUND"},
		{"kick not json", "POST", room + "/kick", tok, `nope`, 400, "M_NOT_JSON"},
		{"ban empty body", "POST", room + "/ban", tok, ``, 400, "M_NOT_JSON"},
		{"state bad room", "GET", v3 + "/rooms/nope/state", tok, ``, 400, "M_INVALID_PARAM"},
		{"put state array", "PUT", room + "/state/m.room.topic", tok, `[]`, 400, "M_BAD_JSON"},
		{"put state null", "PUT", room + "/state/m.room.topic/", tok, `null`, 400, "M_BAD_JSON"},
		{"send not json", "PUT", room + "/send/m.room.message/t1", tok, `{`, 400, "M_NOT_JSON"},
		{"members bad membership", "GET", room + "/members?membership=gone", tok, ``, 400, "M_INVALID_PARAM"},
		{"messages bad limit", "GET", room + "/messages?limit=ten", tok, ``, 400, "M_INVALID_PARAM"},
		{"messages zero limit", "GET", room + "/messages?limit=0", tok, ``, 400, "M_INVALID_PARAM"},
		{"messages bad dir", "GET", room + "/messages?dir=up", tok, ``, 400, "M_INVALID_PARAM"},
		{"messages bad filter", "GET", room + "/messages?filter=%7Bx", tok, ``, 400, "M_INVALID_PARAM"},
		{"event bad id", "GET", room + "/event/abc", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync bad since", "GET", v3 + "/sync?since=abc", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync negative since", "GET", v3 + "/sync?since=s-1", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync bad timeout", "GET", v3 + "/sync?timeout=soon", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync negative timeout", "GET", v3 + "/sync?timeout=-5", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync bad full_state", "GET", v3 + "/sync?full_state=maybe", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync bad filter", "GET", v3 + "/sync?filter=%7Bx", tok, ``, 400, "M_INVALID_PARAM"},
		{"sync bad limit", "GET", v3 + "/sync?filter=" + url.QueryEscape(`{"room":{"timeline":{"limit":"x"}}}`), tok, ``, 400, "M_INVALID_PARAM"},
		{"presence of another", "PUT", v3 + "/presence/" + url.PathEscape("@bob:"+testnode.ServerName) + "/status", tok, `{"presence":"online"}`, 403, "M_FORBIDDEN"},
		{"presence bad state", "PUT", v3 + "/presence/" + me + "/status", tok, `{"presence":"busy"}`, 400, "M_INVALID_PARAM"},
		{"presence missing", "PUT", v3 + "/presence/" + me + "/status", tok, `{}`, 400, "M_MISSING_PARAM"},
		{"presence bad user", "GET", v3 + "/presence/alice/status", tok, ``, 400, "M_INVALID_PARAM"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body, _ := do(t, tc.method, tc.url, tc.token, "application/json", tc.body)
			if status != tc.wantStatus || body["errcode"] != tc.wantCode {
				t.Fatalf("got %d %v, want %d %s", status, body, tc.wantStatus, tc.wantCode)
			}
		})
	}
}

func TestPresence(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice := n.Register("alice")
	ctx := context.Background()
	if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "coding"}); err != nil {
		t.Fatal(err)
	}
	p, err := alice.GetPresence(ctx, alice.UserID)
	if err != nil {
		t.Fatal(err)
	}
	if p.Presence != event.PresenceOnline || p.StatusMsg != "coding" || !p.CurrentlyActive || p.LastActiveAgo < 0 {
		t.Fatalf("presence = %+v", p)
	}

	t.Run("sync filter", func(t *testing.T) {
		bob, carol := n.Register("bob"), n.Register("carol")
		room := createRoom(t, alice, bob)
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			if err := c.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline}); err != nil {
				t.Fatal(err)
			}
		}
		senders := func(filter string) []string {
			t.Helper()
			status, body, _ := do(t, "GET", n.URL+"/_matrix/client/v3/sync?filter="+url.QueryEscape(filter), alice.AccessToken, "", "")
			if status != 200 {
				t.Fatalf("sync with %s: %d %v", filter, status, body)
			}
			var out []string
			for _, e := range body["presence"].(map[string]any)["events"].([]any) {
				out = append(out, e.(map[string]any)["sender"].(string))
			}
			slices.Sort(out)
			return out
		}
		all := senders(`{}`)
		if !slices.Contains(all, bob.UserID.String()) || !slices.Contains(all, carol.UserID.String()) {
			t.Fatalf("presence without a filter from %v", all)
		}
		if got := senders(`{"presence":{"not_senders":["` + bob.UserID.String() + `"]}}`); slices.Contains(got, bob.UserID.String()) || !slices.Contains(got, carol.UserID.String()) {
			t.Fatalf("not_senders bob: presence from %v", got)
		}
		if got := senders(`{"presence":{"types":[]}}`); len(got) != 0 {
			t.Fatalf("types []: presence from %v", got)
		}
		if got := senders(`{"presence":{"not_types":["m.*"]}}`); len(got) != 0 {
			t.Fatalf("not_types m.*: presence from %v", got)
		}
		if got := senders(`{"presence":{"limit":1}}`); len(got) != 1 {
			t.Fatalf("limit 1: presence from %v", got)
		}
		status, body, _ := do(t, "GET", n.URL+"/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"presence":[]}`), alice.AccessToken, "", "")
		if status != 400 || body["errcode"] != "M_INVALID_PARAM" {
			t.Fatalf("presence filter not an object: %d %v", status, body)
		}
	})
}

// createRoom makes a room with alice and has bob join it.
func createRoom(t *testing.T, alice, bob *mautrix.Client) id.RoomID {
	t.Helper()
	ctx := context.Background()
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Test", Preset: "public_chat"})
	if err != nil {
		t.Fatal(err)
	}
	if bob != nil {
		if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatal(err)
		}
	}
	return created.RoomID
}

func TestRoomMessagesAndState(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob, carol := n.Register("alice"), n.Register("bob"), n.Register("carol")
	ctx := context.Background()
	room := createRoom(t, alice, bob)

	var sent []id.EventID
	for _, text := range []string{"one", "two", "three"} {
		resp, err := bob.SendText(ctx, room, text)
		if err != nil {
			t.Fatal(err)
		}
		sent = append(sent, resp.EventID)
	}
	back, err := alice.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 2)
	if err != nil {
		t.Fatal(err)
	}
	if len(back.Chunk) != 2 || back.Chunk[0].ID != sent[2] || back.Chunk[1].ID != sent[1] || back.End == "" {
		t.Fatalf("backward page = %+v", back)
	}
	more, err := alice.Messages(ctx, room, back.End, "", mautrix.DirectionBackward, nil, 1)
	if err != nil || len(more.Chunk) != 1 || more.Chunk[0].ID != sent[0] {
		t.Fatalf("next page = %+v, %v", more, err)
	}
	fwd, err := alice.Messages(ctx, room, "", "", mautrix.DirectionForward, nil, 100)
	if err != nil || len(fwd.Chunk) < 4 || fwd.Chunk[0].Type != event.StateCreate || fwd.Chunk[len(fwd.Chunk)-1].ID != sent[2] {
		t.Fatalf("forward = %+v, %v", fwd, err)
	}
	ev, err := alice.GetEvent(ctx, room, sent[1])
	if err != nil || fmt.Sprint(bodies([]*event.Event{ev})) != "[two]" {
		t.Fatalf("event = %+v, %v", ev, err)
	}
	_, err = alice.GetEvent(ctx, room, "$nope")
	wantErr(t, err, 404, "M_NOT_FOUND")

	t.Run("txn idempotent", func(t *testing.T) {
		first, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]string{"msgtype": "m.text", "body": "x"}, mautrix.ReqSendEvent{TransactionID: "txn1"})
		if err != nil {
			t.Fatal(err)
		}
		again, err := bob.SendMessageEvent(ctx, room, event.EventMessage, map[string]string{"msgtype": "m.text", "body": "x"}, mautrix.ReqSendEvent{TransactionID: "txn1"})
		if err != nil || again.EventID != first.EventID {
			t.Fatalf("repeat = %v, %v; want %s", again, err, first.EventID)
		}
	})

	t.Run("state", func(t *testing.T) {
		if _, err := alice.SendStateEvent(ctx, room, event.StateTopic, "", map[string]string{"topic": "hello"}); err != nil {
			t.Fatal(err)
		}
		var topic event.TopicEventContent
		if err := bob.StateEvent(ctx, room, event.StateTopic, "", &topic); err != nil || topic.Topic != "hello" {
			t.Fatalf("topic = %+v, %v", topic, err)
		}
		base := n.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(string(room)) + "/state/m.room.topic"
		status, raw := doRaw(t, "GET", base+"/?format=event", bob.AccessToken, "")
		var full map[string]any
		if status != 200 || json.Unmarshal(raw, &full) != nil || full["type"] != "m.room.topic" || full["event_id"] == nil {
			t.Fatalf("format=event: %d %s", status, raw)
		}
		var none map[string]any
		err := bob.StateEvent(ctx, room, event.NewEventType("com.example.none"), "", &none)
		wantErr(t, err, 404, "M_NOT_FOUND")
		state, err := bob.State(ctx, room)
		if err != nil || state[event.StateCreate] == nil || state[event.StateTopic] == nil {
			t.Fatalf("state = %v, %v", state, err)
		}
	})

	t.Run("members", func(t *testing.T) {
		me := bob.UserID.String()
		if _, err := bob.SendStateEvent(ctx, room, event.StateMember, me, map[string]string{"membership": "join", "displayname": "Bobby"}); err != nil {
			t.Fatal(err)
		}
		joined, err := alice.JoinedMembers(ctx, room)
		if err != nil || len(joined.Joined) != 2 || joined.Joined[alice.UserID].DisplayName != "alice" || joined.Joined[bob.UserID].DisplayName != "Bobby" {
			t.Fatalf("joined = %+v, %v", joined, err)
		}
		members, err := alice.Members(ctx, room, mautrix.ReqMembers{Membership: event.MembershipJoin})
		if err != nil || len(members.Chunk) != 2 {
			t.Fatalf("members = %+v, %v", members, err)
		}
		rooms, err := bob.JoinedRooms(ctx)
		if err != nil || len(rooms.JoinedRooms) != 1 || rooms.JoinedRooms[0] != room {
			t.Fatalf("joined rooms = %+v, %v", rooms, err)
		}
	})

	t.Run("kick and ban by a non-member", func(t *testing.T) {
		_, err := carol.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: bob.UserID})
		wantErr(t, err, 403, "M_FORBIDDEN")
		_, err = carol.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: bob.UserID})
		wantErr(t, err, 403, "M_FORBIDDEN")
		_, err = carol.SendText(ctx, room, "hi")
		wantErr(t, err, 403, "M_FORBIDDEN")
	})

	t.Run("invite kick ban unban", func(t *testing.T) {
		if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.KickUser(ctx, room, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "no"}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.BanUser(ctx, room, &mautrix.ReqBanUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		_, err := carol.JoinRoomByID(ctx, room)
		wantErr(t, err, 403, "M_FORBIDDEN")
		if _, err := alice.UnbanUser(ctx, room, &mautrix.ReqUnbanUser{UserID: carol.UserID}); err != nil {
			t.Fatal(err)
		}
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
	})

	t.Run("unknown room", func(t *testing.T) {
		other := id.RoomID("!nosuchroom:" + testnode.ServerName)
		_, err := alice.SendText(ctx, other, "x")
		var he mautrix.HTTPError
		if !errors.As(err, &he) || (he.Response.StatusCode != 403 && he.Response.StatusCode != 404) {
			t.Fatalf("send to unknown room: %v", err)
		}
		_, err = alice.Messages(ctx, other, "", "", mautrix.DirectionBackward, nil, 5)
		if !errors.As(err, &he) || (he.Response.StatusCode != 403 && he.Response.StatusCode != 404) {
			t.Fatalf("messages of unknown room: %v", err)
		}
	})
}

// TestCreateRoomInvitesCarryProfiles: the invite events of /createRoom's
// invite list carry each invitee's global displayname and avatar, as those
// of /invite do.
func TestCreateRoomInvitesCarryProfiles(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	ctx := context.Background()
	if err := bob.SetDisplayName(ctx, "Bob Invited"); err != nil {
		t.Fatal(err)
	}
	created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Invite: []id.UserID{bob.UserID}, IsDirect: true})
	if err != nil {
		t.Fatal(err)
	}
	var content map[string]any
	if err := alice.StateEvent(ctx, created.RoomID, event.StateMember, bob.UserID.String(), &content); err != nil {
		t.Fatal(err)
	}
	if content["membership"] != "invite" || content["displayname"] != "Bob Invited" || content["is_direct"] != true {
		t.Fatalf("invite content = %v", content)
	}
}

// TestCreateEventCannotBeSentAgain: a room has one create event; sending
// another is a bad request (400), as Complement expects.
func TestCreateEventCannotBeSentAgain(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob := n.Register("alice"), n.Register("bob")
	room := createRoom(t, alice, bob)
	u := n.URL + "/_matrix/client/v3/rooms/" + url.PathEscape(room.String()) + "/state/m.room.create/"
	if status, body := dirDo(t, "PUT", u, alice.AccessToken, `{"room_version":"11"}`); status != 400 || body["errcode"] != "M_BAD_JSON" {
		t.Fatalf("PUT m.room.create: %d %v, want 400 M_BAD_JSON", status, body)
	}
}
