package actors

import (
	"math/rand/v2"
	"time"

	"persona/wire"
)

// news is what the stream has to tell the other nodes about the partitions
// this node owns, and what it heard from them; stream.mu guards it.
type news struct {
	node    uint64               // this node's incarnation
	seq     uint64               // the number of the last news told
	rooms   map[string]uint64    // rooms with events since the last news, at their newest position
	users   map[string]bool      // users to wake
	members []*wire.MemberChange // member events of this server's users
	all     bool                 // wake everyone
	kickC   chan struct{}        // signalled when there is news to tell
	heard   map[uint64]uint64    // the last number heard from each other node's incarnation
	tellers []uint64             // the incarnation that last told each partition's news
}

func newNews(partitions int) news {
	return news{node: rand.Uint64() | 1, rooms: map[string]uint64{}, users: map[string]bool{},
		kickC: make(chan struct{}, 1), heard: map[uint64]uint64{}, tellers: make([]uint64, partitions)}
}

func (n *news) touched(room string, pos uint64) { n.rooms[room] = max(n.rooms[room], pos) }

func (n *news) wake(users []string) {
	if users == nil {
		n.all = true
	}
	for _, u := range users {
		n.users[u] = true
	}
}

func (n *news) kick() {
	select {
	case n.kickC <- struct{}{}:
	default:
	}
}

// tellNews tells the other nodes, until stop is closed, the news of the
// partitions this node owns: newsWindow after the first event of a burst,
// and every newsHeartbeat without any, so that a node that starts, or
// missed news, learns the positions.
func (s *stream) tellNews(stop <-chan struct{}) {
	beat := time.NewTicker(newsHeartbeat)
	defer beat.Stop()
	for {
		select {
		case <-stop:
			return
		case <-beat.C:
		case <-s.news.kickC:
			select {
			case <-stop:
				return
			case <-time.After(newsWindow):
			}
		}
		if m := s.collectNews(); m != nil {
			s.broadcast(m)
		}
	}
}

// collectNews takes the news gathered so far. Positions are read before
// the rooms are taken: every event at or below a position told was touched
// before it was done, so its room is in this news or an earlier one.
func (s *stream) collectNews() *wire.StreamNews {
	m := &wire.StreamNews{}
	for p := range s.parts {
		if !s.local(p) {
			continue
		}
		visible, high, err := s.localVisible(p)
		if err != nil {
			continue // its position stays as told before
		}
		m.Parts = append(m.Parts, &wire.PartitionStream{Partition: uint32(p), Visible: visible, High: high})
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	n := &s.news
	n.seq++
	m.Node, m.Seq, m.WakeAll = n.node, n.seq, n.all
	for r, pos := range n.rooms {
		m.Rooms, m.Positions = append(m.Rooms, r), append(m.Positions, pos)
	}
	for u := range n.users {
		m.Users = append(m.Users, u)
	}
	m.Members = n.members
	n.rooms, n.users, n.all, n.members = map[string]uint64{}, map[string]bool{}, false, nil
	return m
}

// heard takes another node's news: the rooms touched, then the positions
// (so that a /sync that sees a position finds its rooms changed), then
// wakes the users. After a gap in a node's numbers (news lost, or the
// node new), or from a partition's new owner, nothing is known of the
// partitions' rooms up to the highest positions handed out; and after a
// gap this node tells its own news soon, so that a node that started
// learns them.
func (s *stream) heard(m *wire.StreamNews) {
	s.mu.Lock()
	defer s.mu.Unlock()
	last, ok := s.news.heard[m.Node]
	gap := !ok || last+1 != m.Seq
	s.news.heard[m.Node] = m.Seq
	parts := make([]*wire.PartitionStream, 0, len(m.Parts))
	for _, ps := range m.Parts {
		if p := int(ps.Partition); p < len(s.parts) && !s.local(p) {
			parts = append(parts, ps)
			if gap || s.news.tellers[p] != m.Node {
				s.raiseFloor(p, ps.High) // news of it may have been lost, from this node or another
				s.news.tellers[p] = m.Node
			}
		}
	}
	for i, r := range m.Rooms {
		if i < len(m.Positions) && !s.local(s.partition(r)) {
			s.touchedLocked(r, m.Positions[i])
		}
	}
	for _, c := range m.Members {
		if !s.local(s.partition(c.Room)) {
			s.memberChanged(c.User, c.Room, c.Position)
		}
	}
	for _, ps := range parts {
		s.known[ps.Partition] = max(s.known[ps.Partition], ps.Visible)
	}
	if s.heardC != nil && len(parts) > 0 {
		close(s.heardC)
		s.heardC = nil
	}
	if m.WakeAll {
		s.wake(nil)
	} else {
		s.wake(m.Users)
	}
	if gap {
		s.news.kick()
	}
}
