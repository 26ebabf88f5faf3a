package node_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"persona/config"
	"persona/internal/testnode"
)

// End-to-end tests of profile propagation: a user's displayname and
// avatar_url changes reaching the m.room.member state of their rooms.

// startNode starts a node without the profile rate limit, so that tests may
// rename as often as they need.
func startNode(t *testing.T) *testnode.Node {
	t.Helper()
	return testnode.Start(t, "", func(c *config.Config) { c.Profile.RateLimit.Burst = 0 })
}

// parallel runs fn(0..n-1) on workers goroutines and fails on the first error.
func parallel(t *testing.T, n, workers int, fn func(i int) error) {
	t.Helper()
	idx := make(chan int)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range idx {
				if err := fn(i); err != nil {
					errs <- err
				}
			}
		})
	}
	for i := range n {
		idx <- i
	}
	close(idx)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

// createRooms creates count public rooms as cli, 16 at a time, and waits
// until cli's user actor lists them all as joined (so that a profile change
// that follows counts them as pending).
func createRooms(t *testing.T, cli *mautrix.Client, count int) []id.RoomID {
	t.Helper()
	rooms := make([]id.RoomID, count)
	parallel(t, count, 16, func(i int) error {
		resp, err := cli.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: fmt.Sprintf("room %d", i)})
		if err != nil {
			return fmt.Errorf("create room %d: %w", i, err)
		}
		rooms[i] = resp.RoomID
		return nil
	})
	waitJoined(t, cli, rooms...)
	return rooms
}

// join joins cli to rooms and waits until its user actor knows.
func join(t *testing.T, cli *mautrix.Client, rooms ...id.RoomID) {
	t.Helper()
	for _, r := range rooms {
		if _, err := cli.JoinRoomByID(ctx, r); err != nil {
			t.Fatalf("%s joins %s: %v", cli.UserID, r, err)
		}
	}
	waitJoined(t, cli, rooms...)
}

// waitJoined waits until /joined_rooms (the user actor's view) holds rooms.
func waitJoined(t *testing.T, cli *mautrix.Client, rooms ...id.RoomID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := cli.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		missing := 0
		for _, r := range rooms {
			if !slices.Contains(resp.JoinedRooms, r) {
				missing++
			}
		}
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d rooms missing from /joined_rooms", cli.UserID, missing, len(rooms))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitNotJoined waits until /joined_rooms no longer holds room.
func waitNotJoined(t *testing.T, cli *mautrix.Client, room id.RoomID) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := cli.JoinedRooms(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Contains(resp.JoinedRooms, room) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s still lists %s as joined", cli.UserID, room)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type pendingReply struct {
	Version uint64           `json:"version"`
	Pending int              `json:"pending"`
	Rooms   []map[string]any `json:"rooms"`
}

// pending asks the admin API how many rooms still lack user's latest version.
func pending(t *testing.T, n *testnode.Node, user id.UserID) pendingReply {
	t.Helper()
	req, _ := http.NewRequestWithContext(ctx, "GET", n.URL+"/_persona/admin/v1/users/"+string(user)+"/pending", nil)
	req.Header.Set("X-Persona-Shared-Secret", n.Config.Registration.SharedSecret)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var p pendingReply
	if resp.StatusCode != 200 {
		t.Fatalf("pending %s: status %d", user, resp.StatusCode)
	}
	if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
		t.Fatal(err)
	}
	return p
}

// waitPropagated waits until every joined room of user has its latest version.
func waitPropagated(t *testing.T, n *testnode.Node, user id.UserID) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		p := pending(t, n, user)
		if p.Pending == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: still %d rooms pending at version %d", user, p.Pending, p.Version)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// putProfile PUTs displayname or avatar_url with query parameters.
func putProfile(cli *mautrix.Client, key, value string, query map[string]string) error {
	u := cli.BuildURLWithQuery(mautrix.ClientURLPath{"v3", "profile", cli.UserID, key}, query)
	_, err := cli.MakeRequest(ctx, http.MethodPut, u, map[string]string{key: value}, nil)
	return err
}

func rename(t *testing.T, cli *mautrix.Client, name string, query map[string]string) {
	t.Helper()
	if err := putProfile(cli, "displayname", name, query); err != nil {
		t.Fatalf("rename %s to %q (%v): %v", cli.UserID, name, query, err)
	}
}

// renameWhile renames cli again and again, one PUT after another, until
// done reports (a failure ends the test) and more(renames written so far)
// is false. next(i) names the i-th rename and its query. It returns the
// names written, in order.
func renameWhile(t *testing.T, cli *mautrix.Client, done <-chan error, next func(i int) (string, map[string]string), more func(written int) bool) []string {
	t.Helper()
	var names []string
	for finished := false; !finished || more(len(names)); {
		name, query := next(len(names))
		rename(t, cli, name, query)
		names = append(names, name)
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			finished = true
		default:
		}
	}
	return names
}

// member reads user's member content in room as reader.
func member(t *testing.T, reader *mautrix.Client, room id.RoomID, user id.UserID) map[string]any {
	t.Helper()
	c, err := memberContent(reader, room, user)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func memberContent(reader *mautrix.Client, room id.RoomID, user id.UserID) (map[string]any, error) {
	var c map[string]any
	if err := reader.StateEvent(ctx, room, event.StateMember, user.String(), &c); err != nil {
		return nil, fmt.Errorf("member state of %s in %s: %w", user, room, err)
	}
	return c, nil
}

// memberHistory is user's member events in room, oldest first, as reader
// reads the timeline.
func memberHistory(t *testing.T, reader *mautrix.Client, room id.RoomID, user id.UserID) []*event.Event {
	t.Helper()
	resp, err := reader.Messages(ctx, room, "", "", mautrix.DirectionBackward, nil, 1000)
	if err != nil {
		t.Fatalf("messages of %s: %v", room, err)
	}
	var out []*event.Event
	for _, ev := range resp.Chunk {
		if ev.Type.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == user.String() {
			out = append(out, ev)
		}
	}
	slices.Reverse(out)
	return out
}

func globalProfile(t *testing.T, cli *mautrix.Client, user id.UserID) *mautrix.RespUserProfile {
	t.Helper()
	p, err := cli.GetProfile(ctx, user)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkNames fails unless every room shows want as user's displayname.
func checkNames(t *testing.T, reader *mautrix.Client, rooms []id.RoomID, user id.UserID, want string) {
	t.Helper()
	var mu sync.Mutex
	wrong := 0
	var first string
	parallel(t, len(rooms), 16, func(i int) error {
		c, err := memberContent(reader, rooms[i], user)
		if err != nil {
			return err
		}
		if c["displayname"] != want || c["membership"] != "join" {
			mu.Lock()
			if wrong == 0 {
				first = fmt.Sprintf("%s: %v", rooms[i], c)
			}
			wrong++
			mu.Unlock()
		}
		return nil
	})
	if wrong > 0 {
		t.Fatalf("%d of %d rooms do not show %q for %s; first: %s", wrong, len(rooms), want, user, first)
	}
}

func TestRenameReaches1And50And1000Rooms(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	for _, count := range []int{1, 50, 1000} {
		cli := n.Register(fmt.Sprintf("rooms%d", count))
		rooms := createRooms(t, cli, count)
		checkNames(t, cli, rooms, cli.UserID, cli.UserID.Localpart())
		start := time.Now()
		rename(t, cli, fmt.Sprintf("Renamed in %d rooms", count), nil)
		waitPropagated(t, n, cli.UserID)
		t.Logf("%d rooms: propagated in %v", count, time.Since(start))
		checkNames(t, cli, rooms, cli.UserID, fmt.Sprintf("Renamed in %d rooms", count))
	}
}

func TestQuickRenamesEndWithTheLastAndNeverGoBack(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 30)
	order := []string{"alice", "First", "Second", "Third"}
	for _, name := range order[1:] {
		rename(t, alice, name, nil)
	}
	waitPropagated(t, n, alice.UserID)
	checkNames(t, alice, rooms, alice.UserID, "Third")
	for _, room := range rooms {
		var names []string
		for _, ev := range memberHistory(t, alice, room, alice.UserID) {
			name, _ := ev.Content.Raw["displayname"].(string)
			names = append(names, name)
		}
		last := -1
		for i, name := range names {
			at := slices.Index(order, name)
			if at < 0 || at <= last {
				t.Fatalf("room %s: member event %d has %q after %q; names in timeline: %q", room, i, name, order[max(last, 0)], names)
			}
			last = at
		}
		if len(names) == 0 || names[len(names)-1] != "Third" {
			t.Fatalf("room %s: timeline names %q do not end with the last", room, names)
		}
	}
}

func TestOtherMemberSeesRenameInSync(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := n.Register("alice"), n.Register("bob")
	room := createRooms(t, alice, 1)[0]
	join(t, bob, room)
	initial, err := bob.SyncRequest(ctx, 0, "", "", false, "")
	if err != nil {
		t.Fatal(err)
	}
	if initial.Rooms.Join[room] == nil {
		t.Fatalf("bob's initial sync lacks %s", room)
	}
	rename(t, alice, "Alice Renamed", nil)

	since := initial.NextBatch
	var sawMember, sawPresence bool
	deadline := time.Now().Add(15 * time.Second)
	for !(sawMember && sawPresence) && time.Now().Before(deadline) {
		resp, err := bob.SyncRequest(ctx, 10000, since, "", false, "")
		if err != nil {
			t.Fatal(err)
		}
		since = resp.NextBatch
		if jr := resp.Rooms.Join[room]; jr != nil {
			for _, ev := range jr.Timeline.Events {
				if ev.Type.Type == "m.room.member" && ev.StateKey != nil && *ev.StateKey == alice.UserID.String() {
					if ev.Content.Raw["displayname"] != "Alice Renamed" || ev.Content.Raw["membership"] != "join" {
						t.Fatalf("alice's member event in bob's sync: %v", ev.Content.Raw)
					}
					sawMember = true
				}
			}
		}
		for _, ev := range resp.Presence.Events {
			if ev.Type.Type == "m.presence" && ev.Sender == alice.UserID && ev.Content.Raw["displayname"] == "Alice Renamed" {
				sawPresence = true
			}
		}
	}
	if !sawMember {
		t.Error("bob's incremental syncs never showed alice's new member event")
	}
	if !sawPresence {
		t.Error("bob's incremental syncs never showed an m.presence event with alice's new displayname")
	}
}

func TestLateJoinerSeesRenamedMember(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	room := createRooms(t, alice, 1)[0]
	rename(t, alice, "Alice Before Carol", nil)
	waitPropagated(t, n, alice.UserID)

	carol := n.Register("carol")
	rename(t, carol, "Carol Current", nil)
	join(t, carol, room)
	if c := member(t, carol, room, alice.UserID); c["displayname"] != "Alice Before Carol" {
		t.Fatalf("carol sees alice as %v", c)
	}
	if c := member(t, carol, room, carol.UserID); c["displayname"] != "Carol Current" || c["membership"] != "join" {
		t.Fatalf("carol's own member state: %v", c)
	}
	hist := memberHistory(t, carol, room, carol.UserID)
	if len(hist) != 1 || hist[0].Content.Raw["displayname"] != "Carol Current" || hist[0].Content.Raw["membership"] != "join" {
		var got []map[string]any
		for _, ev := range hist {
			got = append(got, ev.Content.Raw)
		}
		t.Fatalf("carol's member events: %v", got)
	}
}

func TestLeftRoomsAreUntouched(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := n.Register("alice"), n.Register("bob")
	rooms := createRooms(t, alice, 2)
	left, kept := rooms[0], rooms[1]
	join(t, bob, rooms...) // bob stays, to read what happens after alice leaves
	if _, err := alice.LeaveRoom(ctx, left); err != nil {
		t.Fatal(err)
	}
	waitNotJoined(t, alice, left)
	rename(t, alice, "Alice After Leaving", nil)
	waitPropagated(t, n, alice.UserID)

	if c := member(t, bob, left, alice.UserID); c["membership"] != "leave" || c["displayname"] != nil {
		t.Fatalf("alice's member state in the room she left: %v", c)
	}
	hist := memberHistory(t, bob, left, alice.UserID)
	if len(hist) == 0 || hist[len(hist)-1].Content.Raw["membership"] != "leave" {
		t.Fatalf("latest alice member event in the left room is not the leave: %d events", len(hist))
	}
	for _, ev := range hist {
		if ev.Content.Raw["displayname"] == "Alice After Leaving" {
			t.Fatalf("the left room got the rename: %v", ev.Content.Raw)
		}
	}
	if c := member(t, bob, kept, alice.UserID); c["displayname"] != "Alice After Leaving" || c["membership"] != "join" {
		t.Fatalf("alice's member state in the room she kept: %v", c)
	}
}

func TestConcurrentRenamesConverge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice := n.Register("alice")
	rooms := createRooms(t, alice, 10)
	parallel(t, 20, 20, func(i int) error {
		return putProfile(alice, "displayname", fmt.Sprintf("Concurrent %02d", i), nil)
	})
	waitPropagated(t, n, alice.UserID)
	final := globalProfile(t, alice, alice.UserID).DisplayName
	if len(final) != len("Concurrent 00") {
		t.Fatalf("global displayname after concurrent renames: %q", final)
	}
	checkNames(t, alice, rooms, alice.UserID, final)
}

// TestKicksRacingRenamesLeaveKickedRoomsAlone: while bob renames again and
// again, alice kicks him from half of his rooms. No kicked room gets a
// member event for bob after the kick, and every other room ends with the
// last name.
func TestKicksRacingRenamesLeaveKickedRoomsAlone(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	alice, bob := n.Register("alice"), n.Register("bob")
	rooms := createRooms(t, alice, 20)
	join(t, bob, rooms...)
	kicked, kept := rooms[:10], rooms[10:]
	done := make(chan error, 1)
	go func() {
		for _, r := range kicked {
			if _, err := alice.KickUser(ctx, r, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "race"}); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	names := renameWhile(t, bob, done, func(i int) (string, map[string]string) { return fmt.Sprintf("Bob %d", i), nil },
		func(written int) bool { return written < 5 })
	waitPropagated(t, n, bob.UserID)
	checkNames(t, alice, kept, bob.UserID, names[len(names)-1])
	for _, room := range kicked {
		hist := memberHistory(t, alice, room, bob.UserID)
		if len(hist) == 0 || hist[len(hist)-1].Content.Raw["membership"] != "leave" {
			var got []map[string]any
			for _, ev := range hist {
				got = append(got, ev.Content.Raw)
			}
			t.Fatalf("room %s: bob's member events after the kick: %v", room, got)
		}
	}
}
