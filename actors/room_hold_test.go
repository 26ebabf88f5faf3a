package actors

import (
	"bytes"
	"context"
	"testing"
	"time"

	"persona/wire"
)

// TestRoomHoldsWritesWithoutPositions: while its partition's stream has
// no positions reserved (a reservation failed and waits to be written
// again), a room holds a write and answers reads; the write is answered,
// in order, once the reservation lands.
func TestRoomHoldsWritesWithoutPositions(t *testing.T) {
	t.Parallel()
	h := hostFor(t, t.TempDir())
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	ps := h.stream.parts[h.Partition(room)]
	lockLanded(t, ps)
	const wait = 300 * time.Millisecond
	ps.next = ps.reserved // every position used, and the next block's write failed
	ps.retry, ps.retryAt = wait, time.Now().Add(wait)
	ps.mu.Unlock()

	began := time.Now()
	sent := make(chan *wire.SendReply, 2)
	for i, body := range []string{`{"body":"one"}`, `{"body":"two"}`} {
		m := &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.message", ContentJson: []byte(body), TxnId: string(rune('a' + i))}
		go func() {
			r, err := h.Request(context.Background(), KindRoom, room, m)
			if err != nil {
				t.Error(err)
			}
			reply, _ := r.(*wire.SendReply)
			sent <- reply
		}()
		time.Sleep(20 * time.Millisecond) // in order
	}
	if name := memberName(t, h, room, alice); name != "alice" || time.Since(began) >= wait {
		t.Fatalf("a read waited %s for the held writes (name %q)", time.Since(began), name)
	}
	for range 2 {
		select {
		case r := <-sent:
			if r == nil || r.Error != nil {
				t.Fatalf("held write answered %v", r)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a held write was not answered once positions were reserved")
		}
	}
	if took := time.Since(began); took < wait-50*time.Millisecond {
		t.Fatalf("the writes were answered after %s, before the reservation was written again", took)
	}
	msgs := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: alice, Dir: "b", Limit: 2})
	if len(msgs.Chunk) != 2 || !bytes.Contains(msgs.Chunk[0], []byte("two")) || !bytes.Contains(msgs.Chunk[1], []byte("one")) {
		t.Fatalf("the held writes are not in order: %s", msgs.Chunk)
	}
}

// lockLanded waits until ps has no reservation under way (the block
// reserved ahead has landed) and returns with ps.mu held.
func lockLanded(t *testing.T, ps *partStream) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		ps.mu.Lock()
		if !ps.reserving {
			return
		}
		ps.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatal("the reservation ahead did not land")
		}
	}
}
