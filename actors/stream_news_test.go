package actors

import (
	"testing"
	"time"

	"persona/host"
	"persona/wire"
)

// TestNewsCarryPositionsRoomsAndWakes: a node that owns no partition of a
// room learns from the owner's news the partition's position, that the
// room changed, and wakes the users the event concerns; after news it
// missed, it knows nothing of the rooms below the owner's highest
// position, and a second owner's news do not lower a position.
func TestNewsCarryPositionsRoomsAndWakes(t *testing.T) {
	t.Parallel()
	const partitions = 4
	owner, st1 := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p%2 == 0 })
	defer st1.Close()
	other, st2 := newTestStream(t, t.TempDir(), partitions, func(p int) bool { return p%2 == 1 })
	defer st2.Close()
	var told []*wire.StreamNews
	owner.broadcast = func(m *wire.StreamNews) { told = append(told, m) }

	room := roomIn(t, 0, partitions)
	if !other.changedSince(room, 1<<40) {
		t.Fatal("before any news a room reads unchanged")
	}
	pos0 := takeSoon(t, owner, 0)
	owner.touched(room, pos0)
	owner.done(0, []uint64{pos0}, nil)
	other.heard(owner.collectNews()) // the first news: a gap, positions only
	before, err := other.visible()
	if err != nil {
		t.Fatal(err)
	}
	if before[0] != pos0 || !other.changedSince(room, pos0-1) || other.changedSince(room, pos0) {
		t.Fatalf("after the first news: position %d, want %d; changed since %d: %v", before[0], pos0, pos0-1, other.changedSince(room, pos0-1))
	}
	wake, cancel := other.subscribe("@u:x")
	defer cancel()
	pos := takeSoon(t, owner, 0)
	owner.touched(room, pos)
	owner.done(0, []uint64{pos}, []string{"@u:x"})
	select {
	case <-owner.news.kickC:
	default:
		t.Fatal("an event does not kick the news")
	}
	other.heard(owner.collectNews())
	select {
	case <-wake:
	case <-time.After(time.Second):
		t.Fatal("the news did not wake the user")
	}
	after, err := other.visible()
	if err != nil {
		t.Fatal(err)
	}
	if after[0] != pos || !other.changedSince(room, before[0]) || other.changedSince(room, pos) {
		t.Fatalf("position %d, want %d; changed since %d: %v", after[0], pos, before[0], other.changedSince(room, before[0]))
	}

	// Missed news: the room touched in them is unknown, not unchanged.
	pos2 := takeSoon(t, owner, 0)
	owner.touched(room, pos2)
	owner.done(0, []uint64{pos2}, nil)
	_ = owner.collectNews() // lost
	m := owner.collectNews()
	other.heard(m)
	if !other.changedSince(room, pos) {
		t.Fatal("after a gap in the news, a room touched in the missed news reads unchanged")
	}
	m.Parts[0].Visible = 1 // an older position told later
	m.Seq++
	other.heard(m)
	if v, _ := other.visible(); v[0] < pos2 {
		t.Fatalf("position went back to %d", v[0])
	}
}

// roomIn returns a room id of partition p.
func roomIn(t *testing.T, p, partitions int) string {
	t.Helper()
	for i := 0; ; i++ {
		if id := "!r" + string(rune('a'+i%26)) + string(rune('a'+i/26%26)) + ":x"; host.PartitionOf(id, partitions) == p {
			return id
		}
	}
}

// TestSyncTokenRoundTrips: a token reads back as written, s<N> reads as N
// in every partition, and a token of another partition count is refused.
func TestSyncTokenRoundTrips(t *testing.T) {
	t.Parallel()
	for _, tok := range []SyncToken{
		{Parts: []uint64{5, 5, 5}, Presence: 1},
		{Parts: []uint64{1 << 40, 3, 0}, Presence: 1 << 50},
		{Parts: []uint64{0}},
	} {
		got, err := ParseSyncToken(tok.String(), len(tok.Parts))
		if err != nil || got.Presence != tok.Presence || len(got.Parts) != len(tok.Parts) {
			t.Fatalf("%q: %+v, %v", tok.String(), got, err)
		}
		for p := range got.Parts {
			if got.Parts[p] != tok.Parts[p] {
				t.Fatalf("%q: %+v, want %+v", tok.String(), got, tok)
			}
		}
	}
	if got, err := ParseSyncToken("s42", 3); err != nil || got.Part(2) != 42 || got.Presence != 42 {
		t.Fatalf("s42: %+v, %v", got, err)
	}
	if got, err := ParseSyncToken("", 3); err != nil || !got.IsZero() {
		t.Fatalf("empty: %+v, %v", got, err)
	}
	for _, bad := range []string{"x1", "s", "t1_2_3", "t1_2_3.4.5.6", "tz_!_..", "t1_2_..zzzzzzzzzzzzzzz"} {
		if _, err := ParseSyncToken(bad, 3); err == nil {
			t.Errorf("%q read as a token", bad)
		}
	}
}
