package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/internal/lincheck"
)

// A write is one rename a client made: when it began and ended, and what
// the client learned of it.
type write struct {
	began, ended time.Time
	outcome      lincheck.Outcome
}

// writeLog records the fault run's renames by name (every name is
// written once).
type writeLog struct {
	mu     sync.Mutex
	writes map[string]write
}

func (l *writeLog) add(name string, w write) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.writes[name] = w
}

// describe tells what the client learned of name's write and when, for a
// failure's message.
func (l *writeLog) describe(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	w, ok := l.writes[name]
	if !ok {
		return "never written"
	}
	return fmt.Sprintf("outcome %v, began %s, took %s", w.outcome, w.began.Format("15:04:05.000"), w.ended.Sub(w.began).Round(time.Millisecond))
}

// inOrder reports the first pair of names in history (a room's names for
// the user, oldest first) that contradicts the order their writes were
// acknowledged in: a name whose write was acknowledged before another's
// began, shown after it. It also reports a name no client wrote, or one
// whose write was refused. Writes whose outcome is unknown may show or not.
func (l *writeLog) inOrder(history []string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	var latest string // of the acknowledged names so far, the one whose write began last
	for _, name := range history {
		w, ok := l.writes[name]
		switch {
		case !ok:
			return fmt.Errorf("%q was never written", name)
		case w.outcome == lincheck.Refused:
			return fmt.Errorf("%q was refused, and shows", name)
		case w.outcome != lincheck.Acked:
			continue
		}
		if latest != "" && w.ended.Before(l.writes[latest].began) {
			return fmt.Errorf("%q shows after %q, but was acknowledged before that write began", name, latest)
		}
		if latest == "" || w.began.After(l.writes[latest].began) {
			latest = name
		}
	}
	return nil
}

// createRoomsThroughEach creates n rooms as the user, the i-th through procs[i%3],
// a few at a time through each node.
func createRoomsThroughEach(t *testing.T, ctx context.Context, procs []*clusterProc, clients map[string]*mautrix.Client, n int) []id.RoomID {
	t.Helper()
	rooms := make([]id.RoomID, n)
	errs := make(chan error, n)
	const perNode = 4
	var wg sync.WaitGroup
	for w := range perNode * len(procs) {
		cli := clients[procs[w%len(procs)].name]
		wg.Go(func() {
			for i := w; i < n; i += perNode * len(procs) {
				resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "fault " + strconv.Itoa(i)})
				if err != nil {
					errs <- fmt.Errorf("create room %d: %w", i, err)
					return
				}
				rooms[i] = resp.RoomID
			}
		})
	}
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return rooms
}

// memberNames reads, oldest first, the display names of user's member
// events in room's timeline, through cli.
func memberNames(ctx context.Context, cli *mautrix.Client, room id.RoomID, user id.UserID) ([]string, error) {
	filter := &mautrix.FilterPart{Types: []event.Type{event.StateMember}, Senders: []id.UserID{user}}
	var names []string
	from := ""
	for range 1000 {
		resp, err := cli.Messages(ctx, room, from, "", mautrix.DirectionBackward, filter, 1000)
		if err != nil {
			return nil, err
		}
		for _, ev := range resp.Chunk {
			if ev.StateKey == nil || *ev.StateKey != user.String() {
				continue
			}
			var member struct {
				Displayname string `json:"displayname"`
			}
			if err := json.Unmarshal(ev.Content.VeryRaw, &member); err != nil {
				return nil, fmt.Errorf("member event %s: %w", ev.ID, err)
			}
			names = append(names, member.Displayname)
		}
		if resp.End == "" || len(resp.Chunk) == 0 && resp.End == from {
			slices.Reverse(names)
			return names, nil
		}
		from = resp.End
	}
	return nil, fmt.Errorf("room %s: more than 1,000 pages", room)
}

// errNotRead is the failure of a room read skipped: the deadline had
// passed, spent on rooms read before.
var errNotRead = errors.New("not read before the deadline")

// agreedName waits until every node reads one display name for user,
// and returns it.
func agreedName(t *testing.T, ctx context.Context, procs []*clusterProc, clients map[string]*mautrix.Client, user id.UserID) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var names []string
		var errs []error
		for _, p := range procs {
			dn, err := clients[p.name].GetDisplayName(ctx, user)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", p.name, err))
				continue
			}
			names = append(names, dn.DisplayName)
		}
		if len(names) == len(procs) && len(slices.Compact(names)) == 1 {
			return names[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("the nodes read %q (%v)", names, errs)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// roomsConverged waits until every room, read through every node, shows
// final as the user's last name, then checks each room's names were
// applied in the order they were acknowledged. It returns what failed,
// or nothing once the profile no longer reads final (changed). Reads go
// a few at a time, each asked again (until deadline) when it fails or
// lags.
func roomsConverged(ctx context.Context, procs []*clusterProc, clients map[string]*mautrix.Client,
	rooms []id.RoomID, user id.UserID, final string, log *writeLog, deadline time.Time) (errs []error, changed bool) {
	moved := make(chan struct{}) // closed once a node reads another name
	watched := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(watched)
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Second):
			}
			for _, p := range procs {
				if dn, err := clients[p.name].GetDisplayName(ctx, user); err == nil && dn.DisplayName != final {
					close(moved)
					return
				}
			}
		}
	}()
	defer func() {
		close(stop)
		<-watched
		select {
		case <-moved:
			errs, changed = nil, true
		default:
		}
	}()
	gone := func() bool {
		select {
		case <-moved:
			return true
		default:
			return false
		}
	}
	type read struct {
		room id.RoomID
		p    *clusterProc
	}
	reads := make(chan read)
	fails := make(chan error, len(rooms)*len(procs))
	var wg sync.WaitGroup
	for range 2 * len(procs) {
		wg.Go(func() {
			for r := range reads {
				if time.Now().After(deadline) && !gone() { // a failed run ends in minutes, not one read per room
					fails <- fmt.Errorf("room %s through %s: %w", r.room, r.p.name, errNotRead)
					continue
				}
				names, err := memberNames(ctx, clients[r.p.name], r.room, user)
				for err != nil || last(names) != final {
					if gone() {
						break
					}
					if time.Now().After(deadline) {
						err = fmt.Errorf("last of %d names %q (%s), %v; want %q (%s)", len(names), last(names), log.describe(last(names)), err, final, log.describe(final))
						break
					}
					time.Sleep(100 * time.Millisecond)
					names, err = memberNames(ctx, clients[r.p.name], r.room, user)
				}
				if gone() {
					continue // the rooms are read again for the new name
				}
				if err == nil {
					err = log.inOrder(names)
				}
				if err != nil {
					fails <- fmt.Errorf("room %s through %s: %w (%d names, the last %q)", r.room, r.p.name, err, len(names), names[max(0, len(names)-20):])
				}
			}
		})
	}
	for _, room := range rooms {
		for _, p := range procs {
			reads <- read{room, p}
		}
	}
	close(reads)
	wg.Wait()
	close(fails)
	for err := range fails {
		errs = append(errs, err)
	}
	return errs, false
}

func last(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1]
}

// waitCaughtUp waits until every node sees victim alive and ready, holding
// a replica of every partition, and every partition's leader reports no
// replica lacking an entry (persona_cluster_replication_lag_entries).
func waitCaughtUp(t *testing.T, procs []*clusterProc, victim *clusterProc, limit time.Duration) {
	t.Helper()
	deadline := time.Now().Add(limit)
	said := time.Now()
	for {
		why := caughtUp(procs, victim)
		if why == "" {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not catch up within %s: %s", victim.name, limit, why)
		}
		if time.Since(said) > 10*time.Second {
			t.Logf("%s not caught up yet: %s", victim.name, why)
			said = time.Now()
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// caughtUp says why victim has not caught up yet, or "" once it has.
func caughtUp(procs []*clusterProc, victim *clusterProc) string {
	for _, p := range procs {
		ms, err := membersOf(p)
		if err != nil {
			return fmt.Sprintf("%s: %v", p.name, err)
		}
		m := ms[victim.name]
		if m.State != "alive" || !m.Ready {
			return fmt.Sprintf("%s sees %s %s, ready %v", p.name, victim.name, m.State, m.Ready)
		}
		if held := len(m.Led) + len(m.Followed); held != routePartitions {
			return fmt.Sprintf("%s sees %s hold %d partitions", p.name, victim.name, held)
		}
	}
	led := 0
	for _, p := range procs {
		lags, err := replicationLags(p)
		if err != nil {
			return fmt.Sprintf("%s: %v", p.name, err)
		}
		for part, lag := range lags {
			if lag > 0 {
				return fmt.Sprintf("%s: partition %s lags %g entries", p.name, part, lag)
			}
		}
		led += len(lags)
	}
	if led != routePartitions {
		return fmt.Sprintf("lags reported for %d partitions", led)
	}
	return ""
}

// replicationLags reads p's persona_cluster_replication_lag_entries, by
// partition.
func replicationLags(p *clusterProc) (map[string]float64, error) {
	resp, err := httpClient.Get("http://" + p.metrics + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	lags := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		rest, ok := strings.CutPrefix(sc.Text(), `persona_cluster_replication_lag_entries{partition="`)
		if !ok {
			continue
		}
		part, value, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("lag sample %q", sc.Text())
		}
		v, err := strconv.ParseFloat(value, 64)
		if err != nil {
			return nil, fmt.Errorf("lag sample %q: %w", sc.Text(), err)
		}
		lags[part] = v
	}
	return lags, sc.Err()
}
