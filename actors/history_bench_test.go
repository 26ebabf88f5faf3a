package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"

	"persona/wire"
)

// BenchmarkHistoryPage: a room whose first 100 messages are followed by
// the reader's renames (100, or 10,000); an op is the reader's page of
// the 100 messages, read backwards from just after them, near the room's
// start. Each event of the page carries the reader's membership at its
// position, so the page asks the room's state at 100 positions far behind
// its current state.
// Run: go test -run '^$' -bench HistoryPage -benchtime 2000x ./actors
func BenchmarkHistoryPage(b *testing.B) {
	for _, renames := range []int{100, 10000} {
		b.Run(fmt.Sprintf("renames=%d", renames), func(b *testing.B) {
			h, st := newTestHost(b, b.TempDir(), 0)
			defer st.Close()
			defer h.Stop()
			room, reader, from := historyRoom(b, h, 100, renames)
			page := &wire.GetMessages{RoomId: room, UserId: reader, From: from, Dir: "b", Limit: 100}
			checkHistoryPage(b, h, page) // also reads the room's state in, as any first request does
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if _, err := h.Request(context.Background(), KindRoom, room, page); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// historyRoom creates a public room, joins reader to it, sends messages
// messages and then renames the reader renames times (its own member
// event in the room, several in flight at once). It returns the room, the
// reader and the token just after the messages.
func historyRoom(b *testing.B, h *Service, messages, renames int) (room, reader, after string) {
	ctx := context.Background()
	creator, reader := "@creator:"+server, "@reader:"+server
	room = "!history:" + server
	send := func(msg *wire.SendEvent) {
		r, err := h.Request(ctx, KindRoom, room, msg)
		if err != nil {
			b.Fatal(err)
		}
		if e := r.(*wire.SendReply).Error; e != nil {
			b.Fatal(e)
		}
	}
	r, err := h.Request(ctx, KindRoom, room, &wire.CreateRoom{RoomId: room, Creator: creator, RequestJson: []byte(`{"preset":"public_chat"}`),
		CreatorProfileJson: []byte(`{"displayname":"creator"}`), CreatorProfileVersion: 1})
	if err != nil || r.(*wire.SendReply).Error != nil {
		b.Fatalf("create: %v %v", err, r)
	}
	if r, err := h.Request(ctx, KindRoom, room, &wire.ChangeMembership{RoomId: room, Sender: reader, Target: reader, Action: "join",
		ProfileJson: []byte(`{"displayname":"reader"}`), ProfileVersion: 1}); err != nil || r.(*wire.SendReply).Error != nil {
		b.Fatalf("join: %v %v", err, r)
	}
	for i := range messages {
		send(&wire.SendEvent{RoomId: room, Sender: creator, Type: "m.room.message", TxnId: fmt.Sprint("m", i),
			ContentJson: []byte(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))})
	}
	after = posToken(uint64(messages + 6)) // 5 events create the room, 1 joins the reader
	var wg sync.WaitGroup
	const inFlight = 32
	for w := range inFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < renames; i += inFlight {
				content, _ := json.Marshal(map[string]any{"membership": "join", "displayname": fmt.Sprint("reader ", i)})
				send(&wire.SendEvent{RoomId: room, Sender: reader, Type: "m.room.member", IsState: true, StateKey: reader, ContentJson: content,
					GlobalProfileJson: []byte(`{"displayname":"reader"}`)})
			}
		}()
	}
	wg.Wait()
	return room, reader, after
}

// checkHistoryPage asks for page and fails unless it holds 100 messages,
// each with the reader joined.
func checkHistoryPage(b *testing.B, h *Service, page *wire.GetMessages) {
	r, err := h.Request(context.Background(), KindRoom, page.RoomId, page)
	if err != nil {
		b.Fatal(err)
	}
	reply := r.(*wire.MessagesReply)
	if reply.Error != nil || len(reply.Chunk) != int(page.Limit) {
		b.Fatalf("page: %v, %d events, want %d", reply.Error, len(reply.Chunk), page.Limit)
	}
	for _, raw := range reply.Chunk {
		var ev struct {
			Type     string `json:"type"`
			Unsigned struct {
				Membership string `json:"membership"`
			} `json:"unsigned"`
		}
		if err := json.Unmarshal(raw, &ev); err != nil || ev.Type != "m.room.message" || ev.Unsigned.Membership != "join" {
			b.Fatalf("page event %s: the reader's membership is not join", raw)
		}
	}
}
