package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"persona/internal/cputime"
	"persona/wire"
)

// BenchmarkWarmRename: a user in 3,000 rooms, every room active, renames.
// An op is the time until every room has applied the rename; cpu-ms/op is
// the process's CPU time for it, which a busy machine disturbs less than
// the time; keys/room counts the keys written per room and rename.
// Run: go test -run '^$' -bench WarmRename -benchtime 20x ./actors
func BenchmarkWarmRename(b *testing.B) {
	const rooms = 3000
	h, st := newTestHost(b, b.TempDir(), 0)
	defer st.Close()
	defer h.Stop()
	user := "@renamer:" + server
	joinRooms(b, h, user, rooms)
	renameAndWait(b, h, user, "warm") // every room active
	cpu0, ops0 := cputime.Process(), st.Stats().Ops
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		renameAndWait(b, h, user, fmt.Sprint("renamed ", i))
	}
	b.StopTimer()
	b.ReportMetric(float64(cputime.Process()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
	b.ReportMetric(float64(st.Stats().Ops-ops0)/float64(b.N*rooms), "keys/room")
}

// BenchmarkColdRename: a user in 3,000 rooms renames right after a
// restart, so the user's actor and every room wake from storage. An op is
// the time from the rename until every room has applied it.
// Run: go test -run '^$' -bench ColdRename -benchtime 10x ./actors
func BenchmarkColdRename(b *testing.B) {
	const rooms = 3000
	dir := b.TempDir()
	h, st := newTestHost(b, dir, 0)
	user := "@renamer:" + server
	joinRooms(b, h, user, rooms)
	var cpu time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		h.Stop()
		st.Close()
		h, st = newTestHost(b, dir, 0)
		cpu0 := cputime.Process()
		b.StartTimer()
		renameAndWait(b, h, user, fmt.Sprint("renamed ", i))
		b.StopTimer()
		cpu += cputime.Process() - cpu0
	}
	h.Stop()
	st.Close()
	b.ReportMetric(float64(cpu)/1e6/float64(b.N), "cpu-ms/op")
}

// joinRooms registers user and creates rooms rooms with user in each.
func joinRooms(b *testing.B, h *Service, user string, rooms int) {
	ctx := context.Background()
	if _, err := h.Request(ctx, KindUser, user, &wire.Register{UserId: user, Displayname: "renamer"}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := w; r < rooms; r += 8 {
				id := fmt.Sprintf("!room%d:%s", r, server)
				if _, err := h.Request(ctx, KindRoom, id, &wire.CreateRoom{RoomId: id, Creator: user, RequestJson: []byte(`{}`),
					CreatorProfileJson: []byte(`{"displayname":"renamer"}`), CreatorProfileVersion: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
}

// renameAndWait sets user's display name and waits until no room is
// behind (a minute at most).
func renameAndWait(tb testing.TB, h *Service, user, name string) {
	ctx := context.Background()
	v, _ := json.Marshal(name)
	start := time.Now()
	if _, err := h.Request(ctx, KindUser, user, &wire.SetProfileField{UserId: user, Key: "displayname", ValueJson: v}); err != nil {
		tb.Fatal(err)
	}
	for {
		r, err := h.Request(ctx, KindUser, user, &wire.GetPending{UserId: user})
		if err != nil {
			tb.Fatal(err)
		}
		if r.(*wire.PendingReply).Behind == 0 {
			return
		}
		if time.Since(start) > time.Minute {
			tb.Fatal("rooms still behind after a minute")
		}
		time.Sleep(max(time.Millisecond, time.Since(start)/100))
	}
}
