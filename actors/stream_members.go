package actors

import (
	"slices"
	"time"

	"persona/wire"
)

// A user's list of rooms comes from the user's actor, which a room tells
// of a membership after the member event is committed. In a cluster that
// notice and the stream's news travel apart, and may come from different
// nodes: a /sync could see the member event's position visible before the
// user's actor knows the room, and its token would pass the membership
// unseen. So every member event of this server's users is news too, and a
// /sync stops its partition's position below a membership the user's list
// does not show yet (unseenMemberships); the user's actor wakes the user's
// /sync requests once it knows (stream.wakeUser).

// memberChange is one member event of a user, kept for memberChangeTTL.
type memberChange struct {
	room string
	pos  uint64
	at   time.Time
}

// memberChangeTTL is how long a member event is kept for the /sync
// requests of its user: longer than a notice takes to reach the user's
// actor, resends included.
const memberChangeTTL = time.Minute

// maxMemberChanges bounds how many users' member events are kept.
const maxMemberChanges = 1 << 16

// memberChanged records that a room notified user's actor of its
// membership at pos, a position of the room's partition, before the
// position is done; s.mu is held. A user's changes are kept in the order
// they were recorded, so the expired ones are a prefix; the map of users
// is swept at most once a memberSweepEvery.
func (s *stream) memberChanged(user, room string, pos uint64) {
	now := time.Now()
	if len(s.members) >= maxMemberChanges && now.After(s.membersSwept.Add(memberSweepEvery)) {
		s.membersSwept = now
		for u, list := range s.members {
			if now.Sub(list[len(list)-1].at) > memberChangeTTL {
				delete(s.members, u)
			}
		}
	}
	list := s.members[user]
	i := 0
	for i < len(list) && now.Sub(list[i].at) > memberChangeTTL {
		i++
	}
	if len(list)-i >= maxUserMemberChanges {
		i = len(list) - maxUserMemberChanges/2
	}
	s.members[user] = append(list[i:], memberChange{room: room, pos: pos, at: now})
}

// maxUserMemberChanges bounds the member events kept for one user; beyond
// it the older half goes (a user in thousands of rooms renamed again and
// again within the minute).
const maxUserMemberChanges = 1 << 16

// memberSweepEvery is how often, at most, the users whose member events
// all expired are forgotten once maxMemberChanges users are kept.
const memberSweepEvery = memberChangeTTL / 4

// memberNotified records that a room tells user's actor of its membership
// there at pos (a commit's notices go before its positions are done), and
// has it told to the other nodes. What they tell back of the rooms they
// own is recorded by heard, and told to no one.
func (s *stream) memberNotified(user, room string, pos uint64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broadcast != nil {
		s.news.members = append(s.news.members, &wire.MemberChange{User: user, Room: room, Position: pos})
	}
	s.memberChanged(user, room, pos)
}

// unseenMemberships lowers pos, in each partition, below the member events
// of user after since that rooms (the user's list) does not show yet.
func (s *stream) unseenMemberships(user string, rooms []*wire.RoomMembership, since SyncToken, pos SyncToken) {
	s.mu.Lock()
	list := slices.Clone(s.members[user])
	s.mu.Unlock()
	if len(list) == 0 {
		return
	}
	known := make(map[string]uint64, len(rooms))
	for _, m := range rooms {
		known[m.RoomId] = m.Stream
	}
	for _, c := range list {
		p := s.partition(c.room)
		if c.pos > since.Part(p) && c.pos <= pos.Parts[p] && known[c.room] < c.pos {
			pos.Parts[p] = c.pos - 1
		}
	}
}

// wakeUser wakes user's /sync requests, on this node and every other.
func (s *stream) wakeUser(user string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.broadcast != nil {
		s.news.wake([]string{user})
		s.news.kick()
	}
	s.wake([]string{user})
}

// CapUnseenMemberships lowers pos below the member events of user after
// since whose notices the user's actor had not taken when it listed rooms,
// so that the next /sync, from pos, has them.
func (h *Service) CapUnseenMemberships(user string, rooms []*wire.RoomMembership, since, pos SyncToken) {
	h.stream.unseenMemberships(user, rooms, since, pos)
}
