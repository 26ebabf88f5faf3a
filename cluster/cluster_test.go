package cluster

import (
	"bytes"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"persona/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }

// fast are timings for members in one process: failures are found in
// about a second instead of LAN's five.
func fast(o Options) Options {
	o.ProbeInterval, o.ProbeTimeout, o.SuspicionMult = 200*time.Millisecond, 100*time.Millisecond, 3
	o.GossipInterval, o.PushPullInterval = 50*time.Millisecond, 2*time.Second
	o.Rejoin, o.Refresh = 200*time.Millisecond, 100*time.Millisecond
	return o
}

// testLog is a logger whose records the test prints if it fails.
func testLog(t *testing.T) *slog.Logger {
	var mu sync.Mutex
	var buf bytes.Buffer
	t.Cleanup(func() {
		if t.Failed() {
			mu.Lock()
			defer mu.Unlock()
			t.Logf("log:\n%s", buf.String())
		}
	})
	return slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// start starts a member named name on a free loopback port that joins
// seeds; it shuts down when the test ends.
func start(t *testing.T, name string, seeds ...string) *Membership {
	t.Helper()
	return startWith(t, fast(Options{Name: name, Bind: "127.0.0.1:0", Join: seeds, Partitions: 8,
		Local: Meta{ActorAddr: ":8090"}, Log: testLog(t)}))
}

func startWith(t *testing.T, o Options) *Membership {
	t.Helper()
	m, err := Start(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Shutdown() })
	return m
}

// waitMembers polls m's members until ok holds, or fails after within.
func waitMembers(t *testing.T, m *Membership, within time.Duration, what string, ok func(map[string]Member) bool) map[string]Member {
	t.Helper()
	deadline := time.Now().Add(within)
	for {
		byName := map[string]Member{}
		for _, mem := range m.Members() {
			byName[mem.Name] = mem
		}
		if ok(byName) {
			return byName
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s not within %s; members: %+v", m.Name(), what, within, byName)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// allAlive reports whether exactly names are members, all alive.
func allAlive(names ...string) func(map[string]Member) bool {
	return func(ms map[string]Member) bool {
		if len(ms) != len(names) {
			return false
		}
		for _, n := range names {
			if ms[n].State != StateAlive {
				return false
			}
		}
		return true
	}
}

// nextEvent returns the next event of ch about name, skipping others, or
// fails after within.
func nextEvent(t *testing.T, ch <-chan Event, name string, within time.Duration) Event {
	t.Helper()
	timeout := time.After(within)
	for {
		select {
		case ev, ok := <-ch:
			if !ok {
				t.Fatalf("subscription closed waiting for an event of %s", name)
			}
			if ev.Member.Name == name {
				return ev
			}
		case <-timeout:
			t.Fatalf("no event of %s within %s", name, within)
		}
	}
}

// TestMembersSeeEachOther starts three members, each joining the one
// before: each lists all three alive, with their addresses and metadata,
// the actor address's host taken from the advertised address. A change of
// metadata reaches the others, and their subscribers, as an update.
func TestMembersSeeEachOther(t *testing.T) {
	t.Parallel()
	a := start(t, "a")
	events, cancel := a.Subscribe()
	defer cancel()
	b := start(t, "b", a.Addr())
	c := start(t, "c", b.Addr())
	all := []*Membership{a, b, c}
	for _, m := range all {
		ms := waitMembers(t, m, 5*time.Second, "all three alive", allAlive("a", "b", "c"))
		for _, o := range all {
			got := ms[o.Name()]
			if got.Addr != o.Addr() || got.ActorAddr != "127.0.0.1:8090" || got.Ready || got.MetaErr != nil {
				t.Errorf("%s sees %s as %+v, want addr %s, actor 127.0.0.1:8090, not ready", m.Name(), o.Name(), got, o.Addr())
			}
		}
	}
	for _, name := range []string{"b", "c"} {
		if ev := nextEvent(t, events, name, 5*time.Second); ev.Kind != EventJoin || ev.Member.State != StateAlive {
			t.Fatalf("a's first event of %s: %s %+v, want a join", name, ev.Kind, ev.Member)
		}
	}

	want := Meta{ActorAddr: "127.0.0.2:9000", Ready: true, Led: []int{1, 4}, Followed: []int{0, 7}}
	if err := b.SetLocal(want); err != nil {
		t.Fatal(err)
	}
	if got := b.Local(); !sameMeta(got, want) {
		t.Fatalf("b.Local() = %+v after SetLocal(%+v)", got, want)
	}
	for _, m := range []*Membership{a, c} {
		waitMembers(t, m, 5*time.Second, "b's new metadata", func(ms map[string]Member) bool { return sameMeta(ms["b"].Meta, want) })
	}
	ev := nextEvent(t, events, "b", 5*time.Second)
	if ev.Kind != EventUpdate || !sameMeta(ev.Member.Meta, want) {
		t.Fatalf("a's event of b's new metadata: %s %+v", ev.Kind, ev.Member)
	}
	if err := b.SetLocal(Meta{Led: []int{8}}); err == nil || !strings.Contains(err.Error(), "out of range") {
		t.Fatalf("SetLocal with partition 8 of 8: %v", err)
	}
}

func sameMeta(a, b Meta) bool {
	return a.ActorAddr == b.ActorAddr && a.Ready == b.Ready && slices.Equal(a.Led, b.Led) && slices.Equal(a.Followed, b.Followed)
}

// TestFailRejoinLeave stops a member without leaving: the others suspect
// it, then declare it dead. It comes back under its name and address and
// rejoins through its seed; then another member leaves, and the others
// list it as left, not dead.
func TestFailRejoinLeave(t *testing.T) {
	t.Parallel()
	a := start(t, "a")
	events, cancel := a.Subscribe()
	defer cancel()
	b := start(t, "b", a.Addr())
	bEvents, bCancel := b.Subscribe()
	defer bCancel()
	cAddr := freeUDPAndTCP(t)
	copts := fast(Options{Name: "c", Bind: cAddr, Join: []string{a.Addr()}, Partitions: 8, Log: testLog(t)})
	c := startWith(t, copts)
	waitMembers(t, a, 5*time.Second, "all three alive", allAlive("a", "b", "c"))
	waitMembers(t, b, 5*time.Second, "all three alive", allAlive("a", "b", "c"))
	for _, ch := range []<-chan Event{events, bEvents} {
		if ev := nextEvent(t, ch, "c", 5*time.Second); ev.Kind != EventJoin {
			t.Fatalf("first event of c: %s %+v, want a join", ev.Kind, ev.Member)
		}
	}

	stopped := time.Now()
	if err := c.Shutdown(); err != nil {
		t.Fatal(err)
	}
	// Whoever's probe of c went unanswered first suspects it; the other
	// may learn of the suspicion through gossip, which memberlist does not
	// report.
	suspected := 0
	for _, m := range []struct {
		name   string
		events <-chan Event
	}{{"a", events}, {"b", bEvents}} {
		for {
			ev := nextEvent(t, m.events, "c", 10*time.Second)
			if ev.Kind == EventUpdate && ev.Member.State == StateSuspect {
				suspected++
				continue
			}
			if ev.Kind != EventFail || ev.Member.State != StateDead || ev.Member.Leaving {
				t.Fatalf("%s's event of c after it stopped: %s %+v, want a fail", m.name, ev.Kind, ev.Member)
			}
			break
		}
		t.Logf("%s declared c dead %s after it stopped", m.name, time.Since(stopped).Round(time.Millisecond))
	}
	if suspected == 0 {
		t.Errorf("neither a nor b listed c suspect before it was declared dead")
	}
	if got := a.Members(); len(got) != 3 {
		t.Fatalf("a lists %d members after c's failure, want 3 (c dead): %+v", len(got), got)
	}

	c = startWith(t, copts)
	if ev := nextEvent(t, events, "c", 10*time.Second); ev.Kind != EventJoin || ev.Member.State != StateAlive {
		t.Fatalf("a's event of c back: %s %+v, want a join", ev.Kind, ev.Member)
	}
	waitMembers(t, b, 5*time.Second, "c back", allAlive("a", "b", "c"))

	if err := b.Leave(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if err := b.Shutdown(); err != nil {
		t.Fatal(err)
	}
	for {
		ev := nextEvent(t, events, "b", 5*time.Second)
		if ev.Kind == EventUpdate && ev.Member.Leaving {
			continue
		}
		if ev.Kind != EventLeave || ev.Member.State != StateLeft {
			t.Fatalf("a's event of b leaving: %s %+v, want a leave", ev.Kind, ev.Member)
		}
		break
	}
	waitMembers(t, c, 5*time.Second, "b left", func(ms map[string]Member) bool { return ms["b"].State == StateLeft && !ms["b"].Ready })
	if err := b.SetLocal(Meta{}); err != ErrLeft {
		t.Fatalf("SetLocal after Leave: %v, want ErrLeft", err)
	}
}

// freeUDPAndTCP returns a loopback address whose port is free for TCP and
// UDP right now.
func freeUDPAndTCP(t *testing.T) string {
	t.Helper()
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		u, err := net.ListenPacket("udp", addr)
		_ = l.Close()
		if err == nil {
			_ = u.Close()
			return addr
		}
	}
	t.Fatal("no port free for both TCP and UDP")
	return ""
}

// TestEncryptedGossip: members sharing a key form a cluster; a member with
// another key, or with none, cannot join it.
func TestEncryptedGossip(t *testing.T) {
	t.Parallel()
	k1, k2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 16)
	opts := func(name string, keys [][]byte, seeds ...string) Options {
		return fast(Options{Name: name, Bind: "127.0.0.1:0", Join: seeds, Partitions: 8, Keys: keys, Log: testLog(t)})
	}
	a := startWith(t, opts("a", [][]byte{k1}))
	b := startWith(t, opts("b", [][]byte{k2, k1}, a.Addr())) // encrypts with k2, which a cannot read
	c := startWith(t, opts("c", nil, a.Addr()))
	d := startWith(t, opts("d", [][]byte{k1, k2}, a.Addr()))
	waitMembers(t, a, 5*time.Second, "a and d alive", allAlive("a", "d"))
	waitMembers(t, d, 5*time.Second, "a and d alive", allAlive("a", "d"))
	for _, m := range []*Membership{b, c} {
		if got := m.Members(); len(got) != 1 {
			t.Errorf("%s, with another key or none, sees %+v", m.Name(), got)
		}
	}
	if _, err := Start(opts("e", [][]byte{[]byte("short")})); err == nil || !strings.Contains(err.Error(), "16, 24 or 32 bytes") {
		t.Fatalf("a key of 5 bytes: %v", err)
	}
}

// TestDefaultName names a member after its host and bound port.
func TestDefaultName(t *testing.T) {
	t.Parallel()
	m := startWith(t, fast(Options{Bind: "127.0.0.1:0", Log: testLog(t)}))
	host, _ := os.Hostname()
	_, port, _ := net.SplitHostPort(m.Addr())
	if want := host + "-" + port; m.Name() != want {
		t.Fatalf("Name() = %q, want %q", m.Name(), want)
	}
	if _, err := strconv.Atoi(port); err != nil || port == "0" {
		t.Fatalf("Addr() = %q: no port bound", m.Addr())
	}
}

func TestOptionsValidate(t *testing.T) {
	t.Parallel()
	for _, tt := range []struct {
		name string
		set  func(*Options)
		want string
	}{
		{"bind host name", func(o *Options) { o.Bind = "localhost:0" }, "Bind"},
		{"advertise port 0", func(o *Options) { o.Advertise = "10.0.0.1:0" }, "Advertise"},
		{"seed without port", func(o *Options) { o.Join = []string{"10.0.0.1"} }, "Join"},
		{"partitions", func(o *Options) { o.Partitions = -1 }, "Partitions"},
		{"probe timeout", func(o *Options) { o.ProbeTimeout = 2 * time.Second }, "ProbeTimeout"},
		{"suspicion", func(o *Options) { o.SuspicionMult = -2 }, "SuspicionMult"},
		{"refresh", func(o *Options) { o.Refresh = -time.Second }, "Refresh"},
		{"metadata", func(o *Options) { o.Local.Led = []int{100} }, "out of range"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			o := Options{Name: "x", Bind: "127.0.0.1:0"}
			tt.set(&o)
			m, err := Start(o)
			if err == nil {
				_ = m.Shutdown()
			}
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Start: %v, want an error naming %s", err, tt.want)
			}
		})
	}
	if _, err := Start(Options{Name: "x", Bind: "127.0.0.1:0", Partitions: 0, ProbeInterval: -1, Forget: -1}); err == nil ||
		!strings.Contains(err.Error(), "ProbeInterval") || !strings.Contains(err.Error(), "Forget") {
		t.Fatalf("two bad options: %v, want both named", err)
	}
}
