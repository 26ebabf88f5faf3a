package actors

import (
	"context"
	"fmt"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/asynkron/protoactor-go/actor"
)

// An idle actor asks its partition to stop it; the partition stops that
// actor alone, and the next message activates it again from storage.
// (Asking with Send, without a sender, once made the partition panic and
// restart, which stopped every actor of the partition, busy or not.)
func TestIdlePassivationStopsOnlyTheIdleActor(t *testing.T) {
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
	if r := ask[*Done](t, h, u, &Register{UserId: u, Displayname: "alice"}); r.Error != nil {
		t.Fatal(r.Error)
	}
	ctx := context.Background()
	r, err := h.Request(ctx, KindRoom, room, &CreateRoom{RoomId: room, Creator: u, RequestJson: []byte(`{}`)})
	if err != nil || r.(*SendReply).Error != nil {
		t.Fatalf("create: %v %v", err, r)
	}
	// alice stays busy while her room idles and passivates.
	deadline := time.Now().Add(5 * time.Second)
	for actorMetric(t, h, "persona_actor_passivations_total", KindRoom) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the room did not passivate within 5 s")
		}
		rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := h.Request(rctx, KindUser, u, &GetProfile{UserId: u})
		cancel()
		if err != nil {
			t.Fatalf("alice, busy while her room passivates: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := actorMetric(t, h, "persona_actor_activations_total", KindUser); n != 1 {
		t.Fatalf("alice's actor was activated %d times: stopped while busy", n)
	}
	r, err = h.Request(ctx, KindRoom, room, &GetState{RoomId: room, UserId: u, All: true})
	if err != nil || r.(*StateReply).Error != nil || len(r.(*StateReply).EventsJson) == 0 {
		t.Fatalf("read after passivation: %v %v", err, r)
	}
}

// An actor busy when its idle timeout fires is passivated once it is idle:
// protoactor fires a receive timeout once, so the actor must arm it again.
func TestBusyActorPassivatesOnceIdle(t *testing.T) {
	h, st := newTestHost(t, t.TempDir(), 50*time.Millisecond)
	defer st.Close()
	defer h.Stop()
	h.kinds[KindAlias] = func(string) actor.Actor { return &busyOnce{h: h} } // before any alias is activated
	if _, err := h.Request(context.Background(), KindAlias, "#busy:"+server, &Wake{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for actorMetric(t, h, "persona_actor_passivations_total", KindAlias) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("an actor busy at its first idle timeout never passivated")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// busyOnce is busy when its first idle timeout fires, idle at the next.
type busyOnce struct {
	h        *Host
	timeouts int
}

func (a *busyOnce) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(a.h.cfg.Actors.PassivateAfter)
	case *actor.ReceiveTimeout:
		a.timeouts++
		a.h.idle(ctx, a.timeouts == 1)
	case *stopWhenIdle:
		ctx.Stop(ctx.Self())
	case *Wake:
		ctx.Respond(&Done{})
	}
}

// An actor that turned busy after asking to stop, waiting on a message the
// partition now holds, asks to be routed to again: the message reaches it.
// (Once it waited for ever, and so did every request to it.)
func TestActorBusyWhenToldToStopResumes(t *testing.T) {
	h, st := newTestHost(t, t.TempDir(), 50*time.Millisecond)
	defer st.Close()
	defer h.Stop()
	h.kinds[KindAlias] = func(string) actor.Actor { return &awaitsHeld{h: h} }
	const id = "#await:" + server
	if _, err := h.Request(context.Background(), KindAlias, id, &Wake{}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond) // the actor asks to stop, then turns busy
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if _, err := h.Request(ctx, KindAlias, id, &Wake{}); err != nil {
		t.Fatalf("the message the busy actor waits on: %v", err)
	}
}

// awaitsHeld asks to stop at its first idle timeout and at once turns busy
// until its next Wake, which comes through the partition.
type awaitsHeld struct {
	h     *Host
	asked bool
	busy  bool
}

func (a *awaitsHeld) Receive(ctx actor.Context) {
	switch ctx.Message().(type) {
	case *actor.Started:
		ctx.SetReceiveTimeout(a.h.cfg.Actors.PassivateAfter)
	case *actor.ReceiveTimeout:
		if !a.asked {
			a.asked, a.busy = true, true
			a.h.idle(ctx, false)
		}
	case *stopWhenIdle:
		if a.busy {
			a.h.stayActive(ctx)
		} else {
			ctx.Stop(ctx.Self())
		}
	case *Wake:
		a.busy = false
		ctx.Respond(&Done{})
	}
}

// actorMetric reads a persona_actor* metric of kind ("" summed over kinds)
// from the host's metrics.
func actorMetric(t testing.TB, h *Host, name, kind string) int {
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
// after propagationIdle, not passivate_after: a fan-out does not keep every
// room it woke in memory.
func TestRoomWokenByPropagationPassivatesSoon(t *testing.T) {
	dir := t.TempDir()
	h, st := newTestHost(t, dir, time.Hour)
	alice := registerUser(t, h, "alice")
	room := createRoom(t, h, alice, 0)
	eventually(t, "room list", func() bool {
		return len(ask[*RoomsReply](t, h, alice, &GetRooms{UserId: alice}).Rooms) == 1
	})
	h.Stop()
	st.Close()

	h, st = newTestHost(t, dir, time.Hour) // the room is not active now
	defer st.Close()
	defer h.Stop()
	setName(t, h, alice, "Alice Again", Propagate_PROPAGATE_DEFAULT)
	eventually(t, "the rename to reach the room", func() bool {
		return ask[*PendingReply](t, h, alice, &GetPending{UserId: alice}).Behind == 0
	})
	// passivate_after is an hour: only propagationIdle can stop the room.
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
	h, st := newTestHost(t, t.TempDir(), 100*time.Millisecond)
	defer st.Close()
	var dead atomic.Int64
	sub := h.system.EventStream.Subscribe(func(msg any) {
		if d, ok := msg.(*actor.DeadLetterEvent); ok {
			dead.Add(1)
			t.Logf("dead letter: %T to %v", d.Message, d.PID)
		}
	})
	defer h.system.EventStream.Unsubscribe(sub)
	alice := registerUser(t, h, "alice")
	createRoom(t, h, alice, 1)
	eventually(t, "the user and the room passivated", func() bool {
		return actorMetric(t, h, "persona_actor_passivations_total", KindUser) >= 1 &&
			actorMetric(t, h, "persona_actor_passivations_total", KindRoom) >= 1
	})
	h.Stop()
	if n := dead.Load(); n > 0 {
		t.Fatalf("%d dead letters", n)
	}
}
