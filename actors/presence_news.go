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
		p.expired = told == toldExpired
	}
	if ps.tell == nil {
		return nil
	}
	if told == toldProfile {
		return &wire.PresenceChange{User: p.UserID, At: p.at, Profile: true, Displayname: p.Displayname, AvatarUrl: p.AvatarURL}
	}
	return stateChange(p)
}

// stateChange is p's last presence change as it is told, with its stamp;
// presence.mu is held.
func stateChange(p *Presence) *wire.PresenceChange {
	m := &wire.PresenceChange{User: p.UserID, At: p.at, Presence: p.Presence, StatusMsg: p.StatusMsg,
		CurrentlyActive: p.CurrentlyActive, Expired: p.expired}
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
		p.Presence, p.StatusMsg, p.CurrentlyActive, p.at, p.expired = m.Presence, m.StatusMsg, m.CurrentlyActive, m.At, m.Expired
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

// catchUpBatch is how many users' presence one PresenceCatchUp carries.
const catchUpBatch = 500

// CatchUpPresence tells the node at addr (an actor address) the presence
// of every user whose presence this node decides: each with a /sync in
// progress or ended here, or that set its presence here, and whose
// change was not since taken over by a newer one heard from another node.
// Each goes as its last change, with that change's stamp, so the node
// keeps whatever newer it holds. The nodes call it for a member that came
// (back) into the cluster: it missed the changes told while it was away.
// Without a cluster it does nothing.
func (h *Service) CatchUpPresence(addr string) {
	if h.presence.tellNode == nil {
		return
	}
	var batches []*wire.PresenceCatchUp
	h.presence.mu.Lock()
	m := &wire.PresenceCatchUp{}
	for _, p := range h.presence.users {
		if !p.here || p.at == 0 {
			continue
		}
		if len(m.Changes) == catchUpBatch {
			batches = append(batches, m)
			m = &wire.PresenceCatchUp{}
		}
		m.Changes = append(m.Changes, stateChange(p))
	}
	h.presence.mu.Unlock()
	if len(m.Changes) > 0 {
		batches = append(batches, m)
	}
	for _, b := range batches {
		h.presence.tellNode(addr, b)
	}
}

// heardCatchUp takes each change of a catch-up another node told.
func (h *Service) heardCatchUp(m *wire.PresenceCatchUp) {
	for _, c := range m.Changes {
		h.heardPresence(c)
	}
}
