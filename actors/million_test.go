package actors

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"persona/config"
	personametrics "persona/metrics"
	"persona/storage"
	"persona/wire"
)

// Sizes of BenchmarkRoomsInStorage.
const (
	roomsPerCreator = 1000             // a creator's actor keeps one cursor per room
	roomsInFlight   = 64               // creations and reads in flight at once
	roomsSample     = 10000            // existing rooms read back after passivation
	roomsPassivate  = 2 * time.Second  // actors.passivate_after
	roomsSettle     = 10 * time.Minute // longest wait for every actor to passivate
	roomsQuiet      = time.Minute      // then the node idles (badger compacts) before the last figures
)

// BenchmarkRoomsInStorage shows that memory follows the rooms in memory, not
// the rooms in storage. On a real on-disk store it creates
// PERSONA_BENCH_ROOMS rooms as /createRoom does (the creator's profile from
// the user actor, then CreateRoom to the new room's actor), 1,000 rooms per
// creator, printing progress to stderr; waits until every actor has
// passivated; reads the state of 10,000 random rooms (reactivated from
// storage); waits again, and a minute more; and reports the live heap, RSS
// and disk size. It is skipped unless PERSONA_BENCH_ROOMS is set, so that
// `make bench` stays short. PERSONA_BENCH_HEAPPROFILE=f writes heap
// profiles to f.created (all rooms just created) and f (at the end).
// Run (docs/BENCHMARKS.md):
//
//	PERSONA_BENCH_ROOMS=1000000 go test -run '^$' -bench RoomsInStorage -benchtime 1x -timeout 3h ./actors
func BenchmarkRoomsInStorage(b *testing.B) {
	n, err := strconv.Atoi(os.Getenv("PERSONA_BENCH_ROOMS"))
	if err != nil || n <= 0 {
		b.Skip("set PERSONA_BENCH_ROOMS (e.g. 1000000) to run")
	}
	dir := b.TempDir()
	st, err := storage.Open(dir, storage.Options{})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	cfg := config.Default()
	cfg.ServerName = server
	cfg.Actors.PassivateAfter = roomsPassivate
	h, err := New(st, cfg, personametrics.New(st), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer h.Stop()
	w := &roomsWatch{h: h, dir: dir, start: time.Now()}
	ctx := context.Background()

	creators := make([]string, (n+roomsPerCreator-1)/roomsPerCreator)
	for i := range creators {
		creators[i] = fmt.Sprintf("@creator%d:%s", i, server)
	}
	parallel(b, len(creators), func(i int) error {
		r, err := h.Request(ctx, KindUser, creators[i], &wire.Register{UserId: creators[i], Displayname: fmt.Sprintf("Creator %d", i)})
		if err == nil && r.(*wire.Done).Error != nil {
			err = fmt.Errorf("register %s: %s", creators[i], r.(*wire.Done).Error.Message)
		}
		return err
	})
	w.report(b, fmt.Sprintf("registered %d creators", len(creators)), false)

	const step = 50000
	var created atomic.Int64
	t0 := time.Now()
	parallel(b, n, func(i int) error {
		if err := createBenchRoom(ctx, h, creators[i/roomsPerCreator], i); err != nil {
			return err
		}
		if c := created.Add(1); c%step == 0 || int(c) == n {
			w.progress(b, int(c), time.Since(t0))
		}
		return nil
	})
	createTime := time.Since(t0)
	w.report(b, fmt.Sprintf("created %d rooms in %s (%.0f rooms/s)", n, createTime.Round(time.Second), float64(n)/createTime.Seconds()), true)
	if path := os.Getenv("PERSONA_BENCH_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path+".created")
	}
	w.settle(b)
	w.report(b, "every actor passivated", true)

	sample := min(roomsSample, n)
	picks := rand.Perm(n)[:sample]
	t1 := time.Now()
	parallel(b, sample, func(j int) error {
		i := picks[j]
		id := benchRoomID(i)
		r, err := h.Request(ctx, KindRoom, id, &wire.GetState{RoomId: id, UserId: creators[i/roomsPerCreator], All: true})
		if err != nil {
			return fmt.Errorf("read %s: %w", id, err)
		}
		if rep := r.(*wire.StateReply); rep.Error != nil || len(rep.EventsJson) < 6 {
			return fmt.Errorf("read %s: %d events, error %v", id, len(rep.EventsJson), rep.Error)
		}
		return nil
	})
	readTime := time.Since(t1)
	w.report(b, fmt.Sprintf("read the state of %d random rooms in %s (%.0f rooms/s)", sample, readTime.Round(time.Millisecond), float64(sample)/readTime.Seconds()), true)
	w.settle(b)
	w.report(b, "every actor passivated", true)
	time.Sleep(roomsQuiet)
	end := w.report(b, fmt.Sprintf("%s later", roomsQuiet), true)
	fmt.Fprintf(os.Stderr, "wake marks left: %d\n", wakeMarks(b, h))
	if path := os.Getenv("PERSONA_BENCH_HEAPPROFILE"); path != "" {
		writeHeapProfile(b, path)
	}

	b.ReportMetric(float64(n)/createTime.Seconds(), "rooms/s")
	b.ReportMetric(float64(end.live)/(1<<20), "MiB-live-heap")
	b.ReportMetric(float64(end.rss)/(1<<20), "MiB-RSS")
	b.ReportMetric(float64(end.anon)/(1<<20), "MiB-RSS-anon")
	b.ReportMetric(float64(end.disk)/(1<<20), "MiB-disk")
}

// createBenchRoom asks as api.createRoom does: the creator's profile, then
// CreateRoom to the room's actor.
func createBenchRoom(ctx context.Context, h *Service, creator string, i int) error {
	r, err := h.Request(ctx, KindUser, creator, &wire.GetProfile{UserId: creator})
	if err != nil {
		return fmt.Errorf("profile of %s: %w", creator, err)
	}
	p := r.(*wire.ProfileReply)
	var fields map[string]any
	_ = json.Unmarshal(p.FieldsJson, &fields)
	profile := mustJSON(map[string]any{"displayname": fields["displayname"]})
	id := benchRoomID(i)
	r, err = h.Request(ctx, KindRoom, id, &wire.CreateRoom{RoomId: id, Creator: creator,
		RequestJson:        mustJSON(map[string]string{"name": fmt.Sprintf("Room %d", i), "topic": "a room among many"}),
		CreatorProfileJson: profile, CreatorProfileVersion: p.Version})
	if err != nil {
		return fmt.Errorf("create %s: %w", id, err)
	}
	if e := r.(*wire.SendReply).Error; e != nil {
		return fmt.Errorf("create %s: %s", id, e.Message)
	}
	return nil
}

func benchRoomID(i int) string { return fmt.Sprintf("!bench%07d:%s", i, server) }

// parallel runs fn(0..n-1) on roomsInFlight goroutines and fails b on the
// first error.
func parallel(b *testing.B, n int, fn func(i int) error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, roomsInFlight)
	for range roomsInFlight {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				if err := fn(i); err != nil {
					errs <- err
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		b.Fatal(err)
	}
}

// roomsWatch samples what the benchmark reports: actors in memory, Go heap,
// process RSS and badger's size on disk.
type roomsWatch struct {
	h     *Service
	dir   string
	start time.Time
}

type roomsMem struct {
	rooms, users int    // actors in memory
	live, heap   uint64 // Go heap: live after the last GC, in objects now
	rss, anon    uint64 // VmRSS, and its anonymous part (heap, stacks, off-heap)
	hwm, disk    uint64 // VmHWM (peak RSS), badger's files
}

func (w *roomsWatch) sample(b *testing.B) roomsMem {
	s := roomsMem{rooms: actorMetric(b, w.h, "persona_actors_active", KindRoom),
		users: actorMetric(b, w.h, "persona_actors_active", KindUser), disk: dirSize(b, w.dir)}
	ms := []metrics.Sample{{Name: "/gc/heap/live:bytes"}, {Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(ms)
	s.live, s.heap = ms[0].Value.Uint64(), ms[1].Value.Uint64()
	s.rss, s.anon, s.hwm = procStatus(b, "VmRSS"), procStatus(b, "RssAnon"), procStatus(b, "VmHWM")
	return s
}

func (s roomsMem) String() string {
	mib := func(v uint64) string { return fmt.Sprintf("%.0f MiB", float64(v)/(1<<20)) }
	return fmt.Sprintf("active rooms %d users %d | live heap %s, heap objects %s | RSS %s (anon %s), peak %s | disk %s",
		s.rooms, s.users, mib(s.live), mib(s.heap), mib(s.rss), mib(s.anon), mib(s.hwm), mib(s.disk))
}

func (w *roomsWatch) progress(b *testing.B, created int, d time.Duration) {
	fmt.Fprintf(os.Stderr, "%8d rooms %6.0f rooms/s %7s | %s\n", created, float64(created)/d.Seconds(),
		time.Since(w.start).Round(time.Second), w.sample(b))
}

// report prints a sample, after a GC if gc is set (the live heap then is
// exact).
func (w *roomsWatch) report(b *testing.B, what string, gc bool) roomsMem {
	if gc {
		runtime.GC()
	}
	s := w.sample(b)
	fmt.Fprintf(os.Stderr, "%s [%s]\n    %s\n", what, time.Since(w.start).Round(time.Second), s)
	return s
}

// settle waits until no actor of any kind is in memory.
func (w *roomsWatch) settle(b *testing.B) {
	deadline := time.Now().Add(roomsSettle)
	for actorMetric(b, w.h, "persona_actors_active", "") > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("actors still active after %s: %s", roomsSettle, w.sample(b))
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// procStatus reads a "kB" field of /proc/self/status, in bytes (0 where
// there is no /proc).
func procStatus(b *testing.B, field string) uint64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		return 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				b.Error(err)
			}
			return kb << 10
		}
	}
	return 0
}

// dirSize is the disk space the files under dir take (badger's files are
// sparse where preallocated).
func dirSize(b *testing.B, dir string) uint64 {
	var n uint64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil // badger removes files while we walk
		}
		if info, err := d.Info(); err == nil {
			if st, ok := info.Sys().(*syscall.Stat_t); ok {
				n += uint64(st.Blocks) * 512
			}
		}
		return nil
	})
	if err != nil {
		b.Error(err)
	}
	return n
}

// writeHeapProfile writes what is live on the heap now (after a GC).
func writeHeapProfile(b *testing.B, path string) {
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if err := pprof.WriteHeapProfile(f); err != nil {
		b.Fatal(err)
	}
}

// wakeMarks counts the actors a restart would wake (unfinished deliveries).
func wakeMarks(b *testing.B, h *Service) int {
	n := 0
	for p := range h.rt.Partitions() {
		if err := h.store.Scan(storage.Prefix("p", partitionName(p), "wake"), nil, func(_, _ []byte) error {
			n++
			return nil
		}); err != nil {
			b.Fatal(err)
		}
	}
	return n
}
