package actors

import (
	"testing"
	"time"

	"persona/config"
	"persona/wire"
)

// TestSyncKeepsUsersOnline: a /sync marks an offline user online unless it
// says otherwise, keeps an unavailable user unavailable, and a user with no
// /sync in progress for PresenceTimeout goes offline, with a new stream
// position so that others see it.
func TestSyncKeepsUsersOnline(t *testing.T) {
	t.Parallel()
	const presenceTimeout = 300 * time.Millisecond
	h, st := newHostOpts(t, t.TempDir(), config.Default(), Options{PresenceTimeout: presenceTimeout})
	defer st.Close()
	defer h.Stop()
	const a, b, c = "@a:" + server, "@b:" + server, "@c:" + server

	done, err := h.Syncing(a, "")
	if err != nil {
		t.Fatal(err)
	}
	p := h.GetPresence(a)
	if p.Presence != "online" || !p.CurrentlyActive || p.Stream == 0 {
		t.Fatalf("during a /sync: %+v, want online, currently active, a stream position", p)
	}
	time.Sleep(3 * presenceTimeout)
	if got := h.GetPresence(a).Presence; got != "online" {
		t.Fatalf("a long /sync in progress: %s, want online", got)
	}
	done()
	waitPresence(t, h, a, "offline")
	if q := h.GetPresence(a); q.Stream <= p.Stream || q.CurrentlyActive {
		t.Fatalf("gone offline: %+v, want a newer stream position than %d, not active", q, p.Stream)
	}

	done, _ = h.Syncing(b, "offline") // "do not mark me online"
	if got := h.GetPresence(b).Presence; got != "offline" {
		t.Fatalf("set_presence=offline: %s, want offline", got)
	}
	done()
	done, _ = h.Syncing(b, "unavailable")
	done()
	done, _ = h.Syncing(b, "") // no set_presence: stays unavailable
	if got := h.GetPresence(b).Presence; got != "unavailable" {
		t.Fatalf("a /sync after unavailable: %s, want unavailable", got)
	}
	done()
	waitPresence(t, h, b, "offline")

	if err := h.SetPresence(c, "online", nil); err != nil { // a client that never syncs
		t.Fatal(err)
	}
	waitPresence(t, h, c, "offline")
}

func waitPresence(t *testing.T, h *Service, user, want string) {
	t.Helper()
	for deadline := time.Now().Add(10 * h.opts.PresenceTimeout); h.GetPresence(user).Presence != want; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s, want %s", user, h.GetPresence(user).Presence, want)
		}
	}
}

// TestHeardPresence: a presence change another node told shows here with
// a position of this node, unless a newer one is known; a user whose
// presence this node only heard of is not timed out here; an offline
// another node's timeout decided is refused while the user syncs through
// this node, which tells its presence again, newer.
func TestHeardPresence(t *testing.T) {
	t.Parallel()
	const presenceTimeout = 300 * time.Millisecond
	h, st := newHostOpts(t, t.TempDir(), config.Default(), Options{PresenceTimeout: presenceTimeout})
	defer st.Close()
	defer h.Stop()
	told := make(chan *wire.PresenceChange, 16)
	h.presence.mu.Lock()
	h.presence.tell = func(m *wire.PresenceChange) { told <- m }
	h.presence.mu.Unlock()
	const d, e, f = "@d:" + server, "@e:" + server, "@f:" + server
	later := func() uint64 { return uint64(time.Now().Add(time.Hour).UnixMicro()) }

	before := h.PresencePosition()
	status := "elsewhere"
	at := later()
	h.heardPresence(&wire.PresenceChange{User: d, At: at, Presence: "unavailable", StatusMsg: &status, LastActive: time.Now().UnixMilli()})
	h.heardPresence(&wire.PresenceChange{User: d, At: at - 1, Presence: "online"}) // older: ignored
	h.heardPresence(&wire.PresenceChange{User: d, Profile: true, Displayname: "Dee"})
	p := h.GetPresence(d)
	if p.Presence != "unavailable" || p.StatusMsg == nil || *p.StatusMsg != status || p.Displayname != "Dee" || p.Stream <= before {
		t.Fatalf("heard: %+v, want unavailable, %q, Dee, a position above %d", p, status, before)
	}
	if err := h.SetPresence(f, "online", nil); err != nil {
		t.Fatal(err)
	}
	h.heardPresence(&wire.PresenceChange{User: f, At: later(), Presence: "online"}) // f moved to another node
	time.Sleep(3 * presenceTimeout)
	for _, u := range []string{d, f} {
		if got := h.GetPresence(u).Presence; got == "offline" {
			t.Fatalf("%s timed out by a node that only heard of it", u)
		}
	}

	done, err := h.Syncing(e, "")
	if err != nil {
		t.Fatal(err)
	}
	defer done()
	at = later()
	h.heardPresence(&wire.PresenceChange{User: e, At: at, Presence: "offline", Expired: true})
	if got := h.GetPresence(e).Presence; got != "online" {
		t.Fatalf("an offline by another node's timeout, during a /sync here: %s, want online", got)
	}
	for {
		select {
		case m := <-told:
			if m.User != e || m.At <= at {
				continue // told before
			}
			if m.Presence != "online" || m.Expired {
				t.Fatalf("told again: %+v, want online", m)
			}
			return
		default:
			t.Fatalf("%s's presence not told again above %d", e, at)
		}
	}
}
