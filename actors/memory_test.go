package actors

import (
	"context"
	"fmt"
	"math"
	"runtime"
	"testing"
	"time"

	"persona/config"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// BenchmarkIdleRoomMemory measures what an active, idle room actor costs:
// the heap growth from activating rooms that exist in storage with a
// client's request, and letting them idle until they release their state,
// divided by their number (the partition's entry, protoactor's process,
// the room's index and records). Storage is in memory, without block
// caches. Run: go test -run '^$' -bench IdleRoomMemory -benchtime 1x ./actors
func BenchmarkIdleRoomMemory(b *testing.B) {
	const rooms = 20000
	st, err := storage.Open("", storage.Options{InMemory: true})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := config.Default()
	cfg.ServerName = server
	cfg.Actors.PassivateAfter = time.Hour
	h, err := New(st, cfg, metrics.New(nil), nil)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	creator := "@creator:" + server
	if _, err := h.Request(ctx, KindUser, creator, &wire.Register{UserId: creator, Displayname: "creator"}); err != nil {
		b.Fatal(err)
	}
	ids := make([]string, rooms)
	for i := range ids {
		ids[i] = fmt.Sprintf("!mem%d:%s", i, server)
		r, err := h.Request(ctx, KindRoom, ids[i], &wire.CreateRoom{RoomId: ids[i], Creator: creator, RequestJson: []byte(`{}`),
			CreatorProfileJson: []byte(`{"displayname":"creator"}`), CreatorProfileVersion: 1})
		if err != nil || r.(*wire.SendReply).Error != nil {
			b.Fatalf("create: %v %v", err, r)
		}
	}
	h.Stop()
	for i := 0; i < b.N; i++ {
		h, err = New(st, cfg, metrics.New(nil), nil)
		if err != nil {
			b.Fatal(err)
		}
		time.Sleep(5 * time.Second)
		before, beforeObjects := heap()
		for _, id := range ids {
			if _, err := h.Request(ctx, KindRoom, id, &wire.GetState{RoomId: id, UserId: creator, Type: "m.room.create"}); err != nil {
				b.Fatal(err)
			}
		}
		time.Sleep(DefaultOptions().PropagationIdle + time.Second) // idle: the rooms release their state
		after, afterObjects := heap()
		b.ReportMetric(float64(after-before)/rooms, "bytes/room")
		// The GC marks every live object: at 100,000 rooms in memory its
		// mark phases run for seconds (docs/BENCHMARKS.md).
		b.ReportMetric(float64(int64(afterObjects)-int64(beforeObjects))/rooms, "objects/room")
		h.Stop()
	}
}

// heap is the live heap, in bytes and objects: the least of five readings
// 100 ms apart, each after two collections, so that the buffers of a
// compaction badger runs meanwhile (its table builders live on the Go
// heap) do not count.
func heap() (bytes, objects uint64) {
	bytes, objects = math.MaxUint64, math.MaxUint64
	for i := range 5 {
		if i > 0 {
			time.Sleep(100 * time.Millisecond)
		}
		var m runtime.MemStats
		runtime.GC()
		runtime.GC()
		runtime.ReadMemStats(&m)
		bytes, objects = min(bytes, m.HeapAlloc), min(objects, m.HeapObjects)
	}
	return bytes, objects
}
