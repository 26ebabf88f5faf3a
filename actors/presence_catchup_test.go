package actors

import (
	"fmt"
	"testing"
	"time"

	"persona/config"
	"persona/wire"
)

// TestCatchUpPresence: a catch-up tells, in batches, the last change of
// each user whose presence the node decides, with its stamp, and no
// other; a node that takes it keeps whatever newer it holds, and one it
// already holds gives no new position.
func TestCatchUpPresence(t *testing.T) {
	t.Parallel()
	a, sta := newHostOpts(t, t.TempDir(), config.Default(), Options{})
	defer sta.Close()
	defer a.Stop()
	b, stb := newHostOpts(t, t.TempDir(), config.Default(), Options{})
	defer stb.Close()
	defer b.Stop()
	var told []*wire.PresenceCatchUp
	a.presence.mu.Lock()
	a.presence.tell = func(*wire.PresenceChange) {}
	a.presence.tellNode = func(addr string, m *wire.PresenceCatchUp) {
		if addr != "b" {
			t.Errorf("told %s, want b", addr)
		}
		told = append(told, m)
	}
	a.presence.mu.Unlock()
	const set, syncs, heard, moved, newer = "@set:" + server, "@syncs:" + server, "@heard:" + server, "@moved:" + server, "@newer:" + server
	later := func() uint64 { return uint64(time.Now().Add(time.Hour).UnixMicro()) }

	status := "away"
	if err := a.SetPresence(set, "unavailable", &status); err != nil {
		t.Fatal(err)
	}
	done, err := a.Syncing(syncs, "")
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	if err := a.SetPresence(newer, "online", nil); err != nil {
		t.Fatal(err)
	}
	a.heardPresence(&wire.PresenceChange{User: heard, At: later(), Presence: "online"}) // decided elsewhere
	if err := a.SetPresence(moved, "online", nil); err != nil {
		t.Fatal(err)
	}
	a.heardPresence(&wire.PresenceChange{User: moved, At: later(), Presence: "unavailable"}) // now decided elsewhere
	for i := range catchUpBatch {
		if err := a.SetPresence(fmt.Sprintf("@u%d:%s", i, server), "online", nil); err != nil {
			t.Fatal(err)
		}
	}

	// b heard a change of newer's that a missed.
	b.heardPresence(&wire.PresenceChange{User: newer, At: later(), Presence: "unavailable"})

	a.CatchUpPresence("b")
	if len(told) != 2 || len(told[0].Changes) != catchUpBatch {
		t.Fatalf("told %d catch-ups, the first of %d changes; want 2, the first of %d", len(told), len(told[0].Changes), catchUpBatch)
	}
	users := map[string]*wire.PresenceChange{}
	for _, m := range told {
		for _, c := range m.Changes {
			users[c.User] = c
		}
	}
	if len(users) != catchUpBatch+3 {
		t.Fatalf("told %d users, want %d", len(users), catchUpBatch+3)
	}
	for _, u := range []string{heard, moved} {
		if users[u] != nil {
			t.Fatalf("told %s, whose presence another node decides", u)
		}
	}
	a.presence.mu.Lock()
	at := a.presence.users[set].at
	a.presence.mu.Unlock()
	if c := users[set]; c == nil || c.Presence != "unavailable" || c.StatusMsg == nil || *c.StatusMsg != status || c.At != at {
		t.Fatalf("told %s: %+v, want unavailable, %q, its stamp", set, c, status)
	}

	before := b.PresencePosition()
	for _, m := range told {
		b.heardCatchUp(m)
	}
	p := b.GetPresence(set)
	if p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != status || p.Stream <= before {
		t.Fatalf("%s after the catch-up: %+v, want unavailable, %q, a position above %d", set, p, status, before)
	}
	if got := b.GetPresence(syncs).Presence; got != "online" {
		t.Fatalf("%s after the catch-up: %s, want online", syncs, got)
	}
	if got := b.GetPresence(newer).Presence; got != "unavailable" {
		t.Fatalf("%s after a catch-up older than what b holds: %s, want unavailable", newer, got)
	}

	for _, m := range told { // told again: nothing moves
		b.heardCatchUp(m)
	}
	if q := b.GetPresence(set); q.Stream != p.Stream || q.Presence != "unavailable" {
		t.Fatalf("%s after the same catch-up again: %+v, want it unchanged at %d", set, q, p.Stream)
	}
}

// TestCatchUpWithoutCluster: without a cluster a catch-up tells nothing.
func TestCatchUpWithoutCluster(t *testing.T) {
	t.Parallel()
	h, st := newHostOpts(t, t.TempDir(), config.Default(), Options{})
	defer st.Close()
	defer h.Stop()
	if err := h.SetPresence("@x:"+server, "online", nil); err != nil {
		t.Fatal(err)
	}
	h.CatchUpPresence("elsewhere") // tellNode is nil: must not panic or block
}
