package api_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

func TestEventContext(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	n := testnode.Start(t, "", nil)
	alice, eve := n.Register("ctxAlice"), n.Register("ctxEve")
	room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []id.EventID
	for i := 0; i < 9; i++ {
		resp, err := alice.SendText(ctx, room.RoomID, fmt.Sprint("m", i))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, resp.EventID)
	}
	c, err := alice.Context(ctx, room.RoomID, ids[4], nil, 4)
	if err != nil {
		t.Fatal(err)
	}
	body := func(e *event.Event) string { return e.Content.Raw["body"].(string) }
	if c.Event.ID != ids[4] || len(c.EventsBefore) != 2 || len(c.EventsAfter) != 2 ||
		body(c.EventsBefore[0]) != "m3" || body(c.EventsBefore[1]) != "m2" ||
		body(c.EventsAfter[0]) != "m5" || body(c.EventsAfter[1]) != "m6" {
		t.Fatalf("context = %v, before %d, after %d", c.Event.ID, len(c.EventsBefore), len(c.EventsAfter))
	}
	if len(c.State) == 0 || c.Start == "" || c.End == "" {
		t.Fatalf("context without state or tokens: %+v", c)
	}
	// Paging on from the end token continues after m6.
	msgs, err := alice.Messages(ctx, room.RoomID, c.End, "", mautrix.DirectionForward, nil, 1)
	if err != nil || len(msgs.Chunk) != 1 || body(msgs.Chunk[0]) != "m7" {
		t.Fatalf("messages from context end: %v %v", msgs, err)
	}
	if _, err := eve.Context(ctx, room.RoomID, ids[4], nil, 4); err == nil {
		t.Fatal("a non-member read the context")
	}
	if _, err := alice.Context(ctx, room.RoomID, "$nope", nil, 4); !errors.Is(err, mautrix.MNotFound) {
		t.Fatalf("unknown event: %v", err)
	}
}
