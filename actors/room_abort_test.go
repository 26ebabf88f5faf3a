package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"persona/config"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// stalledHost is a host on a store whose committer, once stall returns,
// stands after a round until release is called: the batches queued
// meanwhile are not written.
func stalledHost(t *testing.T) (h *Service, stall func() (release func())) {
	t.Helper()
	var gate atomic.Pointer[chan struct{}]
	entered := make(chan struct{}, 1)
	st, err := storage.Open(t.TempDir(), storage.Options{OnRound: func(int, int, time.Duration, time.Duration) {
		if g := gate.Load(); g != nil {
			select {
			case entered <- struct{}{}:
			default:
			}
			<-*g
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.ServerName = server
	h, err = NewWith(st, cfg, metrics.New(st), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	open := func() {
		if g := gate.Swap(nil); g != nil {
			close(*g)
		}
	}
	t.Cleanup(func() { open(); h.Stop(); st.Close() })
	return h, func() func() {
		g := make(chan struct{})
		gate.Store(&g)
		var b storage.Batch
		b.Set(storage.Key("stall"), []byte("1"))
		st.CommitUrgent(&b, func(error) {})
		select {
		case <-entered:
		case <-time.After(10 * time.Second):
			t.Fatal("the committer did not stall")
		}
		return open
	}
}

// TestAbortWaitsForTheWritesInFlight: a batch that runs out of stream
// positions halfway aborts while an earlier write of the room is not yet
// written. The room reads itself again only once that write lands, so
// the next write takes a position of its own and the aborted batch leaves
// nothing behind.
func TestAbortWaitsForTheWritesInFlight(t *testing.T) {
	t.Parallel()
	h, stall := stalledHost(t)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 1)
	_, version := profileOf(t, h, alice)
	ps := h.stream.parts[h.Partition(room)]
	lockLanded(t, ps)
	// Enough positions for a room to take a write (streamReadyMargin),
	// too few for both writes, and no reservation to come.
	const left = streamReadyMargin + 6
	ps.next, ps.reserving = ps.reserved-left, true
	ps.mu.Unlock()

	release := stall()
	defer release()
	// A: one event, handed to the stalled store. B: a member event per
	// version, more than the positions left.
	sent := make(chan *wire.SendReply, 1)
	go func() {
		r, _ := h.Request(context.Background(), KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.message", ContentJson: []byte(`{"body":"A"}`), TxnId: "a"})
		reply, _ := r.(*wire.SendReply)
		sent <- reply
	}()
	eventually(t, "A to take its position", func() bool {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return len(ps.inFlight) == 1
	})
	updates := &wire.ProfileUpdates{RoomId: room, UserId: alice}
	for i := range left + 100 {
		updates.Updates = append(updates.Updates, &wire.MemberUpdate{Version: version + 1 + uint64(i), Mode: wire.Propagate_PROPAGATE_DEFAULT,
			SetsDisplayname: true, Displayname: fmt.Sprintf("B%d", i)})
	}
	h.Send(KindRoom, room, updates)
	eventually(t, "the batch to run out of positions", func() bool {
		ps.mu.Lock()
		defer ps.mu.Unlock()
		return ps.next >= ps.reserved && len(ps.inFlight) == 1 // B's positions taken and released, A's still in flight
	})
	read := make(chan *wire.StateReply, 1)
	go func() {
		r, _ := h.Request(context.Background(), KindRoom, room, &wire.GetState{RoomId: room, UserId: alice, Type: "m.room.member", StateKey: alice})
		reply, _ := r.(*wire.StateReply)
		read <- reply
	}()
	select {
	case r := <-read:
		t.Error("a read was answered from a memory that holds an aborted batch, before A landed")
		read <- r
	case <-time.After(100 * time.Millisecond):
	}
	ps.mu.Lock()
	ps.reserving = false // the next write reserves a block
	ps.mu.Unlock()
	release()
	for _, got := range []any{<-sent, <-read} {
		switch r := got.(type) {
		case *wire.SendReply:
			if r == nil || r.Error != nil || r.EventId == "" {
				t.Fatalf("A answered %v", r)
			}
		case *wire.StateReply:
			if r == nil || r.Error != nil || len(r.EventsJson) != 1 || strings.Contains(string(r.EventsJson[0]), `"displayname":"B`) {
				t.Fatalf("the held read answered %v", r)
			}
		}
	}

	c := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.message", ContentJson: []byte(`{"body":"C"}`), TxnId: "c"})
	if c.Error != nil {
		t.Fatalf("C: %v", c.Error)
	}
	a := askKind[*wire.SendReply](t, h, KindRoom, room, &wire.SendEvent{RoomId: room, Sender: alice, Type: "m.room.message", ContentJson: []byte(`{"body":"A"}`), TxnId: "a"})
	if a.Error != nil || a.EventId == "" {
		t.Fatalf("A was not written: %v", a)
	}
	if pa, pc := eventPos(t, h, room, a.EventId), eventPos(t, h, room, c.EventId); pa == pc {
		t.Fatalf("A and C share position %d", pa)
	}
	for id, body := range map[string]string{a.EventId: "A", c.EventId: "C"} {
		ev := askKind[*wire.EventReply](t, h, KindRoom, room, &wire.GetEvent{RoomId: room, UserId: alice, EventId: id})
		if ev.Error != nil || !strings.Contains(string(ev.EventJson), `"body":"`+body+`"`) {
			t.Fatalf("event %s (%s): %v %s", id, body, ev.Error, ev.EventJson)
		}
	}
	if name := memberName(t, h, room, alice); name != "alice" {
		t.Fatalf("the aborted batch left the name %q", name)
	}
	msgs := askKind[*wire.MessagesReply](t, h, KindRoom, room, &wire.GetMessages{RoomId: room, UserId: alice, Dir: "b", Limit: 20})
	var bodies []string
	for _, raw := range msgs.Chunk {
		var ev struct {
			Type    string `json:"type"`
			Content struct {
				Body        string `json:"body"`
				Displayname string `json:"displayname"`
			} `json:"content"`
		}
		_ = json.Unmarshal(raw, &ev)
		if strings.HasPrefix(ev.Content.Displayname, "B") {
			t.Fatalf("an event of the aborted batch was written: %s", raw)
		}
		if ev.Content.Body != "" {
			bodies = append(bodies, ev.Content.Body)
		}
	}
	if strings.Join(bodies, ",") != "C,A" {
		t.Fatalf("timeline %v, want C,A", bodies)
	}
}
