package main

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	neturl "net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"persona/api"
)

// crashChildEnv names the config a re-executed test binary serves: set, the
// binary is a persona node instead of a test run (see TestMain).
const crashChildEnv = "PERSONA_CRASH_CHILD_CONFIG"

const (
	crashSecret = "crash-secret"
	crashRooms  = 2000
	crashConc   = 16
)

func TestMain(m *testing.M) {
	if path := os.Getenv(crashChildEnv); path != "" {
		if err := run([]string{"serve", "--config", path}, os.Stdout, os.Stderr); err != nil {
			fmt.Fprintln(os.Stderr, "persona:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestCrashMidPropagationConverges runs a node as a child process, renames a
// user joined to 2,000 rooms, SIGKILLs the node while the renames are still
// reaching the rooms, restarts it on the same data, and checks that every
// room converges to the last acknowledged name, with one member event at most
// per version, in the order the versions were written.
func TestCrashMidPropagationConverges(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test: starts a node twice and creates 2,000 rooms")
	}
	start := time.Now()
	defer func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) }()

	transport := keepAlive(t)

	addrs := freeLoopbackAddrs(t, 2)
	addr, metricsAddr := addrs[0], addrs[1]
	cfgPath := filepath.Join(t.TempDir(), "persona.yaml")
	cfg := fmt.Sprintf(`server_name: "localhost"
data_dir: %q
listen:
  client: %q
  metrics: %q
  federation: ""
registration:
  open: false
  shared_secret: %q
propagation:
  max_in_flight: 64
`, filepath.Join(t.TempDir(), "data"), addr, metricsAddr, crashSecret)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr

	// 1. A node and an admin user (admins are not rate limited).
	node := startCrashChild(t, cfgPath, base)
	reg, err := registerWithSecret(base, crashSecret, "crash", "", true)
	if err != nil {
		t.Fatalf("register: %v\n%s", err, node.out.tail())
	}
	c := &crashClient{base: base, user: reg.UserID, token: reg.AccessToken}

	// 2. 2,000 rooms, 16 requests at a time.
	phase := time.Now()
	rooms, err := createPublicRooms(base, c.token, crashRooms)
	if err != nil {
		t.Fatalf("createRoom: %v\n%s", err, node.out.tail())
	}
	t.Logf("created %d rooms in %s", crashRooms, time.Since(phase).Round(time.Millisecond))
	if _, err := c.waitSettled(30 * time.Second); err != nil {
		t.Fatalf("after creating rooms: %v\n%s", err, node.out.tail())
	}

	// 3.-6., twice: kill right after the last acknowledged rename (which
	// survives, as every acknowledged one does), then once some rooms have
	// acknowledged and others not (rooms that applied a version whose ack
	// the user actor never wrote down are sent it again and must not apply
	// it twice).
	var written []string
	renameBurst := func(k int) {
		t.Helper()
		for range k {
			name := "v" + strconv.Itoa(len(written)+1)
			if err := c.rename(name); err != nil {
				t.Fatalf("rename to %s: %v\n%s", name, err, node.out.tail())
			}
			written = append(written, name) // acknowledged: durable from here on
		}
	}
	for round := 1; round <= 2; round++ {
		var pendingAtKill int
		var versionAtKill uint64
		killAt := func(version uint64, pending int) {
			node.kill()
			transport.CloseIdleConnections()
			pendingAtKill, versionAtKill = pending, version
		}
		if round == 1 {
			// 3. Rename quickly, each PUT acknowledged, and kill the node
			// right after the last 200 while rooms are still behind. Should
			// every room already have the renames by then, rename more
			// times and try again.
			for attempt, renames := range []int{3, 10, 30} {
				renameBurst(renames)
				version, pending, err := c.pending()
				if err != nil {
					t.Fatalf("pending before the kill: %v\n%s", err, node.out.tail())
				}
				if pending > 0 || attempt == 2 {
					killAt(version, pending)
					break
				}
				t.Logf("every room had acknowledged %d renames before the kill could land; renaming more", renames)
			}
		} else {
			// Rename, then kill once about half the rooms have acknowledged
			// (in the user actor's memory: the cursors it writes lazily).
			renameBurst(3)
			deadline := time.Now().Add(10 * time.Second)
			for {
				version, pending, err := c.pending()
				if err != nil {
					t.Fatalf("pending before the kill: %v\n%s", err, node.out.tail())
				}
				if pending > 0 && pending <= crashRooms/2 || time.Now().After(deadline) {
					killAt(version, pending)
					break
				}
				if pending == 0 {
					t.Logf("every room acknowledged before the kill could land; renaming more")
					renameBurst(3)
				}
			}
		}
		last := written[len(written)-1]
		t.Logf("round %d: SIGKILL after %d acknowledged renames (last %q, propagating version %d): %d of %d rooms pending",
			round, len(written), last, versionAtKill, pendingAtKill, crashRooms)
		if pendingAtKill == 0 {
			t.Fatalf("round %d: the kill never landed mid-propagation", round)
		}

		// 4. Restart on the same data and port. The user's unfinished
		// propagation must resume by itself: its actor is woken before any
		// client request reaches it (seen in the metrics, which touch no
		// actor).
		phase := time.Now()
		node = startCrashChild(t, cfgPath, base)
		if err := waitUserWoken(metricsAddr, 10*time.Second); err != nil {
			t.Errorf("round %d: after restart, with %d rooms pending: %v", round, pendingAtKill, err)
		}
		// The version being propagated survived: while rooms are behind,
		// the admin API names it (once all caught up, it reports 0).
		if version, pending, err := c.pending(); err == nil && pending > 0 && version != versionAtKill {
			t.Errorf("round %d: after restart %d rooms behind version %d, before the kill version %d", round, pending, version, versionAtKill)
		}
		if _, err := c.waitSettled(60 * time.Second); err != nil {
			t.Fatalf("round %d: after restart: %v\n%s", round, err, node.out.tail())
		}
		t.Logf("round %d: restarted and converged in %s", round, time.Since(phase).Round(time.Millisecond))

		// 5. and 6.
		c.verifyConverged(t, rooms, written)
		if t.Failed() {
			t.FailNow()
		}
	}
}

// verifyConverged checks every room: the user's member state holds the last
// name written; the timeline holds each name at most once, in the order
// written. And the profile holds the last name.
func (c *crashClient) verifyConverged(t *testing.T, rooms, written []string) {
	t.Helper()
	last := written[len(written)-1]
	var joined struct {
		Rooms []string `json:"joined_rooms"`
	}
	if err := call(http.MethodGet, c.base+"/_matrix/client/v3/joined_rooms", c.token, nil, &joined); err != nil {
		t.Fatalf("joined_rooms: %v", err)
	}
	if missing, extra := diffSets(rooms, joined.Rooms); len(joined.Rooms) != len(rooms) || len(missing)+len(extra) > 0 {
		t.Fatalf("joined_rooms: %d rooms, %d created ones missing (%v), %d unknown (%v)",
			len(joined.Rooms), len(missing), firstN(missing, 3), len(extra), firstN(extra, 3))
	}
	order := map[string]int{}
	for i, n := range written {
		order[n] = i
	}
	var next, renameEvents atomic.Int64
	errs := concurrently(crashConc, func() error {
		var errs []error
		for i := int(next.Add(1)) - 1; i < len(joined.Rooms); i = int(next.Add(1)) - 1 {
			n, err := c.checkRoom(joined.Rooms[i], last, order)
			renameEvents.Add(int64(n))
			if err != nil {
				errs = append(errs, err)
			}
		}
		return errors.Join(errs...)
	})
	if len(errs) > 0 {
		all := strings.Split(errors.Join(errs...).Error(), "\n")
		t.Errorf("%d rooms wrong after restart, e.g.:\n%s", len(all), strings.Join(firstN(all, 10), "\n"))
	}
	t.Logf("checked %d rooms: %d rename events in all (%d names written)", len(joined.Rooms), renameEvents.Load(), len(written))

	var profile struct {
		Displayname string `json:"displayname"`
	}
	if err := call(http.MethodGet, c.base+"/_matrix/client/v3/profile/"+neturl.PathEscape(c.user), "", nil, &profile); err != nil {
		t.Fatalf("profile: %v", err)
	}
	if profile.Displayname != last {
		t.Errorf("profile displayname after restart = %q, want %q", profile.Displayname, last)
	}
}

// crashClient is the test's user on the child node.
type crashClient struct {
	base, user, token string
}

func (c *crashClient) rename(name string) error {
	return call(http.MethodPut, c.base+"/_matrix/client/v3/profile/"+neturl.PathEscape(c.user)+"/displayname", c.token, map[string]string{"displayname": name}, nil)
}

// pending asks the admin API for the user's profile version and how many
// joined rooms have not acknowledged it.
func (c *crashClient) pending() (version uint64, pending int, err error) {
	var out struct {
		Version uint64 `json:"version"`
		Pending int    `json:"pending"`
	}
	req, err := http.NewRequest(http.MethodGet, c.base+"/_persona/admin/v1/users/"+neturl.PathEscape(c.user)+"/pending", nil)
	if err != nil {
		return 0, 0, err
	}
	req.Header.Set(api.SecretHeader, crashSecret)
	if err := do(req, &out); err != nil {
		return 0, 0, err
	}
	return out.Version, out.Pending, nil
}

// waitSettled polls until no room is behind; it returns the profile version.
func (c *crashClient) waitSettled(limit time.Duration) (uint64, error) {
	deadline := time.Now().Add(limit)
	for {
		version, pending, err := c.pending()
		if err != nil {
			return 0, err
		}
		if pending == 0 {
			return version, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%d rooms still behind version %d after %s", pending, version, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// checkRoom checks one room: the user's member state carries last, and the
// user's member events after the join carry names of written (order maps
// each to its position), each at most once and in the order written. It
// returns how many of those rename events the room holds.
func (c *crashClient) checkRoom(room, last string, order map[string]int) (int, error) {
	roomURL := c.base + "/_matrix/client/v3/rooms/" + neturl.PathEscape(room)
	var state struct {
		Displayname string `json:"displayname"`
	}
	if err := call(http.MethodGet, roomURL+"/state/m.room.member/"+neturl.PathEscape(c.user), c.token, nil, &state); err != nil {
		return 0, fmt.Errorf("room %s: member state: %w", room, err)
	}
	var names []string // the user's member events, newest first until reversed
	sawCreate, from := false, ""
	for pages := 0; !sawCreate && pages < 20; pages++ { // the whole timeline, back to its creation
		var page struct {
			Chunk []struct {
				Type     string  `json:"type"`
				StateKey *string `json:"state_key"`
				Content  struct {
					Membership  string `json:"membership"`
					Displayname string `json:"displayname"`
				} `json:"content"`
			} `json:"chunk"`
			End string `json:"end"`
		}
		url := roomURL + "/messages?dir=b&limit=100"
		if from != "" {
			url += "&from=" + neturl.QueryEscape(from)
		}
		if err := call(http.MethodGet, url, c.token, nil, &page); err != nil {
			return 0, fmt.Errorf("room %s: messages: %w", room, err)
		}
		for _, ev := range page.Chunk {
			sawCreate = sawCreate || ev.Type == "m.room.create"
			if ev.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == c.user {
				names = append(names, ev.Content.Displayname)
			}
		}
		if page.End == "" || len(page.Chunk) == 0 {
			break
		}
		from = page.End
	}
	slices.Reverse(names) // oldest first
	var problems []string
	if state.Displayname != last {
		problems = append(problems, fmt.Sprintf("member state displayname %q, want %q", state.Displayname, last))
	}
	if !sawCreate {
		problems = append(problems, "the timeline does not reach the room's creation")
	}
	renames := 0
	if len(names) == 0 {
		problems = append(problems, "no member event of the user in the timeline")
	} else {
		// names[0] is the join; every later event is one version.
		seen := map[string]int{names[0]: 1}
		prev := -1
		for _, n := range names[1:] {
			renames++
			seen[n]++
			pos, ok := order[n]
			switch {
			case !ok:
				problems = append(problems, fmt.Sprintf("member event with displayname %q, never written", n))
			case pos <= prev:
				problems = append(problems, fmt.Sprintf("%q after %q: out of the written order", n, reverseLookup(order, prev)))
			}
			if ok && pos > prev {
				prev = pos
			}
		}
		for n, k := range seen {
			if k > 1 {
				problems = append(problems, fmt.Sprintf("displayname %q in %d member events", n, k))
			}
		}
		if got := names[len(names)-1]; got != last {
			problems = append(problems, fmt.Sprintf("last member event carries %q, want %q", got, last))
		}
	}
	if len(problems) > 0 {
		return renames, fmt.Errorf("room %s (member names %q): %s", room, names, strings.Join(problems, "; "))
	}
	return renames, nil
}

func reverseLookup(order map[string]int, pos int) string {
	for n, p := range order {
		if p == pos {
			return n
		}
	}
	return "?"
}

// waitUserWoken polls the node's metrics until a user actor has been
// activated, or fails after limit.
func waitUserWoken(metricsAddr string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	for {
		n, err := metricValue(metricsAddr, `persona_actor_activations_total{kind="user"}`)
		if err == nil && n >= 1 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("no user actor activated within %s without a client request (last read: %v, %v)", limit, n, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// metricValue reads one sample from the node's /metrics.
func metricValue(metricsAddr, sample string) (float64, error) {
	resp, err := httpClient.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, sample+" "); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", sample)
}

// keepAlive makes the bench's HTTP client keep connections to the child
// alive under crashConc concurrent requests, until the test ends; close
// its idle connections when the child is killed. It sets the package's
// client: a test that calls it is not parallel.
func keepAlive(t *testing.T) *http.Transport {
	transport := &http.Transport{MaxIdleConns: 64, MaxIdleConnsPerHost: 64}
	saved := httpClient.Transport
	httpClient.Transport = transport
	t.Cleanup(func() {
		transport.CloseIdleConnections()
		httpClient.Transport = saved
	})
	return transport
}

// createPublicRooms creates n public rooms as token's user, crashConc at
// a time, and returns their ids.
func createPublicRooms(base, token string, n int) ([]string, error) {
	rooms := make([]string, n)
	var next atomic.Int64
	errs := concurrently(crashConc, func() error {
		for i := int(next.Add(1)) - 1; i < n; i = int(next.Add(1)) - 1 {
			var out struct {
				RoomID string `json:"room_id"`
			}
			if err := call(http.MethodPost, base+"/_matrix/client/v3/createRoom", token, map[string]any{"preset": "public_chat"}, &out); err != nil {
				return err
			}
			rooms[i] = out.RoomID
		}
		return nil
	})
	if len(errs) > 0 {
		return nil, errs[0]
	}
	return rooms, nil
}

// concurrently runs f in n goroutines and returns their errors.
func concurrently(n int, f func() error) []error {
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			if err := f(); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return errs
}

// diffSets returns the elements of want missing from got, and those of got
// not in want.
func diffSets(want, got []string) (missing, extra []string) {
	in := map[string]bool{}
	for _, s := range got {
		in[s] = true
	}
	for _, s := range want {
		if !in[s] {
			missing = append(missing, s)
		}
		delete(in, s)
	}
	for s := range in {
		extra = append(extra, s)
	}
	return missing, extra
}

func firstN(s []string, n int) []string { return s[:min(n, len(s))] }

// freeLoopbackAddrs returns n distinct loopback addresses whose ports are
// free right now.
func freeLoopbackAddrs(t *testing.T, n int) []string {
	t.Helper()
	var addrs []string
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		addrs = append(addrs, l.Addr().String())
	}
	return addrs
}
