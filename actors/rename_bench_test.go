package actors

import (
	"context"
	"encoding/json"
	"fmt"
	"sync"
	"testing"
	"time"

	"persona/internal/cputime"
)

// BenchmarkWarmRename: a user in 3,000 rooms, every room active, renames.
// An op is the time until every room has applied the rename; cpu-ms/op is
// the process's CPU time for it, which a busy machine disturbs less than
// the time.
// Run: go test -run '^$' -bench WarmRename -benchtime 20x ./actors
func BenchmarkWarmRename(b *testing.B) {
	const rooms = 3000
	h, st := newTestHost(b, b.TempDir(), 0)
	defer st.Close()
	defer h.Stop()
	ctx := context.Background()
	user := "@renamer:" + server
	if _, err := h.Request(ctx, KindUser, user, &Register{UserId: user, Displayname: "renamer"}); err != nil {
		b.Fatal(err)
	}
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := w; r < rooms; r += 8 {
				id := fmt.Sprintf("!warm%d:%s", r, server)
				if _, err := h.Request(ctx, KindRoom, id, &CreateRoom{RoomId: id, Creator: user, RequestJson: []byte(`{}`),
					CreatorProfileJson: []byte(`{"displayname":"renamer"}`), CreatorProfileVersion: 1}); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	renameAndWait(b, h, user, "warm") // every room active
	cpu0 := cputime.Process()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		renameAndWait(b, h, user, fmt.Sprint("renamed ", i))
	}
	b.StopTimer()
	b.ReportMetric(float64(cputime.Process()-cpu0)/1e6/float64(b.N), "cpu-ms/op")
}

// renameAndWait sets user's display name and waits until no room is
// behind (a minute at most).
func renameAndWait(tb testing.TB, h *Host, user, name string) {
	ctx := context.Background()
	v, _ := json.Marshal(name)
	start := time.Now()
	if _, err := h.Request(ctx, KindUser, user, &SetProfileField{UserId: user, Key: "displayname", ValueJson: v}); err != nil {
		tb.Fatal(err)
	}
	for {
		r, err := h.Request(ctx, KindUser, user, &GetPending{UserId: user})
		if err != nil {
			tb.Fatal(err)
		}
		if r.(*PendingReply).Behind == 0 {
			return
		}
		if time.Since(start) > time.Minute {
			tb.Fatal("rooms still behind after a minute")
		}
		time.Sleep(max(time.Millisecond, time.Since(start)/100))
	}
}
