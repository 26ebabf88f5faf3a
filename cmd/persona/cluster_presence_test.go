package main

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"
)

// presenceBound is how soon a presence change through one node must show
// through the others: the broadcast takes milliseconds; the slack is for
// a busy machine.
const presenceBound = 10 * time.Second

// TestClusterPresenceThroughAnyNode starts three `persona serve` processes
// with cluster.enabled. Alice sets her presence and status through n1:
// GET /presence through n2 and n3 shows them, and a long poll through n3
// of bob, who shares a room with her, gets her m.presence event.
func TestClusterPresenceThroughAnyNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	procs, _ := newClusterOfProcesses(t, 3)
	n1, n2, n3 := procs[0], procs[1], procs[2]
	startReady(t, procs, 20*time.Second)
	ctx := context.Background()
	alice, as := userOwnedBy(t, ctx, procs, "present", n2.name, n1)
	bob, bs := userOwnedBy(t, ctx, procs, "watcher", n3.name, n1)

	room, err := bs[n1.name].CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat"})
	if err != nil {
		t.Fatalf("create a room: %v", err)
	}
	if _, err := as[n1.name].JoinRoomByID(ctx, room.RoomID); err != nil {
		t.Fatalf("join: %v", err)
	}
	first, err := bs[n3.name].SyncRequest(ctx, 0, "", "", false, event.PresenceOffline)
	if err != nil {
		t.Fatalf("bob's first sync through n3: %v", err)
	}

	const status = "out to lunch"
	sent := time.Now()
	if err := as[n1.name].SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: status}); err != nil {
		t.Fatalf("set presence through n1: %v", err)
	}
	for _, p := range []*clusterProc{n2, n3} {
		for {
			got, err := bs[p.name].GetPresence(ctx, alice)
			if err != nil {
				t.Fatalf("get %s's presence through %s: %v", alice, p.name, err)
			}
			if got.Presence == event.PresenceUnavailable && got.StatusMsg == status {
				t.Logf("through %s after %s", p.name, time.Since(sent).Round(time.Millisecond))
				break
			}
			if time.Since(sent) > presenceBound {
				t.Fatalf("%s's presence through %s after %s: %+v, want unavailable, %q", alice, p.name, presenceBound, got, status)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}

	since := first.NextBatch
	for {
		resp, err := bs[n3.name].SyncRequest(ctx, 5000, since, "", false, event.PresenceOffline)
		if err != nil {
			t.Fatalf("bob's sync through n3: %v", err)
		}
		since = resp.NextBatch
		if hasPresenceOf(resp, alice, event.PresenceUnavailable, status) {
			t.Logf("%s's m.presence in %s's sync through n3 after %s", alice, bob, time.Since(sent).Round(time.Millisecond))
			return
		}
		if time.Since(sent) > presenceBound {
			t.Fatalf("no m.presence of %s, unavailable, in %s's syncs through n3 after %s", alice, bob, presenceBound)
		}
	}
}

// hasPresenceOf reports whether resp holds user's m.presence with state and status.
func hasPresenceOf(resp *mautrix.RespSync, user id.UserID, state event.Presence, status string) bool {
	for _, ev := range resp.Presence.Events {
		if ev.Sender == user && ev.Content.Raw["presence"] == string(state) && ev.Content.Raw["status_msg"] == status {
			return true
		}
	}
	return false
}
