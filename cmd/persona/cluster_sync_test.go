package main

import (
	"context"
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
)

// syncFilter asks for long timelines, so that no sync of these tests is
// limited: every event since the token is in it.
const syncFilter = `{"room":{"timeline":{"limit":500}}}`

// syncSeen is what a user's syncs showed: each message body as often as it
// came, and the rooms invited to and joined.
type syncSeen struct {
	bodies  map[string]int
	invited map[id.RoomID]bool
	joined  map[id.RoomID]bool
	limited bool
}

func newSyncSeen() *syncSeen {
	return &syncSeen{bodies: map[string]int{}, invited: map[id.RoomID]bool{}, joined: map[id.RoomID]bool{}}
}

// add records one sync's answer.
func (s *syncSeen) add(resp *mautrix.RespSync, user id.UserID) {
	for room := range resp.Rooms.Invite {
		s.invited[room] = true
	}
	for room, jr := range resp.Rooms.Join {
		s.limited = s.limited || jr.Timeline.Limited
		for _, ev := range jr.Timeline.Events {
			switch {
			case ev.Type == event.EventMessage:
				if body, ok := ev.Content.Raw["body"].(string); ok {
					s.bodies[body]++
				}
			case ev.Type == event.StateMember && ev.StateKey != nil && *ev.StateKey == string(user) && ev.Content.Raw["membership"] == "join":
				s.joined[room] = true
			}
		}
	}
}

// syncUntil syncs cli from since (long polls) until seen satisfies done,
// recording every answer, and returns the last token and when done turned
// true.
func syncUntil(ctx context.Context, cli *mautrix.Client, since string, seen *syncSeen, limit time.Duration, done func() bool) (string, time.Time, error) {
	deadline := time.Now().Add(limit)
	for {
		resp, err := cli.SyncRequest(ctx, 10000, since, syncFilter, false, "")
		if err != nil {
			return "", time.Time{}, fmt.Errorf("sync as %s since %q: %w", cli.UserID, since, err)
		}
		seen.add(resp, cli.UserID)
		since = resp.NextBatch
		if done() {
			return since, time.Now(), nil
		}
		if time.Now().After(deadline) {
			return "", time.Time{}, fmt.Errorf("sync as %s: not done after %s", cli.UserID, limit)
		}
	}
}

// TestClusterSyncThroughAnyNode starts three `persona serve` processes
// with cluster.enabled. A user owned by n2 syncs through n1 while another
// user invites it to rooms each node owns (two each), it joins through n1,
// and messages are sent in each: every invite, join and message reaches
// the long poll through n1 promptly (latencies logged), n3's rooms' too,
// whose notices to the user's actor go from n3 to n2 while the news go
// from n3 to n1. Then messages
// spread over every room, sent through every node in turn, are read by
// syncs through each node in turn, each from the token the previous node
// gave: every message arrives exactly once. Last, n3 is SIGKILLed; once
// its partitions have new leaders, messages in its rooms still arrive,
// exactly once, to syncs from the tokens given before.
func TestClusterSyncThroughAnyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes and waits for failure detection")
	}
	start := time.Now()
	defer func() { t.Logf("wall time %s", time.Since(start).Round(time.Millisecond)) }()
	procs, _ := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	startReady(t, procs, 20*time.Second)
	ctx := context.Background()
	alice, reader := userOwnedBy(t, ctx, procs, "syncer", n2.name, n1)
	bob, writer := userOwnedBy(t, ctx, procs, "sender", n1.name, n2)

	// Rooms bob creates through each node in turn, until each node owns two.
	byOwner := map[string][]id.RoomID{}
	var rooms []id.RoomID
	for i := 0; len(byOwner[n1.name]) < 2 || len(byOwner[n2.name]) < 2 || len(byOwner[n3.name]) < 2; i++ {
		if i == 100 {
			t.Fatalf("100 rooms and still not two owned by each node: %v", byOwner)
		}
		resp, err := writer[procs[i%3].name].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "sync " + strconv.Itoa(i)})
		if err != nil {
			t.Fatalf("create a room: %v", err)
		}
		if owner := ownerOf(string(resp.RoomID), procs); len(byOwner[owner]) < 2 {
			byOwner[owner] = append(byOwner[owner], resp.RoomID)
			rooms = append(rooms, resp.RoomID)
		}
	}
	t.Logf("%s owned by n2, %s by n1; rooms by owner %v", alice, bob, byOwner)

	// Invites, joins and messages, one room at a time, each awaited by a
	// long poll through n1 that began before it was sent.
	seen := newSyncSeen()
	since, _, err := syncUntil(ctx, reader[n1.name], "", seen, 10*time.Second, func() bool { return true })
	if err != nil {
		t.Fatal(err)
	}
	var latencies []time.Duration
	step := func(what string, act func() error, done func() bool) {
		t.Helper()
		type result struct {
			since string
			at    time.Time
			err   error
		}
		got := make(chan result, 1)
		go func() {
			s, at, err := syncUntil(ctx, reader[n1.name], since, seen, 20*time.Second, done)
			got <- result{s, at, err}
		}()
		time.Sleep(50 * time.Millisecond) // the long poll is waiting
		sent := time.Now()
		if err := act(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		r := <-got
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		since = r.since
		latencies = append(latencies, r.at.Sub(sent))
		t.Logf("%s: in the sync through n1 %s after it was sent", what, r.at.Sub(sent).Round(time.Millisecond))
	}
	for _, room := range rooms {
		owner := ownerOf(string(room), procs)
		via := writer[owner]
		step(fmt.Sprintf("invite to %s (owned by %s)", room, owner), func() error {
			_, err := via.InviteUser(ctx, room, &mautrix.ReqInviteUser{UserID: alice})
			return err
		}, func() bool { return seen.invited[room] })
		step(fmt.Sprintf("join %s (owned by %s) through n1", room, owner), func() error {
			_, err := reader[n1.name].JoinRoomByID(ctx, room)
			return err
		}, func() bool { return seen.joined[room] })
		body := "hello " + string(room)
		step(fmt.Sprintf("message in %s (owned by %s)", room, owner), func() error {
			_, err := via.SendText(ctx, room, body)
			return err
		}, func() bool { return seen.bodies[body] > 0 })
	}
	slices.Sort(latencies)
	t.Logf("latency of %d events through n1: median %s, max %s", len(latencies),
		latencies[len(latencies)/2].Round(time.Millisecond), latencies[len(latencies)-1].Round(time.Millisecond))

	// Exactly once: messages spread over every room, sent through every
	// node, read by syncs through each node in turn.
	const n = 120
	exactlyOnce := func(prefix string, rooms []id.RoomID, senders []string, readers []string) {
		t.Helper()
		var wg sync.WaitGroup
		errs := make(chan error, n)
		wg.Go(func() {
			for i := range n {
				body := prefix + strconv.Itoa(i)
				room, via := rooms[i%len(rooms)], writer[senders[i/len(rooms)%len(senders)]]
				if _, err := via.SendText(ctx, room, body); err != nil {
					errs <- fmt.Errorf("send %s to %s: %w", body, room, err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		})
		got := newSyncSeen()
		all := func() bool {
			for i := range n {
				if got.bodies[prefix+strconv.Itoa(i)] == 0 {
					return false
				}
			}
			return true
		}
		syncs := 0
		deadline := time.Now().Add(60 * time.Second)
		for !all() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: after %d syncs, %d of %d messages arrived", prefix, syncs, len(got.bodies), n)
			}
			cli := reader[readers[syncs%len(readers)]]
			resp, err := cli.SyncRequest(ctx, 1000, since, syncFilter, false, "")
			if err != nil {
				t.Fatalf("sync through %s since %q: %v", readers[syncs%len(readers)], since, err)
			}
			got.add(resp, alice)
			since = resp.NextBatch
			syncs++
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		// One more sync through each node: nothing comes again.
		for _, r := range readers {
			resp, err := reader[r].SyncRequest(ctx, 0, since, syncFilter, false, "")
			if err != nil {
				t.Fatalf("sync through %s: %v", r, err)
			}
			got.add(resp, alice)
			since = resp.NextBatch
		}
		for body, c := range got.bodies {
			if strings.HasPrefix(body, prefix) && c != 1 {
				t.Errorf("%s arrived %d times", body, c)
			}
		}
		if got.limited {
			t.Errorf("%s: a timeline was limited", prefix)
		}
		t.Logf("%s: %d messages in %d rooms, each once, in %d syncs through %v", prefix, n, len(rooms), syncs, readers)
	}
	names := []string{n1.name, n2.name, n3.name}
	exactlyOnce("spread ", rooms, names, names)

	// n3 SIGKILLed: its partitions get new leaders, which go on above the
	// positions n3 handed out, so the tokens stay valid.
	phase := time.Now()
	n3.child.kill()
	for _, p := range []*clusterProc{n1, n2} {
		waitView(t, p, procs, "n3 dead", deadBound, func(ms map[string]clusterMember) bool { return ms["n3"].State == "dead" })
	}
	for _, p := range []string{n1.name, n2.name} {
		writer[p].Client.Timeout = 2 * time.Second
		reader[p].Client.Timeout = 15 * time.Second
	}
	for _, room := range byOwner[n3.name] {
		for {
			if _, err := writer[n1.name].SendText(ctx, room, "after n3"); err == nil {
				break
			} else if time.Since(phase) > 60*time.Second {
				t.Fatalf("%s not writable %s after n3's SIGKILL: %v", room, time.Since(phase), err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("n3's rooms writable again %s after its SIGKILL", time.Since(phase).Round(time.Millisecond))
	for _, p := range []string{n1.name, n2.name} {
		writer[p].Client.Timeout = 30 * time.Second
	}
	exactlyOnce("failover ", rooms, []string{n1.name, n2.name}, []string{n1.name, n2.name})
}
