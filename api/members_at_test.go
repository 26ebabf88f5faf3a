package api_test

import (
	"context"
	"slices"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"persona/internal/testnode"
)

// membersAt lists the state keys of the room's member events at token at
// ("" for the current state), sorted.
func membersAt(t *testing.T, cli *mautrix.Client, room id.RoomID, at string) []string {
	t.Helper()
	resp, err := cli.Members(context.Background(), room, mautrix.ReqMembers{At: at})
	if err != nil {
		t.Fatalf("members at %q: %v", at, err)
	}
	var out []string
	for _, ev := range resp.Chunk {
		if ev.StateKey != nil {
			out = append(out, *ev.StateKey)
		}
	}
	slices.Sort(out)
	return out
}

// TestMembersAtPrevBatch covers /members?at= with a sync's prev_batch. A
// timeline cut by the limit starts after its prev_batch, so the members at it
// are those before the timeline's first event. A timeline holding the whole
// room (nothing earlier to fetch) has the sync's own position as prev_batch,
// as Synapse answers, so the members at it are those the sync saw, not the
// nobody of before m.room.create.
func TestMembersAtPrevBatch(t *testing.T) {
	t.Parallel()
	n := testnode.Start(t, "", nil)
	alice, bob, carol := n.Register("alice"), n.Register("bob"), n.Register("carol")
	ctx := context.Background()
	a, b, c := alice.UserID.String(), bob.UserID.String(), carol.UserID.String()

	t.Run("whole room timeline", func(t *testing.T) {
		room := createRoom(t, alice, nil)
		if _, err := alice.SendText(ctx, room, "Hello world!"); err != nil {
			t.Fatal(err)
		}
		tl := syncOnce(t, alice, "", 0).Rooms.Join[room].Timeline
		if tl.Limited || len(tl.Events) == 0 || tl.Events[0].Type.Type != "m.room.create" {
			t.Fatalf("initial timeline should hold the whole room: %+v", tl)
		}
		if _, err := bob.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		if _, err := bob.SendText(ctx, room, "Hello back"); err != nil {
			t.Fatal(err)
		}
		if got := membersAt(t, alice, room, tl.PrevBatch); !slices.Equal(got, []string{a}) {
			t.Fatalf("members at prev_batch %s = %v, want only alice", tl.PrevBatch, got)
		}
		if got := membersAt(t, alice, room, ""); len(got) != 2 {
			t.Fatalf("members now = %v, want alice and bob", got)
		}
	})

	t.Run("limited timeline", func(t *testing.T) {
		room := createRoom(t, alice, bob)
		resp, err := alice.SyncRequest(ctx, 0, "", `{"room":{"timeline":{"limit":1}}}`, false, "")
		if err != nil {
			t.Fatal(err)
		}
		tl := resp.Rooms.Join[room].Timeline
		if !tl.Limited || len(tl.Events) != 1 || tl.Events[0].Type.Type != "m.room.member" {
			t.Fatalf("limited timeline should hold bob's join only: %+v", tl)
		}
		if _, err := carol.JoinRoomByID(ctx, room); err != nil {
			t.Fatal(err)
		}
		// prev_batch is the gap before bob's join: only alice then.
		if got := membersAt(t, alice, room, tl.PrevBatch); !slices.Equal(got, []string{a}) {
			t.Fatalf("members at prev_batch %s = %v, want only alice", tl.PrevBatch, got)
		}
		// A sync's next_batch works too: carol joined after it.
		want := []string{a, b}
		slices.Sort(want)
		if got := membersAt(t, alice, room, resp.NextBatch); !slices.Equal(got, want) {
			t.Fatalf("members at next_batch %s = %v, want %v", resp.NextBatch, got, want)
		}
		if got := membersAt(t, alice, room, ""); !slices.Contains(got, c) || len(got) != 3 {
			t.Fatalf("members now = %v, want three with carol", got)
		}
	})
}
