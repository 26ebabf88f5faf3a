package actors

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"persona/config"
	"persona/metrics"
	"persona/storage"
	"persona/wire"
)

// heldPath is a storage.CommitPath that applies each record in the order
// proposed, on one goroutine, but holds those that contain each of some
// byte strings until told to fail them, as a raft leader's entries are dropped
// when another takes over.
type heldPath struct {
	s       *storage.Store
	records chan heldRecord
	index   map[int]uint64

	mu   sync.Mutex
	hold [][]byte
	held []func(error)
}

type heldRecord struct {
	rng  int
	rec  []byte
	done func(error)
}

func (p *heldPath) Propose(rng int, rec []byte, done func(error)) {
	p.records <- heldRecord{rng, rec, done}
}

// apply applies the records proposed, until records is closed.
func (p *heldPath) apply() {
	for r := range p.records {
		p.mu.Lock()
		if p.hold != nil && containsAll(r.rec, p.hold) {
			p.held = append(p.held, r.done)
			p.mu.Unlock()
			continue
		}
		p.mu.Unlock()
		p.index[r.rng]++
		r.done(p.s.ApplyCommitted([]storage.Applied{{Range: r.rng, Index: p.index[r.rng], Records: [][]byte{r.rec}}}))
	}
}

func containsAll(b []byte, parts [][]byte) bool {
	for _, part := range parts {
		if !bytes.Contains(b, part) {
			return false
		}
	}
	return true
}

// holding reports how many records are held.
func (p *heldPath) holding() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.held)
}

// fail fails the held records with err and holds no more.
func (p *heldPath) fail(err error) {
	p.mu.Lock()
	held := p.held
	p.hold, p.held = nil, nil
	p.mu.Unlock()
	for _, done := range held {
		done(err)
	}
}

// TestRoomAcknowledgesOnlyDurableVersions: a room that gets a version again
// while its write of that version is under way acknowledges it only once
// the write is durable. When that write fails (its entry dropped by a
// change of leader), the room acknowledges nothing, the user's actor sends
// the version again, and the room applies it.
func TestRoomAcknowledgesOnlyDurableVersions(t *testing.T) {
	t.Parallel()
	path := &heldPath{records: make(chan heldRecord, 64), index: map[int]uint64{}}
	st, err := storage.Open(t.TempDir(), storage.Options{CommitPath: path})
	if err != nil {
		t.Fatal(err)
	}
	path.s = st
	applied := make(chan struct{})
	go func() { path.apply(); close(applied) }()
	cfg := config.Default()
	cfg.ServerName = server
	cfg.Propagation.ResendAfter = 50 * time.Millisecond // resent while the write is held
	h, err := NewWith(st, cfg, metrics.New(st), nil, Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		path.fail(errors.New("the test ended"))
		h.Stop()
		st.Close()
		close(path.records)
		<-applied
	})
	var updates atomic.Int32
	h.rt.SetNetwork(func(_, _ string, msg proto.Message, deliver func()) {
		if _, ok := msg.(*wire.ProfileUpdates); ok {
			updates.Add(1)
		}
		deliver()
	})

	alice := registerUser(t, h, "alice")
	room := ""
	for i := 0; room == "" || h.Partition(room) == h.Partition(alice); i++ { // the user's writes are not held
		room = createRoom(t, h, alice, i)
	}
	eventually(t, "the room in alice's list", func() bool {
		for _, r := range ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms {
			if r.RoomId == room {
				return true
			}
		}
		return false
	})
	path.mu.Lock()
	path.hold = [][]byte{[]byte(room), []byte("A-001")}
	path.mu.Unlock()
	sent := updates.Load()
	setName(t, h, alice, "A-001", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "the room's write of A-001 held", func() bool { return path.holding() > 0 })
	eventually(t, "A-001 sent to the room again", func() bool { return updates.Load() >= sent+2 })
	time.Sleep(100 * time.Millisecond) // an ack sent meanwhile reaches the user's actor
	path.fail(errors.New("proposal dropped"))
	deadline := time.Now().Add(5 * time.Second)
	for memberName(t, h, room, alice) != "A-001" {
		if time.Now().After(deadline) {
			p := ask[*wire.PendingReply](t, h, alice, &wire.GetPending{UserId: alice, Limit: 10})
			t.Fatalf("room: %s; pending %+v; updates %d (%d before), held %d", memberName(t, h, room, alice), p, updates.Load(), sent, path.holding())
		}
		time.Sleep(10 * time.Millisecond)
	}
}
