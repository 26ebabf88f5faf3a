package actors

import (
	"time"

	"persona/wire"
)

// presenceTold is what a presence change tells the other nodes.
type presenceTold int

const (
	toldState   presenceTold = iota // presence, status message, activity
	toldProfile                     // displayname and avatar URL
	toldExpired                     // offline, for no /sync through this node in the timeout
)

// changed gives p's change the next position of this node (and, unless
// it is a profile change, a stamp newer than every change of p known
// here) and returns what to tell the other nodes: nil without a cluster.
// mu is held.
func (ps *presences) changed(p *Presence, told presenceTold) *wire.PresenceChange {
	p.Stream = ps.tick()
	if told != toldProfile {
		p.at = max(p.Stream, p.at+1)
	}
	if ps.tell == nil {
		return nil
	}
	m := &wire.PresenceChange{User: p.UserID, At: p.at}
	if told == toldProfile {
		m.Profile, m.Displayname, m.AvatarUrl = true, p.Displayname, p.AvatarURL
		return m
	}
	m.Presence, m.StatusMsg, m.CurrentlyActive, m.Expired = p.Presence, p.StatusMsg, p.CurrentlyActive, told == toldExpired
	if !p.LastActive.IsZero() {
		m.LastActive = p.LastActive.UnixMilli()
	}
	return m
}

// publishPresence wakes the node's /syncs for a change and tells m, if
// any, to the other nodes.
func (h *Service) publishPresence(m *wire.PresenceChange) {
	h.stream.wakeAll()
	if m != nil {
		h.presence.tell(m)
	}
}

// heardPresence takes a change another node told: a profile change
// always, a presence change if it is newer than what this node holds.
// It gets this node's next position, so the node's /sync tokens stay its
// own. A presence change heard leaves the user's timeout to the nodes it
// syncs through, unless it has a /sync in progress here. An offline
// decided by another node's timeout is refused while the user still
// syncs through this one, which tells its own presence again instead.
func (h *Service) heardPresence(m *wire.PresenceChange) {
	h.presence.mu.Lock()
	p := h.presence.user(m.User)
	switch {
	case m.Profile:
		p.Displayname, p.AvatarURL = m.Displayname, m.AvatarUrl
		p.Stream = h.presence.tick()
	case m.At <= p.at:
		h.presence.mu.Unlock()
		return
	case m.Expired && p.Presence != "offline" && (p.syncs > 0 || p.here && time.Since(p.seen) <= h.opts.PresenceTimeout):
		p.at = m.At
		again := h.presence.changed(p, toldState)
		h.presence.mu.Unlock()
		h.publishPresence(again)
		return
	default:
		p.Presence, p.StatusMsg, p.CurrentlyActive, p.at = m.Presence, m.StatusMsg, m.CurrentlyActive, m.At
		p.LastActive = time.Time{}
		if m.LastActive != 0 {
			p.LastActive = time.UnixMilli(m.LastActive)
		}
		p.here = p.here && p.syncs > 0
		p.Stream = h.presence.tick()
	}
	h.presence.mu.Unlock()
	h.stream.wakeAll()
}
