package actors

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"persona/storage"
	"persona/wire"
)

// BenchmarkColdRenameInBigRooms: a member of 10 rooms of 1,000 members each
// renames right after a restart, so every room wakes from storage for the
// rename. An op is the time until all 10 rooms have applied it.
// Run: go test -run '^$' -bench ColdRenameInBigRooms -benchtime 3x ./actors
func BenchmarkColdRenameInBigRooms(b *testing.B) {
	const rooms, members = 10, 1000
	dir := b.TempDir()
	open := func() (*Service, *storage.Store) { return newTestHost(b, dir, 0) }
	ctx := context.Background()
	h, st := open()
	users := make([]string, members)
	for i := range users {
		users[i] = fmt.Sprintf("@m%d:%s", i, server)
		if _, err := h.Request(ctx, KindUser, users[i], &wire.Register{UserId: users[i], Displayname: fmt.Sprint("m", i)}); err != nil {
			b.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	for r := 0; r < rooms; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id := fmt.Sprintf("!big%d:%s", r, server)
			if _, err := h.Request(ctx, KindRoom, id, &wire.CreateRoom{RoomId: id, Creator: users[0], RequestJson: []byte(`{"preset":"public_chat"}`),
				CreatorProfileJson: []byte(`{"displayname":"m0"}`), CreatorProfileVersion: 1}); err != nil {
				b.Error(err)
				return
			}
			for _, u := range users[1:] {
				if _, err := h.Request(ctx, KindRoom, id, &wire.ChangeMembership{RoomId: id, Sender: u, Target: u, Action: "join"}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	h.Stop()
	st.Close()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h, st := open()
		b.StartTimer()
		renameAndWait(b, h, users[0], fmt.Sprint("renamed ", i))
		b.StopTimer()
		h.Stop()
		st.Close()
	}
}
