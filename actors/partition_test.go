package actors

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"persona/config"
	"persona/wire"
)

// An idle actor asks its partition to stop it; the partition stops that
// actor alone (another of its actors, busy meanwhile, stays active: it is
// activated once), and the next message activates the stopped one again
// from storage.
func TestIdlePassivationStopsOnlyTheIdleActor(t *testing.T) {
	// Not parallel: alice must not idle for 100 ms between two requests,
	// which a loaded machine does not promise.
	h, st := newTestHost(t, t.TempDir(), 100*time.Millisecond)
	defer st.Close()
	defer h.Stop()
	const u = "@alice:" + server
	room := ""
	for i := 0; room == ""; i++ { // a room in alice's partition
		if id := fmt.Sprintf("!r%d:%s", i, server); h.Partition(id) == h.Partition(u) {
			room = id
		}
	}
	if r := ask[*wire.Done](t, h, u, &wire.Register{UserId: u, Displayname: "alice"}); r.Error != nil {
		t.Fatal(r.Error)
	}
	ctx := context.Background()
	r, err := h.Request(ctx, KindRoom, room, &wire.CreateRoom{RoomId: room, Creator: u, RequestJson: []byte(`{}`)})
	if err != nil || r.(*wire.SendReply).Error != nil {
		t.Fatalf("create: %v %v", err, r)
	}
	// alice stays busy while her room idles and passivates.
	deadline := time.Now().Add(5 * time.Second)
	for actorMetric(t, h, "persona_actor_passivations_total", KindRoom) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the room did not passivate within 5 s")
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.Request(rctx, KindUser, u, &wire.GetProfile{UserId: u})
		cancel()
		if err != nil {
			t.Fatalf("alice, busy while her room passivates: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := actorMetric(t, h, "persona_actor_activations_total", KindUser); n != 1 {
		t.Fatalf("alice's actor was activated %d times: stopped while busy", n)
	}
	r, err = h.Request(ctx, KindRoom, room, &wire.GetState{RoomId: room, UserId: u, All: true})
	if err != nil || r.(*wire.StateReply).Error != nil || len(r.(*wire.StateReply).EventsJson) == 0 {
		t.Fatalf("read after passivation: %v %v", err, r)
	}
}

// actorMetric reads a persona_actor* metric of kind ("" summed over kinds)
// from the host's metrics.
func actorMetric(t testing.TB, h *Service, name, kind string) int {
	rec := httptest.NewRecorder()
	h.metrics.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	n := 0
	for line := range strings.Lines(rec.Body.String()) {
		rest, ok := strings.CutPrefix(line, name+`{kind="`)
		if !ok {
			continue
		}
		k, v, _ := strings.Cut(rest, `"} `)
		if kind != "" && k != kind {
			continue
		}
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil {
			t.Errorf("parse %q: %v", line, err) // Errorf: callers sample from any goroutine
		}
		n += int(f)
	}
	return n
}

// A room that only applied propagation since it was activated passivates
// after Options.PropagationIdle, not passivate_after: a fan-out does not keep every
// room it woke in memory.
func TestRoomWokenByPropagationPassivatesSoon(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Hour)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 0)
	eventually(t, "room list", func() bool {
		return len(ask[*wire.RoomsReply](t, h, alice, &wire.GetRooms{UserId: alice}).Rooms) == 1
	})
	h.Stop()
	st.Close()

	cfg := config.Default()
	cfg.Actors.PassivateAfter = time.Hour
	h, st = newHostOpts(t, dir, cfg, Options{PropagationIdle: 500 * time.Millisecond}) // the room is not active now
	defer st.Close()
	defer h.Stop()
	setName(t, h, alice, "Alice Again", wire.Propagate_PROPAGATE_DEFAULT)
	eventually(t, "the rename to reach the room", func() bool {
		return ask[*wire.PendingReply](t, h, alice, &wire.GetPending{UserId: alice}).Behind == 0
	})
	// passivate_after is an hour: only PropagationIdle can stop the room.
	eventually(t, "the room to passivate", func() bool {
		return actorMetric(t, h, "persona_actor_passivations_total", KindRoom) == 1
	})
	if got := memberName(t, h, room, alice); got != "Alice Again" {
		t.Fatalf("the room, read back from storage, shows %q", got)
	}
}

// TestPassivationLeavesNoDeadLetters: an idle user and an idle room stop
// once each; nothing is sent to them after they are gone.
func TestPassivationLeavesNoDeadLetters(t *testing.T) {
	// Not parallel: its 100 ms idle timeout, as in
	// TestProfileWritesSurvivePassivationAndRestart.
	h, st := newTestHost(t, t.TempDir(), 100*time.Millisecond)
	defer st.Close()
	alice := registerUser(t, h, "alice")
	createRoom(t, h, alice, 1)
	eventually(t, "the user and the room passivated", func() bool {
		return actorMetric(t, h, "persona_actor_passivations_total", KindUser) >= 1 &&
			actorMetric(t, h, "persona_actor_passivations_total", KindRoom) >= 1
	})
	h.Stop()
	if n := h.rt.DeadLetters(); n > 0 {
		t.Fatalf("%d dead letters", n)
	}
}
