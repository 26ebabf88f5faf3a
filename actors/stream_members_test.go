package actors

import (
	"testing"
	"time"

	"persona/wire"
)

// TestSyncStopsBelowAnUnseenMembership: a /sync position stops below a
// member event of the user that the user's list of rooms does not show
// yet, in that room's partition alone, and no longer once the list shows
// it or the token is past it; a member event told by another node counts
// as one of this node's.
func TestSyncStopsBelowAnUnseenMembership(t *testing.T) {
	t.Parallel()
	const partitions = 4
	s, st := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p != 1 })
	defer st.Close()
	room, other := roomIn(t, 1, partitions), roomIn(t, 2, partitions)
	s.heard(&wire.StreamNews{Node: 7, Seq: 1, Parts: []*wire.PartitionStream{{Partition: 1, Visible: 50, High: 50}},
		Members: []*wire.MemberChange{{User: "@u:x", Room: room, Position: 40}}})
	pos := func() SyncToken { return SyncToken{Parts: []uint64{60, 50, 60, 60}} }
	since := SyncToken{Parts: []uint64{30, 30, 30, 30}}
	cases := []struct {
		name  string
		rooms []*wire.RoomMembership
		since SyncToken
		want  uint64
	}{
		{"not listed", []*wire.RoomMembership{{RoomId: other, Stream: 20}}, since, 39},
		{"listed before it", []*wire.RoomMembership{{RoomId: room, Stream: 10}}, since, 39},
		{"initial sync", nil, SyncToken{}, 39},
		{"listed", []*wire.RoomMembership{{RoomId: room, Stream: 40}}, since, 50},
		{"token past it", nil, SyncToken{Parts: []uint64{30, 45, 30, 30}}, 50},
	}
	for _, c := range cases {
		p := pos()
		s.unseenMemberships("@u:x", c.rooms, c.since, p)
		if p.Parts[1] != c.want || p.Parts[0] != 60 || p.Parts[2] != 60 {
			t.Errorf("%s: position %v, want %d in partition 1", c.name, p.Parts, c.want)
		}
	}
	p := pos()
	if s.unseenMemberships("@v:x", nil, since, p); p.Parts[1] != 50 {
		t.Errorf("another user's position %v", p.Parts)
	}
}

// TestHeardMemberChangesAreNotToldAgain: the member events another node
// tells of the rooms it owns are kept for this node's /sync requests, and
// told to no one: told again, two nodes that own none of the rooms would
// echo them to each other for ever.
func TestHeardMemberChangesAreNotToldAgain(t *testing.T) {
	t.Parallel()
	const partitions = 4
	s, st := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p != 1 })
	defer st.Close()
	s.broadcast = func(*wire.StreamNews) {}
	room, own := roomIn(t, 1, partitions), roomIn(t, 2, partitions)
	s.heard(&wire.StreamNews{Node: 7, Seq: 1, Parts: []*wire.PartitionStream{{Partition: 1, Visible: 50, High: 50}},
		Members: []*wire.MemberChange{{User: "@u:x", Room: room, Position: 40}}})
	s.memberNotified("@u:x", own, 7)
	m := s.collectNews()
	if len(m.Members) != 1 || m.Members[0].Room != own {
		t.Fatalf("news told %v, want this node's own member event alone", m.Members)
	}
	if got := len(s.members["@u:x"]); got != 2 {
		t.Fatalf("%d member events kept for the user, want 2", got)
	}
}

// TestMemberChangesOfOneUserStayBounded: a user in many rooms renamed
// again and again keeps at most maxUserMemberChanges member events, and
// recording one costs the same however many are kept.
func TestMemberChangesOfOneUserStayBounded(t *testing.T) {
	t.Parallel()
	s, st := newTestStream(t, t.TempDir(), 4, allLocal)
	defer st.Close()
	began := time.Now()
	for i := range 3 * maxUserMemberChanges {
		s.memberNotified("@u:x", "!r:x", uint64(i+1))
	}
	if n := len(s.members["@u:x"]); n > maxUserMemberChanges || n < maxUserMemberChanges/2 {
		t.Fatalf("%d member events kept, want at most %d", n, maxUserMemberChanges)
	}
	if took := time.Since(began); took > 20*time.Second {
		t.Fatalf("%d member events took %s to record", 3*maxUserMemberChanges, took)
	}
}
