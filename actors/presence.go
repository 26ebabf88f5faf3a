package actors

import (
	"sync"
	"time"
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
}

// presences is the node's in-memory presence table. Presence is ephemeral
// (the spec lets servers forget it); profile fields are refreshed on every
// profile change.
type presences struct {
	mu    sync.Mutex
	users map[string]*Presence
}

// SetPresence records a user's presence state and status message.
func (h *Host) SetPresence(user, state string, statusMsg *string) error {
	return h.updatePresence(user, func(p *Presence) {
		p.Presence, p.StatusMsg = state, statusMsg
		p.LastActive, p.CurrentlyActive = time.Now(), state == "online"
	})
}

// profilePresence records a profile change in the user's presence.
func (h *Host) profilePresence(user, displayname, avatarURL string) error {
	return h.updatePresence(user, func(p *Presence) {
		p.Displayname, p.AvatarURL = displayname, avatarURL
	})
}

func (h *Host) updatePresence(user string, change func(*Presence)) error {
	pos, err := h.stream.take()
	if err != nil {
		return err
	}
	h.presence.mu.Lock()
	p := h.presence.users[user]
	if p == nil {
		p = &Presence{UserID: user, Presence: "offline"}
		h.presence.users[user] = p
	}
	change(p)
	p.Stream = pos
	h.presence.mu.Unlock()
	h.stream.done([]uint64{pos}, nil)
	return nil
}

// PresenceOf returns the presence of each user that changed after since.
func (h *Host) PresenceOf(users []string, since uint64) []Presence {
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
func (h *Host) PresenceChangedSince(since uint64) []string {
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
func (h *Host) GetPresence(user string) Presence {
	h.presence.mu.Lock()
	defer h.presence.mu.Unlock()
	if p := h.presence.users[user]; p != nil {
		return *p
	}
	return Presence{UserID: user, Presence: "offline"}
}
