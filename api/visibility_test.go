package api_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// TestHistoryVisibility: a member who joins later sees the messages sent
// before by the room's history visibility at the time: all of them under
// "shared", those from their invite on under "invited", those from their
// join on under "joined"; through /messages, /event, /context and /sync.
func TestHistoryVisibility(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	ctx := context.Background()
	for setting, visible := range map[string][]string{
		"shared":  {"before", "invited", "after"},
		"invited": {"invited", "after"},
		"joined":  {"after"},
	} {
		want := fmt.Sprint(visible)
		t.Run(setting, func(t *testing.T) {
			alice, bob := n.Register("alice-"+setting), n.Register("bob-"+setting)
			created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", InitialState: []*event.Event{{
				Type: event.StateHistoryVisibility, StateKey: new(string),
				Content: event.Content{Raw: map[string]any{"history_visibility": setting}},
			}}})
			if err != nil {
				t.Fatal(err)
			}
			room := created.RoomID
			ids := map[string]id.EventID{}
			send := func(body string) {
				resp, err := alice.SendText(ctx, room, body)
				if err != nil {
					t.Fatal(err)
				}
				ids[body] = resp.EventID
			}
			send("before")
			if _, err := alice.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
				t.Fatal(err)
			}
			send("invited")
			if _, err := bob.JoinRoomByID(ctx, room); err != nil {
				t.Fatal(err)
			}
			send("after")

			msgs, err := bob.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			got := bodies(msgs.Chunk)
			for i, j := 0, len(got)-1; i < j; i, j = i+1, j-1 {
				got[i], got[j] = got[j], got[i]
			}
			if fmt.Sprint(got) != want {
				t.Errorf("/messages: %v, want %s", got, want)
			}
			sync := syncOnce(t, bob, "", 0)
			if j := sync.Rooms.Join[room]; j == nil || fmt.Sprint(bodies(j.Timeline.Events)) != want {
				t.Errorf("/sync timeline: %+v, want %s", j, want)
			}
			for body, eid := range ids {
				sees := slices.Contains(visible, body)
				_, err := bob.GetEvent(ctx, room, eid)
				if sees != (err == nil) {
					t.Errorf("/event %s: %v; want it visible: %v", body, err, sees)
				}
				_, err = bob.Context(ctx, room, eid, nil, 2)
				if sees != (err == nil) {
					t.Errorf("/context %s: %v; want it visible: %v", body, err, sees)
				}
			}
			c, err := bob.Context(ctx, room, ids["after"], nil, 10)
			if err != nil {
				t.Fatal(err)
			}
			before := bodies(c.EventsBefore)
			for i, j := 0, len(before)-1; i < j; i, j = i+1, j-1 {
				before[i], before[j] = before[j], before[i]
			}
			if fmt.Sprint(append(before, "after")) != want {
				t.Errorf("/context around the last: %v before it, want %s", before, want)
			}
		})
	}
}
