package main

import (
	"context"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
)

// TestClusterPresenceToRestartedNode starts three `persona serve`
// processes with cluster.enabled. Alice sets her presence and status
// through n1 and keeps a /sync going there; n3 is stopped (SIGTERM) and
// started again on its data. Once back, n3 is told the presence n1
// decides: GET /presence through n3 shows hers within presenceBound of
// its restart, with no change of hers meanwhile.
func TestClusterPresenceToRestartedNode(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three nodes")
	}
	procs, _ := newClusterOfProcesses(t, 3)
	n1, n3 := procs[0], procs[2]
	startReady(t, procs, 20*time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	alice, as := userOwnedBy(t, ctx, procs, "present", n1.name, n1)

	const status = "back after lunch"
	if err := as[n1.name].SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: status}); err != nil {
		t.Fatalf("set presence through n1: %v", err)
	}
	syncing := make(chan struct{})
	go func() { // her /syncs through n1 keep her from timing out there
		defer close(syncing)
		since := ""
		for ctx.Err() == nil {
			resp, err := as[n1.name].SyncRequest(ctx, 5000, since, "", false, event.PresenceUnavailable)
			if err != nil {
				time.Sleep(100 * time.Millisecond)
				continue
			}
			since = resp.NextBatch
		}
	}()
	defer func() { cancel(); <-syncing }()

	if err := n3.child.terminate(20 * time.Second); err != nil {
		t.Fatalf("n3 after SIGTERM: %v", err)
	}
	n3.start(t)
	for _, p := range procs {
		waitView(t, p, procs, "n3 back, all three alive and ready", 20*time.Second, allReady(procs))
	}
	back := time.Now()
	for {
		got, err := as[n3.name].GetPresence(ctx, alice)
		if err != nil {
			t.Fatalf("get %s's presence through n3: %v", alice, err)
		}
		if got.Presence == event.PresenceUnavailable && got.StatusMsg == status {
			t.Logf("through the restarted n3 %s after it was ready", time.Since(back).Round(time.Millisecond))
			return
		}
		if time.Since(back) > presenceBound {
			t.Fatalf("%s's presence through the restarted n3 %s after it was ready: %+v, want unavailable, %q", alice, presenceBound, got, status)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
