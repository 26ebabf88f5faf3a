package actors

import (
	"sync"
	"time"

	"persona/wire"
)

// Presence is one user's presence as /sync shows it (m.presence content),
// with the profile fields the spec asks for on a profile change.
type Presence struct {
	UserID          string
	Presence        string // online | offline | unavailable
	StatusMsg       *string
	Displayname     string
	AvatarURL       string
	LastActive      time.Time
	CurrentlyActive bool
	Stream          uint64 // position of the last change

	syncs int       // its /sync requests in progress through this node
	seen  time.Time // when its last /sync ended, or it set its presence
	here  bool      // it syncs or set its presence through this node: the node decides its timeout
	at    uint64    // the position, on the node it changed on, of its last presence change
	// expired: its last presence change is an offline the timeout decided
	expired bool
}

// presences is the node's in-memory presence table. Presence is ephemeral
// (the spec lets servers forget it); profile fields are refreshed on every
// profile change.
type presences struct {
	mu    sync.Mutex
	users map[string]*Presence
	last  uint64 // the last presence position handed out
	// tell broadcasts a change to the other nodes; nil without a cluster.
	tell func(*wire.PresenceChange)
	// tellNode sends a catch-up to the node at an actor address; nil
	// without a cluster.
	tellNode func(addr string, m *wire.PresenceCatchUp)
}

// SetPresence records a user's presence state and status message.
func (h *Service) SetPresence(user, state string, statusMsg *string) error {
	return h.updatePresence(user, toldState, func(p *Presence) {
		p.Presence, p.StatusMsg = state, statusMsg
		p.LastActive, p.CurrentlyActive = time.Now(), state == "online"
		p.seen, p.here = p.LastActive, true
	})
}

// Syncing records that user started a /sync with set_presence state (""
// when the request named none) and returns the function that records its
// end. As the spec asks, a /sync marks an offline user online unless it
// says "offline" (then nothing changes) or "unavailable". A user with no
// /sync in progress for Options.PresenceTimeout goes offline.
func (h *Service) Syncing(user, state string) (done func(), err error) {
	h.presence.mu.Lock()
	p := h.presence.user(user)
	p.syncs++
	p.here = true
	switch {
	case state == "offline": // "not marked online": nothing changes
		state = ""
	case state == "" && p.Presence == "offline":
		state = "online"
	case state == "":
		state = p.Presence // online stays online, unavailable unavailable
	}
	if state != "" {
		p.LastActive, p.CurrentlyActive = time.Now(), state == "online"
	}
	changed := state != "" && state != p.Presence
	h.presence.mu.Unlock()
	done = func() {
		h.presence.mu.Lock()
		p.syncs--
		p.seen = time.Now()
		h.presence.mu.Unlock()
	}
	if changed {
		if err := h.updatePresence(user, toldState, func(p *Presence) { p.Presence = state }); err != nil {
			done()
			return nil, err
		}
	}
	return done, nil
}

// expirePresence marks offline, until stop is closed, every user who is not
// and has had no /sync in progress through this node for timeout
// (Options.PresenceTimeout), and tells the other nodes. A user whose
// presence this node only heard of is left to the nodes it syncs through.
func (h *Service) expirePresence(stop <-chan struct{}, timeout time.Duration) {
	t := time.NewTicker(timeout / 6)
	defer t.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-t.C:
			var gone []string
			h.presence.mu.Lock()
			for u, p := range h.presence.users {
				if expired(p, now, timeout) {
					gone = append(gone, u)
				}
			}
			h.presence.mu.Unlock()
			for _, u := range gone {
				h.expire(u, now, timeout)
			}
		}
	}
}

// expired reports whether p is due to go offline at now; presence.mu is held.
func expired(p *Presence, now time.Time, timeout time.Duration) bool {
	return p.here && p.Presence != "offline" && p.syncs == 0 && now.Sub(p.seen) > timeout
}

// expire marks user offline if it is still due to (no /sync began meanwhile).
func (h *Service) expire(user string, now time.Time, timeout time.Duration) {
	h.presence.mu.Lock()
	p := h.presence.users[user]
	if p == nil || !expired(p, now, timeout) {
		h.presence.mu.Unlock()
		return
	}
	p.Presence, p.CurrentlyActive = "offline", false
	m := h.presence.changed(p, toldExpired)
	h.presence.mu.Unlock()
	h.publishPresence(m)
}

// profilePresence records a profile change in the user's presence.
func (h *Service) profilePresence(user, displayname, avatarURL string) error {
	return h.updatePresence(user, toldProfile, func(p *Presence) {
		p.Displayname, p.AvatarURL = displayname, avatarURL
	})
}

// updatePresence applies change to user's presence, gives it the next
// position, wakes the node's /syncs and tells the other nodes (told says
// what changed).
func (h *Service) updatePresence(user string, told presenceTold, change func(*Presence)) error {
	h.presence.mu.Lock()
	p := h.presence.user(user)
	change(p)
	m := h.presence.changed(p, told)
	h.presence.mu.Unlock()
	h.publishPresence(m)
	return nil
}

// user returns user's entry, made offline if there was none; mu is held.
func (ps *presences) user(user string) *Presence {
	p := ps.users[user]
	if p == nil {
		p = &Presence{UserID: user, Presence: "offline"}
		ps.users[user] = p
	}
	return p
}

// tick returns the next presence position: the time in microseconds, or
// one above the last position if the clock has not passed it. Positions
// rise across restarts, and the positions of two nodes are comparable,
// so that a token from one node means about the same time on another;
// presence.mu is held.
func (ps *presences) tick() uint64 {
	ps.last = max(ps.last+1, uint64(time.Now().UnixMicro()))
	return ps.last
}

// PresencePosition is the node's presence position: every presence change
// at or below it is seen.
func (h *Service) PresencePosition() uint64 {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	return h.presence.last
}

// PresenceOf returns the presence of each user that changed after since.
func (h *Service) PresenceOf(users []string, since uint64) []Presence {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	var out []Presence
	for _, u := range users {
		if p := h.presence.users[u]; p != nil && p.Stream > since {
			out = append(out, *p)
		}
	}
	return out
}

// PresenceChangedSince lists the users whose presence changed after the
// /sync position since.
func (h *Service) PresenceChangedSince(since uint64) []string {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	var out []string
	for u, p := range h.presence.users {
		if p.Stream > since {
			out = append(out, u)
		}
	}
	return out
}

// GetPresence returns a user's presence (offline when unknown).
func (h *Service) GetPresence(user string) Presence {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	if p := h.presence.users[user]; p != nil {
		return *p
	}
	return Presence{UserID: user, Presence: "offline"}
}
