package actors

import (
	"testing"
	"time"

	"persona/config"
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
